"""The Helm chart, rendered by the real helm binary, and what a kubelet would make of it.

There is no kubelet here, so "running a container as the chart declares it" means: take the
container's args and environment from the rendered manifest, resolve ``valueFrom``/``envFrom``
against the rendered ConfigMaps and Secrets, and write each mounted Secret to a directory that
stands for its mountPath. The operator and agent processes then run with exactly that.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.controlplane import REPO

CHART = REPO / "helm" / "shardkeeper"
KUBE_VERSION = "1.34.0"
#: The release the testbed installs by default (its RBAC is what every e2e operator runs under).
RELEASE, RELEASE_NAMESPACE = "shardkeeper", "shardkeeper-system"


def chart_version(chart: Path = CHART) -> str:
    return str(yaml.safe_load((chart / "Chart.yaml").read_text())["version"])


def helm_binary() -> Path:
    out = subprocess.run([str(REPO / "hack" / "install-helm.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def helm(*args: str, check: bool = True, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "shardkeeper-helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([str(helm_binary()), *args], check=check, capture_output=True, text=True, env=env)


@dataclass
class Rendered:
    objects: list[dict[str, Any]]

    def find(self, kind: str, name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        found = self.all(kind, name, namespace)
        assert len(found) == 1, f"expected one {kind} {name or ''} in {namespace or 'any namespace'}: {found}"
        return found[0]

    def all(self, kind: str, name: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        return [
            o
            for o in self.objects
            if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]

    def yaml(self, kinds: Iterable[str] | None = None) -> str:
        wanted = set(kinds) if kinds is not None else None
        return yaml.safe_dump_all([o for o in self.objects if wanted is None or o["kind"] in wanted])


def render(
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = RELEASE_NAMESPACE,
    chart: Path = CHART,
    include_crds: bool = False,
    workdir: Path | None = None,
) -> Rendered:
    """``helm template`` with these values; raises with helm's message if it refuses them."""
    workdir = workdir or Path(os.environ.get("TMPDIR", "/tmp"))
    values_file = workdir / f"values-{os.getpid()}-{id(values)}.yaml"
    values_file.write_text(yaml.safe_dump(values or {}))
    try:
        args = ["template", release, str(chart), "-n", namespace, "-f", str(values_file)]
        args += ["--kube-version", KUBE_VERSION]
        if include_crds:
            args.append("--include-crds")
        out = helm(*args, check=False)
    finally:
        values_file.unlink(missing_ok=True)
    if out.returncode != 0:
        raise HelmError(out.stderr.strip())
    return Rendered([o for o in yaml.safe_load_all(out.stdout) if o])


def render_with_agent(
    values: dict[str, Any] | None,
    *,
    workdir: Path,
    data_volume: str = "data",
    data_path: str = "/var/lib/sampledb",
    hook_url: str = "http://127.0.0.1:8080/hook",
    release: str = RELEASE,
    namespace: str = RELEASE_NAMESPACE,
) -> Rendered:
    """Renders a database chart that depends on shardkeeper and includes its agent sidecar named
    templates, the way a user's chart would; returns everything, the database StatefulSet included."""
    parent = workdir / "database-chart"
    shutil.rmtree(parent, ignore_errors=True)
    (parent / "templates").mkdir(parents=True)
    (parent / "charts").mkdir()
    shutil.copytree(CHART, parent / "charts" / "shardkeeper")
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "sampledb",
                "version": "0.1.0",
                "dependencies": [{"name": "shardkeeper", "version": chart_version()}],
            }
        )
    )
    args = f'(dict "values" .Values.shardkeeper "dataVolume" "{data_volume}" "dataPath" "{data_path}"'
    args += f' "hookUrl" "{hook_url}")'
    (parent / "templates" / "statefulset.yaml").write_text(
        f"""apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: sampledb
spec:
  serviceName: sampledb
  replicas: 3
  selector: {{matchLabels: {{app: sampledb}}}}
  template:
    metadata: {{labels: {{app: sampledb}}}}
    spec:
      containers:
        - name: sampledb
          image: testbed/sampledb:local
          volumeMounts: [{{name: {data_volume}, mountPath: {data_path}}}]
        {{{{- include "shardkeeper.agent.container" {args} | nindent 8 }}}}
      volumes:
        {{{{- include "shardkeeper.agent.volumes" {args} | nindent 8 }}}}
  volumeClaimTemplates:
    - metadata: {{name: {data_volume}}}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"""
    )
    return render({"shardkeeper": values or {}}, release=release, namespace=namespace, chart=parent)


class HelmError(RuntimeError):
    pass


@dataclass
class ContainerRun:
    """What a kubelet would hand a container's process: its args and environment."""

    args: list[str]
    env: dict[str, str]
    #: Variables the downward API fills in (name -> fieldPath), e.g. POD_NAME -> metadata.name.
    field_refs: dict[str, str] = field(default_factory=dict)


def container_run(
    rendered: Rendered,
    pod_spec: dict[str, Any],
    container_name: str,
    *,
    namespace: str,
    mounts_root: Path,
    host_paths: dict[str, Path] | None = None,
) -> ContainerRun:
    """Resolves the container's environment against the rendered objects in ``namespace``.

    Secret volumes are written under ``mounts_root``; other volumes must be given in ``host_paths``
    (mountPath -> directory). Environment values that point into a mount are rewritten to the
    directory that stands for it."""
    container = next(c for c in pod_spec["containers"] if c["name"] == container_name)
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    paths: dict[str, Path] = dict(host_paths or {})
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None or "secret" not in volume:
            continue
        secret = rendered.find("Secret", volume["secret"]["secretName"], namespace)
        target = mounts_root / mount["name"]
        target.mkdir(parents=True, exist_ok=True)
        items = volume["secret"].get("items") or [{"key": k, "path": k} for k in secret.get("data", {})]
        for item in items:
            (target / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
        paths[mount["mountPath"]] = target

    def data_of(kind: str, name: str, optional: bool) -> dict[str, str]:
        found = rendered.all(kind, name, namespace)
        if not found:
            assert optional, (
                f"{container_name} needs {kind} {namespace}/{name}, which the chart did not render"
            )
            return {}
        data = found[0].get("data") or {}
        if kind == "Secret":
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return {k: str(v) for k, v in data.items()}

    env: dict[str, str] = {}
    refs: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            ref = source["configMapRef"]
            env.update(data_of("ConfigMap", ref["name"], ref.get("optional", False)))
        if "secretRef" in source:
            ref = source["secretRef"]
            env.update(data_of("Secret", ref["name"], ref.get("optional", False)))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            refs[var["name"]] = source["fieldRef"]["fieldPath"]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = data_of("Secret", ref["name"], False)[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = data_of("ConfigMap", ref["name"], False)[ref["key"]]
    for name, value in env.items():
        for mount_path, directory in paths.items():
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                env[name] = str(directory) + value[len(mount_path.rstrip("/")) :]
    return ContainerRun(args=[str(a) for a in container.get("args", [])], env=env, field_refs=refs)
