"""What the operator asks the Kubernetes API itself (kopf does the watching and the final patches).

Finding a cluster's nodes the way a user sees them: the pods of a StatefulSet.
A node's name is its pod name; its agent is the pod's container port named ``shardkeeper``
(default 8470) on the pod IP. Only pods owned by the StatefulSet count, and an operation needs
every replica Ready, because a backup of some nodes is not a backup of the cluster.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from shardkeeper import conventions as c
from shardkeeper.coordinator.agents import NodeEndpoint
from shardkeeper.errors import ShardkeeperError, SpecError


class ClusterNotFound(SpecError):
    pass


class KubernetesUnavailable(ShardkeeperError):
    """The API server could not be asked; worth retrying."""


@dataclass(frozen=True)
class ClusterView:
    replicas: int
    nodes: list[NodeEndpoint] = field(default_factory=list)
    """Ready pods with an agent endpoint, in ordinal order."""
    problems: list[str] = field(default_factory=list)
    """Why some replica cannot take part yet; empty when the cluster is ready."""

    @property
    def ready(self) -> bool:
        return not self.problems and len(self.nodes) == self.replicas


def load_kube_config() -> None:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def _agent_port(pod: Any) -> int:
    for container in [*(pod.spec.containers or []), *(pod.spec.init_containers or [])]:
        for port in container.ports or []:
            if port.name == c.AGENT_PORT_NAME:
                return int(port.container_port)
    return c.AGENT_DEFAULT_PORT


def _is_ready(pod: Any) -> bool:
    return any(cond.type == "Ready" and cond.status == "True" for cond in (pod.status.conditions or []))


def not_found_message(namespace: str, name: str, existing: list[str] | None) -> str:
    """What a user needs when ``spec.cluster`` names no StatefulSet: the field, and what exists
    (``existing`` is None when it could not be listed)."""
    message = f'spec.cluster: no StatefulSet "{name}" in namespace "{namespace}"'
    if existing is None:
        return message
    if not existing:
        return f"{message}, which has no StatefulSets (spec.cluster names a StatefulSet, not a Deployment)"
    shown = ", ".join(f'"{n}"' for n in sorted(existing)[:20])
    more = f" and {len(existing) - 20} more" if len(existing) > 20 else ""
    return f"{message}; its StatefulSets: {shown}{more}"


def _statefulsets(apps: Any, namespace: str) -> list[str] | None:
    try:
        items = apps.list_namespaced_stateful_set(namespace, _request_timeout=10).items
    except Exception:  # forbidden or away: the message goes without the list
        return None
    return [sts.metadata.name for sts in items]


def _discover(namespace: str, name: str) -> ClusterView:
    apps, core = client.AppsV1Api(), client.CoreV1Api()
    try:
        sts: Any = apps.read_namespaced_stateful_set(name, namespace)
        selector = ",".join(f"{k}={v}" for k, v in (sts.spec.selector.match_labels or {}).items())
        pods: list[Any] = core.list_namespaced_pod(namespace, label_selector=selector).items
    except ApiException as exc:
        if exc.status == 404:
            existing = _statefulsets(apps, namespace)
            raise ClusterNotFound(not_found_message(namespace, name, existing)) from exc
        raise KubernetesUnavailable(
            f"reading StatefulSet {namespace}/{name}: {exc.status} {exc.reason}"
        ) from exc
    except Exception as exc:  # urllib3 connection errors and the like
        raise KubernetesUnavailable(f"reading StatefulSet {namespace}/{name}: {exc!r}") from exc

    replicas = sts.spec.replicas if sts.spec.replicas is not None else 1
    owned = {
        pod.metadata.name: pod
        for pod in pods
        if any(ref.uid == sts.metadata.uid for ref in (pod.metadata.owner_references or []))
    }
    view = ClusterView(replicas=replicas)
    for ordinal in range(replicas):
        pod_name = f"{name}-{ordinal}"
        pod = owned.get(pod_name)
        if pod is None:
            view.problems.append(f'pod "{pod_name}" does not exist')
        elif pod.metadata.deletion_timestamp is not None:
            view.problems.append(f'pod "{pod_name}" is terminating')
        elif not _is_ready(pod) or not pod.status.pod_ip:
            view.problems.append(f'pod "{pod_name}" is not Ready')
        else:
            host = pod.status.pod_ip
            host = f"[{host}]" if ":" in host else host
            view.nodes.append(
                NodeEndpoint(name=pod_name, pod_uid=pod.metadata.uid, url=f"http://{host}:{_agent_port(pod)}")
            )
    return view


async def discover(namespace: str, statefulset: str) -> ClusterView:
    return await asyncio.to_thread(_discover, namespace, statefulset)


def _patch_status(plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    try:
        client.CustomObjectsApi().patch_namespaced_custom_object_status(
            c.GROUP, c.VERSION, namespace, plural, name, {"status": status}
        )
    except ApiException as exc:
        raise KubernetesUnavailable(
            f"patching {plural} {namespace}/{name}: {exc.status} {exc.reason}"
        ) from exc
    except Exception as exc:
        raise KubernetesUnavailable(f"patching {plural} {namespace}/{name}: {exc!r}") from exc


async def publish_status(plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    """Writes status now, in the middle of a reconcile, when users should see a phase at once.
    ``patch`` is a JSON merge patch of the status (``merge_patch``). Raises ``KubernetesUnavailable``."""
    await asyncio.to_thread(_patch_status, plural, namespace, name, patch)


def merge_patch(before: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` as a JSON merge patch (RFC 7386) over ``before``: a field that is gone (a cleared
    error, a cleanup done) is written as null, which removes it; ``new`` alone would leave it."""
    patch: dict[str, Any] = dict(new)
    for key, old in before.items():
        if key not in new:
            patch[key] = None
        elif isinstance(old, dict) and isinstance(new[key], dict):
            patch[key] = merge_patch(old, new[key])
    return patch
