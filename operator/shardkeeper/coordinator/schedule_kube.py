"""What a BackupSchedule asks the Kubernetes API: create a run, prune one."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from shardkeeper import conventions as c
from shardkeeper.api.common import DeletionPolicy
from shardkeeper.coordinator.kube import KubernetesUnavailable


class ChildRefused(Exception):
    """The API server refused the Backup itself (422, 403...): retrying the same request will not help."""


def create_backup(namespace: str, manifest: dict[str, Any]) -> bool:
    """Creates the Backup; False if one of that name exists already (409)."""
    try:
        client.CustomObjectsApi().create_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.BACKUP_PLURAL, manifest
        )
    except ApiException as exc:
        if exc.status == 409:
            return False
        if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
            raise ChildRefused(f"{exc.status} {_detail(exc)}") from exc
        raise KubernetesUnavailable(
            f"creating Backup {namespace}/{manifest['metadata']['name']}: {exc}"
        ) from exc
    except Exception as exc:  # urllib3 connection errors and the like
        raise KubernetesUnavailable(
            f"creating Backup {namespace}/{manifest['metadata']['name']}: {exc!r}"
        ) from exc
    return True


def _detail(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def prune_backup(namespace: str, name: str, *, deletion_policy: str | None) -> None:
    """Deletes the Backup with deletionPolicy Delete, so its data in the backend goes with it: the
    policy is set first (it may change at any time), then the object is deleted, and the Backup's
    own deletion handler removes the data. A Backup already gone is fine."""
    api = client.CustomObjectsApi()
    try:
        if deletion_policy != DeletionPolicy.DELETE.value:
            api.patch_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                namespace,
                c.BACKUP_PLURAL,
                name,
                {"spec": {"deletionPolicy": DeletionPolicy.DELETE.value}},
            )
        api.delete_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.BACKUP_PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise KubernetesUnavailable(
            f"pruning Backup {namespace}/{name}: {exc.status} {_detail(exc)}"
        ) from exc
    except Exception as exc:  # urllib3 connection errors and the like
        raise KubernetesUnavailable(f"pruning Backup {namespace}/{name}: {exc!r}") from exc
