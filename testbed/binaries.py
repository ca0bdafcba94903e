"""Where the control-plane binaries are: built once per version by ``hack/build-*.sh``, cached outside
the repository."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _build(script: str) -> Path:
    result = subprocess.run([str(REPO / "hack" / script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"hack/{script} failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kubectl: Path
    etcd: Path

    @classmethod
    def locate(cls) -> Binaries:
        """$SHARDKEEPER_K8S_BIN / $SHARDKEEPER_ETCD_BIN if set, else the cached builds (built if missing)."""
        env = os.environ
        k8s = Path(env["SHARDKEEPER_K8S_BIN"]) if "SHARDKEEPER_K8S_BIN" in env else _build("build-k8s.sh")
        etcd = Path(env["SHARDKEEPER_ETCD_BIN"]) if "SHARDKEEPER_ETCD_BIN" in env else _build("build-etcd.sh")
        found = cls(kube_apiserver=k8s / "kube-apiserver", kubectl=k8s / "kubectl", etcd=etcd / "etcd")
        for path in (found.kube_apiserver, found.kubectl, found.etcd):
            if not os.access(path, os.X_OK):
                raise FileNotFoundError(f"{path} is missing; run hack/bootstrap.sh")
        return found
