"""The Kubernetes deployment (k8s/): every overlay renders with kustomize, every object
validates (KubeRay kinds against the CRDs in ../shared/k8s-crds, core kinds against the
Kubernetes schemas), and the strings Kubernetes cannot check — serveConfigV2,
runtimeEnvYAML, entrypoints — point at real code, real config files, the real Qdrant
Service and the same Secret the Qdrant server reads."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from serve.app import AppArgs
from synthray.config import TrainConfig, from_dict, load_yaml
from tests.deploy import manifests as m

REPO = m.REPO
OVERLAYS = ["cpu-dev", "gpu"]
IMAGE_ROOT = "/home/ray/synthray"  # where the Dockerfile puts the repository in the image
QDRANT_KEY_ENV = "QDRANT__SERVICE__API_KEY"


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, m.render(REPO / "k8s" / "overlays" / request.param)


def _repo_path(image_path: str) -> Path:
    assert image_path.startswith(IMAGE_ROOT + "/"), f"{image_path} is not inside the image's {IMAGE_ROOT}"
    return REPO / image_path[len(IMAGE_ROOT) + 1 :]


def _entrypoint(job: dict) -> tuple[Path, Path, list[str]]:
    """(script, config file, argv) of a RayJob entrypoint ``python <script> --config <file>``."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[2] == "--config", argv
    return _repo_path(argv[1]), _repo_path(argv[3]), argv


def _serve_config(objs: list[dict]) -> dict:
    return yaml.safe_load(m.one(objs, "RayService", "synthray")["spec"]["serveConfigV2"])


