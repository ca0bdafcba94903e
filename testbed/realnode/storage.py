"""Local persistent volumes for StatefulSet volume claims: a default StorageClass without a
provisioner and pre-created ``local`` PersistentVolumes pinned to the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def local_volumes(workdir: Path, node_name: str, count: int = 8, size: str = "1Gi") -> str:
    """A default StorageClass without a provisioner and ``count`` pre-created local
    PersistentVolumes (directories under the work directory) pinned to this node: what a
    StatefulSet's volumeClaimTemplates bind to, on first use (WaitForFirstConsumer)."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        }
    ]
    for i in range(count):
        path = workdir / "pv" / f"pv{i}"
        path.mkdir(parents=True, exist_ok=True)
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"local-{i}"},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "local",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "local": {"path": str(path)},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/hostname",
                                            "operator": "In",
                                            "values": [node_name],
                                        }
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
        )
    return yaml.safe_dump_all(docs)
