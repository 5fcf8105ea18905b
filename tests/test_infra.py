"""Deployment files validate: docker-compose (one host), Kubernetes manifests (cluster), Kafka topic specs.

Docker and a cluster cannot run here, so the files are parsed and cross-checked against each other and the
code: services/objects that reference each other exist, every FUELCARD_* variable is a real setting, secrets
stay in Secrets, scaling limits respect the topics' partition counts, and the commands the containers run
exist (CLI commands, the Flink job's arguments). Generated files (topic specs) must be up to date.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from fuelcard.settings import Settings
from infra import kafka_topics

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
SETTINGS_ENV = {f"FUELCARD_{name.upper()}" for name in Settings.model_fields}
SECRET_SETTINGS = {f"FUELCARD_{n.upper()}" for n, f in Settings.model_fields.items()
                   if "SecretStr" in str(f.annotation)} | {"FUELCARD_WAREHOUSE_URL"}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}


# ---------------------------------------------------------------- helpers


def _compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["_file"] = path.name
                docs.append(doc)
    return docs


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return _pod_spec(doc)["containers"]


def _check_cli(argv: list[str]) -> None:
    """The command exists: ``fuelcard <group> <command>`` / ``fuelcard <command>`` in the registered CLI."""
    from fuelcard.cli import app

    assert argv[0] == "fuelcard", argv
    top = {c.name or c.callback.__name__ for c in app.registered_commands}
    groups = {g.name: g.typer_instance for g in app.registered_groups}
    if argv[1] in groups:
        sub = groups[argv[1]]
        names = {c.name or c.callback.__name__ for c in sub.registered_commands}
        assert argv[2] in names, f"fuelcard {argv[1]} has no command {argv[2]!r} ({sorted(names)})"
    else:
        assert argv[1] in top, f"fuelcard has no command {argv[1]!r}"


def _check_flink_args(argv: list[str]) -> None:
    from streams.flink.job import build_parser

    assert "--pyModule" in argv
    module = argv[argv.index("--pyModule") + 1]
    assert module == "streams.flink.job"
    job_args = argv[argv.index("--pyFiles") + 2:]
    build_parser().parse_args(job_args)  # raises SystemExit on an unknown option


# ---------------------------------------------------------------- Kafka topics


def test_topic_specs_are_generated_from_the_stream_definitions() -> None:
    assert (INFRA / "kafka" / "topics.yaml").read_text() == kafka_topics.render(), \
        "stale: run .venv/bin/python infra/kafka_topics.py"
    from streams.topics import ALL_TOPICS, TABLES, all_topic_specs

    doc = yaml.safe_load((INFRA / "kafka" / "topics.yaml").read_text())
    by_name = {t["name"]: t for t in doc["topics"]}
    for name, partitions, config in all_topic_specs(doc["prefix"], doc["app_id"]):
        assert by_name[name]["partitions"] == partitions
        for k, v in config.items():
            assert by_name[name]["config"][k] == v
    for t in ALL_TOPICS:
        assert int(by_name[t.name(doc["prefix"])]["config"]["retention.ms"]) == t.retention_ms
    for table, parts in TABLES.items():
        assert by_name[f"{doc['app_id']}-{table}-changelog"]["config"]["cleanup.policy"] == "compact"
        assert by_name[f"{doc['app_id']}-{table}-changelog"]["partitions"] == parts
    for t in doc["topics"]:
        assert t["replication_factor"] >= 3 and int(t["config"]["min.insync.replicas"]) < t["replication_factor"]
    assert "fuelcard.card-window-features" in by_name  # the Flink job's outputs are provisioned too


# ---------------------------------------------------------------- docker-compose


def test_compose_services_are_complete_and_cross_referenced() -> None:
    compose = _compose()
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    assert {"kafka", "clickhouse", "worker", "api", "flink-jobmanager", "flink-taskmanager", "flink-job",
            "topics", "migrate"} <= set(services)
    host_ports: list[str] = []
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            assert (ROOT / "infra" / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve().is_file()
        deps = svc.get("depends_on") or {}
        for dep in deps:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0]
            if not src.startswith((".", "/")):
                assert src in volumes, f"{name} mounts undeclared volume {src}"
        host_ports += [str(p).split(":")[0] for p in svc.get("ports") or []]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    # one-shot jobs run to completion before the long-running services that need them
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_settings_and_secrets() -> None:
    compose = _compose()
    text = (INFRA / "docker-compose.yml").read_text()
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            for key, value in env.items():
                if key.startswith("FUELCARD_"):
                    assert key in SETTINGS_ENV, f"{name}: {key} is not a setting of fuelcard/settings.py"
                    assert key not in SECRET_SETTINGS or "${" in str(value), f"{name}: literal secret {key}"
        if svc.get("image") == "fuelcard:latest":
            assert svc["environment"]["FUELCARD_ENV"] == "production"
            assert svc["environment"]["FUELCARD_EMBEDDED_BROKER"] == "false"
    from fuelcard.settings import DEV_ADMIN_KEY, DEV_API_KEY_SALT, DEV_SM4_KEY, DEV_TOKEN_KEY

    for dev in (DEV_ADMIN_KEY, DEV_API_KEY_SALT, DEV_SM4_KEY, DEV_TOKEN_KEY):
        assert dev not in text
    example = (INFRA / "compose.env.example").read_text()
    keys = {ln.split("=", 1)[0] for ln in example.splitlines() if "=" in ln and not ln.startswith("#")}
    assert {"FUELCARD_TOKEN_KEY", "FUELCARD_SM4_KEY", "FUELCARD_API_KEY_SALT", "FUELCARD_ADMIN_API_KEY"} <= keys
    assert {k for k in keys if k.startswith("FUELCARD_")} <= SETTINGS_ENV
    assert ".env" in (INFRA / ".gitignore").read_text().split()


def test_compose_commands_exist_and_workers_fit_the_partitions() -> None:
    from streams.topics import HOT_PARTITIONS

    services = _compose()["services"]
    for name in ("topics", "migrate", "worker", "api"):
        _check_cli(services[name]["command"])
    _check_flink_args(services["flink-job"]["command"])
    assert services["worker"]["deploy"]["replicas"] <= HOT_PARTITIONS
    # the Flink cluster's checkpoints survive restarts and the job's image ships the connector jars
    dockerfile = (INFRA / "docker" / "Dockerfile.flink").read_text()
    assert "flink-connector-kafka.jar" in dockerfile and "kafka-clients.jar" in dockerfile
    assert "apache-flink" in dockerfile or ".[flink]" in dockerfile


# ---------------------------------------------------------------- Kubernetes


def test_k8s_objects_are_well_formed() -> None:
    docs = _k8s_docs()
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "Job"} <= kinds
    seen = set()
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), d.get("_file")
        key = (d["kind"], d["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "fuelcard", key
        if d["kind"] in {"Deployment", "StatefulSet"}:
            sel = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert sel.items() <= labels.items(), f"{key}: selector does not match the pod labels"
        if d["kind"] in WORKLOADS:
            for c in _containers(d):
                assert c.get("image"), key
                res = c.get("resources") or {}
                assert res.get("requests") and res.get("limits"), f"{key}/{c['name']}: requests and limits"
        if d["kind"] == "StatefulSet":
            services = {s["metadata"]["name"] for s in docs if s["kind"] == "Service"}
            assert d["spec"]["serviceName"] in services, key


def test_k8s_cross_references() -> None:
    docs = _k8s_docs()
    kustom = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    generated = {g["name"] for g in kustom.get("configMapGenerator", [])}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in WORKLOADS}
    for res in kustom["resources"]:
        assert (K8S / res).is_file(), res
    assert {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} == set(kustom["resources"])
    for gen in kustom.get("configMapGenerator", []):
        for f in gen["files"]:
            assert (K8S / f.split("=", 1)[1]).resolve().is_file(), f
    for (_kind, name), d in workloads.items():
        pod = _pod_spec(d)
        for c in pod["containers"]:
            for ref in c.get("envFrom") or []:
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configmaps, (name, ref)
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] in secrets, (name, ref)
            for env in c.get("env") or []:
                skr = (env.get("valueFrom") or {}).get("secretKeyRef")
                if skr:
                    assert skr["key"] in secrets[skr["name"]]["stringData"], (name, skr)
            mounts = {m["name"] for m in c.get("volumeMounts") or []}
            declared = {v["name"] for v in pod.get("volumes") or []}
            declared |= {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates") or []}
            assert mounts <= declared, (name, mounts - declared)
        for v in pod.get("volumes") or []:
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps or v["configMap"]["name"] in generated, (name, v)
    labels = [d["spec"]["template"]["metadata"]["labels"] for d in workloads.values()]
    for svc in (d for d in docs if d["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= lab.items() for lab in labels), f"Service {svc['metadata']['name']} selects nothing"
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in workloads
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_k8s_settings_secrets_and_scaling() -> None:
    from streams.topics import HOT_PARTITIONS

    docs = _k8s_docs()
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fuelcard-config")
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "fuelcard-secrets")
    for key in config["data"]:
        assert key in SETTINGS_ENV, f"ConfigMap key {key} is not a setting"
        assert key not in SECRET_SETTINGS, f"{key} is a secret: it belongs in the Secret"
    # the ConfigMap plus the Secret's keys make a valid production Settings (the validator refuses dev secrets)
    merged = {**config["data"], **{k: v for k, v in secret["stringData"].items() if k.startswith("FUELCARD_")}}
    settings = Settings.model_validate({k.removeprefix("FUELCARD_").lower(): v for k, v in merged.items()})
    assert settings.env == "production" and not settings.embedded_broker
    for key in secret["stringData"]:
        if key.startswith("FUELCARD_"):
            assert key in SETTINGS_ENV, key
    assert SECRET_SETTINGS - {"FUELCARD_KAFKA_SASL_PASSWORD"} <= set(secret["stringData"])
    assert all("REPLACE_ME" in str(v) for v in secret["stringData"].values()), "no real secret in git"
    hpas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert hpas["fuelcard-worker"]["spec"]["maxReplicas"] <= HOT_PARTITIONS, "idle workers beyond the partitions"
    assert "fuelcard-api" in hpas
    bootstrap = config["data"]["FUELCARD_KAFKA_BOOTSTRAP"]
    kafka = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka")
    hosts = re.findall(r"(kafka-\d+)\.kafka-headless:9092", bootstrap)
    assert hosts and all(int(h.split("-")[1]) < kafka["spec"]["replicas"] for h in hosts)
    topics = yaml.safe_load((INFRA / "kafka" / "topics.yaml").read_text())["topics"]
    assert max(t["replication_factor"] for t in topics) <= kafka["spec"]["replicas"]


def test_k8s_commands_exist() -> None:
    docs = _k8s_docs()
    checked = 0
    for d in docs:
        if d["kind"] not in WORKLOADS:
            continue
        for c in _containers(d):
            cmd = c.get("command") or []
            if cmd[:1] == ["fuelcard"]:
                _check_cli(cmd)
                checked += 1
            elif cmd[:2] == ["flink", "run"]:
                _check_flink_args(cmd)
                checked += 1
            elif cmd[:2] == ["python", "-c"]:
                compile(c["args"][0], d["metadata"]["name"], "exec")
                checked += 1
    assert checked >= 4


def test_clickhouse_cluster_config_matches_the_generated_schema() -> None:
    docs = _k8s_docs()
    cfg = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "clickhouse-cluster-config")
    xml = cfg["data"]["cluster.xml"]
    cluster = re.search(r"<cluster>(\w+)</cluster>", xml).group(1)
    assert f"<{cluster}>" in xml and "<shard from_env=" in xml and "<replica from_env=" in xml
    shards = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].startswith("clickhouse-s")]
    assert xml.count("<shard>") == len(shards)
    for s in shards:
        for i in range(s["spec"]["replicas"]):
            assert f"{s['metadata']['name']}-{i}.clickhouse-headless" in xml
    schema = (INFRA / "clickhouse-cluster" / "schema.sql").read_text()
    assert "ON CLUSTER '{cluster}'" in schema and "{shard}" in schema and "{replica}" in schema


@pytest.mark.parametrize("script", ["fetch-flink-jars.sh"])
def test_scripts_are_executable_shell(script: str) -> None:
    path = INFRA / "scripts" / script
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert path.stat().st_mode & 0o111
    assert shlex.split(text.splitlines()[-1])[1:3] == ["-m", "streams.flink.jars"]


def test_k8s_command_variables_are_defined_in_env() -> None:
    """Kubernetes expands $(VAR) in command/args only from the container's ``env`` entries."""
    for d in _k8s_docs():
        if d["kind"] not in WORKLOADS:
            continue
        for c in _containers(d):
            words = " ".join((c.get("command") or []) + (c.get("args") or []))
            names = {e["name"] for e in c.get("env") or []}
            for var in re.findall(r"\$\((\w+)\)", words):
                assert var in names, f"{d['metadata']['name']}: $({var}) is not in env"