def _qdrant_url_target(objs: list[dict], url: str) -> dict:
    """The container a Qdrant URL reaches: Service by host, port by number, pods by selector."""
    parsed = urlparse(url)
    assert parsed.scheme == "http", url
    service = m.one(objs, "Service", parsed.hostname)
    port = next(p for p in service["spec"]["ports"] if p["port"] == parsed.port)
    sts = [
        s
        for s in m.by_kind(objs, "StatefulSet")
        if service["spec"]["selector"].items() <= s["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(sts) == 1, f"Service {parsed.hostname} selects {len(sts)} StatefulSets"
    container = sts[0]["spec"]["template"]["spec"]["containers"][0]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}, port
    assert port["targetPort"] == "http"  # qdrant-client speaks REST to this port
    return container


def test_every_rendered_object_validates(rendered):
    overlay, objs = rendered
    kinds = {o["kind"] for o in objs}
    assert {"RayJob", "RayService", "StatefulSet", "Service", "PersistentVolumeClaim", "Namespace"} <= kinds
    assert len(m.by_kind(objs, "RayJob")) == 2
    for obj in objs:
        assert m.errors(obj) == [], f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
    # The KubeRay kinds are the v1 API, and the cluster runs the Ray this package pins.
    import ray

    for obj in m.by_kind(objs, "RayJob") + m.by_kind(objs, "RayService"):
        assert obj["apiVersion"] == "ray.io/v1"
        assert m.ray_cluster_spec(obj)["rayVersion"] == ray.__version__
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    assert namespaces == {m.by_kind(objs, "Namespace")[0]["metadata"]["name"]}


def test_the_validators_reject_what_an_api_server_would():
    objs = m.render(REPO / "k8s" / "overlays" / "cpu-dev")
    job = m.one(objs, "RayJob", "synthray-train")
    typo = copy.deepcopy(job)
    typo["spec"]["shutdownAfterJobFinish"] = typo["spec"].pop("shutdownAfterJobFinishes")
    assert any("shutdownAfterJobFinish" in e for e in m.errors(typo))
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert m.errors(wrong_type)
    no_group = copy.deepcopy(job)
    del no_group["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert any("groupName" in e for e in m.errors(no_group))
    deep_typo = copy.deepcopy(job)  # inside the embedded pod template
    deep_typo["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "x"
    assert m.errors(deep_typo)
    cel = copy.deepcopy(job)
    cel["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}}  # onFailure missing
    assert any("deletionStrategy" in e for e in m.errors(cel))
    sts = copy.deepcopy(m.one(objs, "StatefulSet", "qdrant"))
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [6333]
    assert m.errors(sts)
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = "http"
    sts["spec"]["replica"] = 1
    assert m.errors(sts)


def test_job_entrypoints_and_runtime_envs_point_at_real_files(rendered):
    from ray.runtime_env import RuntimeEnv

    from synthray.cli import build_parser
    from synthray.index.build import index_configs

    overlay, objs = rendered
    jobs = {j["metadata"]["name"]: j for j in m.by_kind(objs, "RayJob")}
    assert set(jobs) == {"synthray-train", "synthray-index"}
    for name, job in jobs.items():
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        env = yaml.safe_load(spec["runtimeEnvYAML"])
        RuntimeEnv(**env)  # Ray's own validation of the runtime env fields
        script, config_file, argv = _entrypoint(job)
        assert script.is_file() and config_file.is_file(), argv
        # The job script is the CLI: its parser accepts exactly these arguments.
        command = {"train_supcon.py": "train", "build_index.py": "index"}[script.name]
        build_parser().parse_args([command, *argv[2:]])
        assert (name == "synthray-train") == (command == "train")
        assert config_file.stem.endswith("gpu" if overlay == "gpu" else "cpu"), config_file

    train_cfg = from_dict(TrainConfig, load_yaml(_entrypoint(jobs["synthray-train"])[1]))
    index_cfg, _ = index_configs(load_yaml(_entrypoint(jobs["synthray-index"])[1]))
    run = f"{train_cfg.run_dir}/{train_cfg.run_name}"
    assert index_cfg.checkpoint == run  # the index embeds with what training wrote
    # The app serves the collection the index build activates, with the checkpoint it recorded.
    assert index_cfg.activate and "checkpoint" not in _serve_config(objs)["applications"][0]["args"]
    if overlay == "gpu":
        assert train_cfg.use_gpu
        gpus = sum(
            g["replicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
            for g in m.ray_cluster_spec(jobs["synthray-train"])["workerGroupSpecs"]
        )
        assert train_cfg.num_workers <= gpus, "more Train workers than GPUs: the job would wait forever"
    else:
        assert not train_cfg.use_gpu


def test_serve_config_deploys_the_real_app_with_autoscaling(rendered, monkeypatch):
    from ray.serve import Application

    import serve.app

    overlay, objs = rendered
    config = _serve_config(objs)
    [app] = config["applications"]
    assert app["import_path"] == "serve.app:build_app"
    assert "checkpoint" not in app["args"]  # pinned from the active collection when the app is built
    # build_app pins the checkpoint by asking the Qdrant server which collection is active; no
    # server runs here, so that one lookup is stubbed (tests/serve covers it on a real store).
    monkeypatch.setattr(serve.app.AppArgs, "pinned", lambda self: ("/data/runs/x/checkpoint", "v1", "synthray-v1"))
    built = serve.app.build_app(app["args"])
    assert isinstance(built, Application)
    deployments = m.serve_deployments(config)["synthray"]
    assert set(deployments) == {d["name"] for d in app["deployments"]}  # every deployment is configured
    assert set(deployments) == {"Ingress", "Encoder", "IndexReader", "IndexWriter"}
    for name, info in deployments.items():
        scaling = info.deployment_config.autoscaling_config
        if name == "IndexWriter":  # one writer: one lock over every enrollment and deletion
            assert scaling is None and info.deployment_config.num_replicas == 1
            continue
        assert scaling is not None and scaling.max_replicas > scaling.min_replicas >= 1, name
    encoder = deployments["Encoder"].replica_config.ray_actor_options
    assert (encoder.get("num_gpus", 0) >= 1) == (overlay == "gpu")
    if overlay == "gpu":  # GPU replicas need a worker group with GPUs, which the autoscaler grows
        groups = m.ray_cluster_spec(m.one(objs, "RayService", "synthray"))["workerGroupSpecs"]
        assert any(
            "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
            and g["maxReplicas"] > g["minReplicas"]
            for g in groups
        )
    assert m.ray_cluster_spec(m.one(objs, "RayService", "synthray"))["enableInTreeAutoscaling"] is True


def test_qdrant_url_and_api_key_agree_with_the_qdrant_objects(rendered):
    from synthray.index.build import index_configs
    from synthray.index.config import StoreConfig

    overlay, objs = rendered
    serve_args = AppArgs.model_validate(_serve_config(objs)["applications"][0]["args"])
    index_cfg, _ = index_configs(load_yaml(_entrypoint(m.one(objs, "RayJob", "synthray-index"))[1]))
    assert serve_args.store.url == index_cfg.store.url
    qdrant = _qdrant_url_target(objs, index_cfg.store.url)
    assert qdrant["image"].startswith("qdrant/qdrant:")
    secret = m.env_secret_refs(qdrant)[QDRANT_KEY_ENV]

    # Every Ray pod that can reach the store has the key under the name the app reads.
    key_envs = {index_cfg.store.api_key_env, serve_args.store.api_key_env, StoreConfig().api_key_env}
    assert len(key_envs) == 1
    [key_env] = key_envs
    for obj in m.by_kind(objs, "RayJob") + m.by_kind(objs, "RayService"):
        for group, pod in m.ray_pod_specs(obj):
            refs = m.env_secret_refs(pod["containers"][0])
            assert refs.get(key_env) == secret, f"{obj['metadata']['name']}/{group}"
            if obj["kind"] == "RayService":  # writes need the app's own key, from a Secret
                assert refs.get(serve_args.api_key_env, (None, None))[0] == secret[0]

    secrets = {s["metadata"]["name"]: s for s in m.by_kind(objs, "Secret")}
    if overlay == "cpu-dev":  # a development Secret is generated; it holds both keys
        assert {secret[1], "api-key"} <= set(secrets[secret[0]]["data"])
    else:  # made outside git: the overlay's instructions create exactly this Secret and keys
        assert not secrets
        text = (REPO / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
        assert f"create secret generic {secret[0]}" in text and f"--from-literal={secret[1]}=" in text
        assert "--from-literal=api-key=" in text


def test_shared_storage_holds_every_path_the_jobs_and_app_use(rendered):
    from synthray.index.build import index_configs

    overlay, objs = rendered
    claims = {c["metadata"]["name"]: c for c in m.by_kind(objs, "PersistentVolumeClaim")}
    train_cfg = from_dict(TrainConfig, load_yaml(_entrypoint(m.one(objs, "RayJob", "synthray-train"))[1]))
    index_cfg, _ = index_configs(load_yaml(_entrypoint(m.one(objs, "RayJob", "synthray-index"))[1]))
    serve_args = AppArgs.model_validate(_serve_config(objs)["applications"][0]["args"])
    # The enrollment archive: written by the app's IndexWriter, read by every index build.
    assert serve_args.store.enrolled_dir == index_cfg.store.enrolled_dir
    paths = [
        train_cfg.shards,
        train_cfg.run_dir,
        index_cfg.shards,
        index_cfg.checkpoint,
        index_cfg.store.enrolled_dir + "/images",
    ]
    for obj in m.by_kind(objs, "RayJob") + m.by_kind(objs, "RayService"):
        for group, pod in m.ray_pod_specs(obj):
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {mt["mountPath"]: volumes[mt["name"]] for mt in pod["containers"][0]["volumeMounts"]}
            for path in paths:
                mount = next((p for p in mounts if path.startswith(p.rstrip("/") + "/")), None)
                assert mount is not None, f"{obj['metadata']['name']}/{group} does not mount {path}"
                claim = mounts[mount]["persistentVolumeClaim"]["claimName"]
                assert claim in claims, f"{claim} is not among the rendered claims"
    # Several pods on several nodes write the same volume: ReadWriteMany beyond one node.
    modes = claims["synthray-data"]["spec"]["accessModes"]
    assert modes == (["ReadWriteOnce"] if overlay == "cpu-dev" else ["ReadWriteMany"])


def test_every_container_has_resources_and_probes(rendered):
    overlay, objs = rendered
    for obj in objs:
        for label, pod in m.pod_specs(obj):
            for c in pod["containers"]:
                where = f"{overlay} {obj['kind']}/{obj['metadata']['name']} {label}/{c['name']}"
                assert c["resources"]["requests"] and c["resources"]["limits"], where
                for extended in ("nvidia.com/gpu",):
                    assert c["resources"]["requests"].get(extended) == c["resources"]["limits"].get(extended), where
                if label not in ("submitter", "cronjob"):  # one-shot processes: nothing to probe
                    assert "readinessProbe" in c and "livenessProbe" in c, where
                assert c["image"].startswith("qdrant/") or c["image"].endswith("-gpu" if overlay == "gpu" else "-cpu")


def test_deploy_script_stages_select_rendered_objects():
    text = (REPO / "k8s" / "deploy.sh").read_text()
    stages = set(re.search(r"^stages=\(([^)]*)\)", text, re.M).group(1).split())
    assert stages == {"infra", "train", "index", "serve"}
    assert 'kubectl apply -k "$dir" -l "app.kubernetes.io/component=$1"' in text
    for overlay in OVERLAYS:
        objs = m.render(REPO / "k8s" / "overlays" / overlay)
        labelled = {o["metadata"].get("labels", {}).get("app.kubernetes.io/component") for o in objs}
        assert None not in labelled, f"{overlay}: an object no stage applies"
        assert labelled == stages


def test_a_cronjob_snapshots_the_active_collection_to_qdrants_snapshot_volume(rendered):
    from synthray.cli import build_parser
    from synthray.index.build import index_configs

    overlay, objs = rendered
    [cron] = m.by_kind(objs, "CronJob")
    [(_, pod)] = m.pod_specs(cron)
    [container] = pod["containers"]
    argv = container["command"]
    assert argv[:3] == ["synthray", "index", "snapshot"]
    args = build_parser().parse_args(argv[1:])  # the command parses as synthray's own CLI
    assert args.action == "snapshot" and args.keep >= 1
    index_cfg, _ = index_configs(load_yaml(_repo_path(args.config)))
    assert index_cfg.store.url  # a server: it snapshots while serving
    assert _qdrant_url_target(objs, index_cfg.store.url)["image"].startswith("qdrant/qdrant:")
    assert m.env_secret_refs(container)[index_cfg.store.api_key_env][1] == "qdrant-api-key"
    # Qdrant writes snapshots to /qdrant/snapshots: a persistent claim, not an emptyDir.
    qdrant = m.one(objs, "StatefulSet", "qdrant")
    mounts = {mt["mountPath"]: mt["name"] for mt in qdrant["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in qdrant["spec"]["volumeClaimTemplates"]}
    assert mounts["/qdrant/snapshots"] in claims


def test_every_ray_cluster_runs_with_token_auth_from_the_secret(rendered):
    overlay, objs = rendered
    secrets = {s["metadata"]["name"]: s for s in m.by_kind(objs, "Secret")}
    text = (REPO / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
    for obj in m.by_kind(objs, "RayJob") + m.by_kind(objs, "RayService"):
        auth = m.ray_cluster_spec(obj)["authOptions"]
        assert auth["mode"] == "token", obj["metadata"]["name"]
        name = auth["secretName"]
        # KubeRay reads the token from the Secret's auth_token key.
        if overlay == "cpu-dev":
            assert "auth_token" in secrets[name]["data"]
        else:
            assert f"create secret generic {name}" in text and "--from-literal=auth_token=" in text
        if obj["kind"] == "RayJob":  # the submitter runs `ray job submit` against that cluster
            [container] = obj["spec"]["submitterPodTemplate"]["spec"]["containers"]
            env = {v["name"]: v for v in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert m.env_secret_refs(container)["RAY_AUTH_TOKEN"] == (name, "auth_token")


def test_alert_rules_watch_metrics_the_service_exports():
    """k8s/monitoring's PrometheusRule (no CRD here to validate against: its shape is checked by
    hand) alerts only on series the ingress's /metrics really serves."""
    from serve.metrics import ServiceMetrics

    objs = m.render(REPO / "k8s" / "monitoring")
    rule = m.one(objs, "PrometheusRule", "synthray-discovery")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    exported = {f.name for f in ServiceMetrics().registry.collect()}
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {"SynthrayUnknownRateHigh", "SynthrayInboxDropping"}
    for a in alerts:
        assert set(a) == {"alert", "expr", "for", "labels", "annotations"}, a
        assert a["labels"]["severity"] in ("info", "warning", "critical")
        assert a["annotations"]["summary"] and a["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", a["for"]), a["for"]
        used = set(re.findall(r"\b(synthray_[a-z_]+)\b", a["expr"]))
        assert used and used <= exported, (a["alert"], used - exported)
