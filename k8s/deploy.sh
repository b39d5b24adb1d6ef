#!/usr/bin/env bash
# Deploys synthray onto a Kubernetes cluster with KubeRay installed, stage by stage, each
# waiting for the one it needs: storage + Qdrant, training, the reference index, the Serve
# app. Every stage applies the same overlay, filtered by the app.kubernetes.io/component label.
#   k8s/deploy.sh cpu-dev
#   k8s/deploy.sh gpu          # create the Secret first (see k8s/overlays/gpu/kustomization.yaml)
#   k8s/deploy.sh gpu serve    # from a stage on (infra | train | index | serve)
set -euo pipefail
overlay=${1:?usage: k8s/deploy.sh cpu-dev|gpu [infra|train|index|serve]}
from=${2:-infra}
dir="$(cd "$(dirname "$0")" && pwd)/overlays/$overlay"
ns=$(kubectl kustomize "$dir" | awk '$0 == "kind: Namespace" {ns = 1} ns && /^  name: / {print $2; exit}')
stages=(infra train index serve)

apply() { kubectl apply -k "$dir" -l "app.kubernetes.io/component=$1"; }

wait_job() {  # a RayJob to SUCCEEDED; its failure stops the deployment
  local status=""
  while [[ "$status" != SUCCEEDED ]]; do
    sleep 30
    status=$(kubectl -n "$ns" get rayjob "$1" -o jsonpath='{.status.jobStatus}')
    echo "rayjob/$1: ${status:-PENDING}"
    if [[ "$status" == FAILED || "$status" == STOPPED ]]; then
      kubectl -n "$ns" describe rayjob "$1" | tail -20
      exit 1
    fi
  done
}

started=false
for stage in "${stages[@]}"; do
  [[ "$stage" == "$from" ]] && started=true
  $started || continue
  case "$stage" in
    infra) apply infra
           kubectl -n "$ns" rollout status statefulset/qdrant --timeout=10m ;;
    train) apply train
           wait_job synthray-train ;;
    index) apply index
           wait_job synthray-index ;;
    serve) apply serve
           kubectl -n "$ns" wait --for=condition=Ready rayservice/synthray --timeout=30m
           echo "serving: kubectl -n $ns port-forward svc/synthray-serve-svc 8000" ;;
  esac
done
