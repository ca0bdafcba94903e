"""``shardkeeper backups delete|prune`` (on a backend) and ``shardkeeper describe backup`` (a CR).

``prune`` reads every backup's global descriptor and applies the same retention code as a
BackupSchedule (``coordinator.retention``), dated by each backup's start; ``--dry-run`` shows the
verdicts without deleting. Both ``delete`` and ``prune`` remove a backup's global descriptor first,
so a half-deleted backup is never listed or restorable, then everything under its id.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shardkeeper.api.common import Backend, error_text, human_bytes
from shardkeeper.api.descriptors import GlobalDescriptor
from shardkeeper.api.retention import Retention
from shardkeeper.coordinator.retention import Item, Verdict, plan
from shardkeeper.errors import SpecError
from shardkeeper.storage import BackupLayout, Storage, open_storage
from shardkeeper.storage.catalog import list_backups, read_descriptor
from shardkeeper.storage.repository import BackupRepository

_POLICY_FLAGS = (
    ("keep_last", "the newest n"),
    ("keep_hourly", "the newest of each of the newest n hours with a backup"),
    ("keep_daily", "... of days"),
    ("keep_weekly", "... of ISO weeks"),
    ("keep_monthly", "... of months"),
    ("keep_yearly", "... of years"),
    ("min_successful", "never prune the newest n successful backups (default 1)"),
    ("keep_failed", "keep the newest n failed or canceled attempts (default 1)"),
)


def storage_path(value: str) -> str:
    """A backend path as spec.config.path takes it: relative to the backend's root, no '..'."""
    from pydantic import TypeAdapter, ValidationError

    from shardkeeper.api.backup import StoragePath

    try:
        checked: str = TypeAdapter(StoragePath).validate_python(value)
    except ValidationError as exc:
        why = "; ".join(error_text(e) for e in exc.errors(include_url=False))
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a path inside the backend's root (relative, no '..'): {why}"
        ) from None
    if ".." in checked.split("/"):
        raise argparse.ArgumentTypeError(f"{value!r}: '..' segments are refused")
    return checked


def _iso(t: dt.datetime | None) -> str:
    return t.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z") if t else ""


def _table(rows: list[dict[str, str]]) -> str:
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    lines = ["  ".join(k.ljust(widths[k]) for k in rows[0]).rstrip()]
    lines += ["  ".join(r[k].ljust(widths[k]) for k in r).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def remove(storage: Storage, backup_id: str) -> int:
    """Removes one backup: its global descriptor first, then the rest. Returns the objects removed."""
    layout = BackupLayout(backup_id)
    storage.delete(layout.global_descriptor)
    return 1 + storage.delete_prefix(layout.root)


def delete_backup(storage: Storage, backup_id: str, *, force: bool) -> tuple[GlobalDescriptor, int]:
    """Deletes a finished backup; one still running (or left so by a crash) needs ``force``."""
    descriptor = read_descriptor(storage, backup_id)
    if not descriptor.status.terminal and not force:
        raise SpecError(
            f'backup "{backup_id}" is {descriptor.status.value}: it may still be running; '
            "--force deletes it anyway"
        )
    dependants = BackupRepository(storage).dependants(backup_id)
    if dependants:
        raise SpecError(
            f'backups {dependants} are incremental backups built on "{backup_id}": deleting it would break '
            "them; delete them first"
        )
    return descriptor, remove(storage, backup_id)


def prune_plan(found: list[GlobalDescriptor], policy: Retention, *, now: dt.datetime) -> list[Verdict]:
    return plan(policy, [Item(d.id, d.started_at, d.status, depends_on=d.base) for d in found], now=now)


def _policy(args: argparse.Namespace) -> Retention:
    fields: dict[str, Any] = {name: getattr(args, name) for name, _ in _POLICY_FLAGS}
    fields["max_age"] = args.max_age
    try:
        return Retention.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{str(e['loc'][0]).replace('_', '-')}: {error_text(e)}" for e in exc.errors(include_url=False)
        )
        raise SpecError(problems) from exc


def _delete(args: argparse.Namespace) -> int:
    storage = open_storage(Backend(args.backend), path=args.path)
    descriptor, removed = delete_backup(storage, args.id, force=args.force)
    if descriptor.owner is not None:
        owner = descriptor.owner
        sys.stderr.write(
            f"note: written by Backup {owner.namespace}/{owner.name}; that object, if it still exists, "
            "now points at nothing (deleting it with deletionPolicy Delete does both)\n"
        )
    sys.stdout.write(f'deleted backup "{args.id}" at {storage.url(args.id)}: {removed} objects\n')
    return 0


def _prune(args: argparse.Namespace) -> int:
    policy = _policy(args)
    storage = open_storage(Backend(args.backend), path=args.path)
    found = list_backups(storage)
    verdicts = prune_plan(found, policy, now=dt.datetime.now(dt.UTC))
    by_id = {d.id: d for d in found}
    rows = []
    for verdict in verdicts:
        d = by_id[verdict.name]
        action = "keep" if verdict.keep else ("would prune" if args.dry_run else "prune")
        rows.append(
            {
                "ID": d.id,
                "STATUS": d.status.value,
                "STARTED": _iso(d.started_at),
                "SIZE": human_bytes(d.bytes),
                "ACTION": action,
                "WHY": verdict.reason,
            }
        )
    if args.output == "json":
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    elif rows:
        sys.stdout.write(_table(rows))
    else:
        sys.stdout.write(f"no backups at {storage.url()}\n")
    if args.dry_run:
        return 0
    doomed = [v.name for v in reversed(verdicts) if not v.keep]
    total = sum(remove(storage, backup_id) for backup_id in doomed)
    sys.stderr.write(f"pruned {len(doomed)} backups ({total} objects) at {storage.url()}\n")
    return 0


# --- describe backup ---------------------------------------------------------------------------


def describe(obj: dict[str, Any]) -> str:
    """A Backup custom resource for people: summary, conditions, and a per-node table."""
    meta, spec, st = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    lines = [
        f"Name:         {meta.get('name', '')}",
        f"Namespace:    {meta.get('namespace', '')}",
        f"Cluster:      {spec.get('cluster', '')}",
        f"Backend:      {spec.get('backend', '')}  {st.get('path', '')}".rstrip(),
        f"Phase:        {st.get('phase', '')}",
    ]
    if "shardkeeper.io/schedule" in labels:
        slot = notes.get("shardkeeper.io/scheduled-at", "")
        lines.append(f"Schedule:     {labels['shardkeeper.io/schedule']} (slot {slot})")
    lines += [
        f"Collections:  {_collections_line(st)}",
        f"Size:         {st.get('size') or human_bytes(int(st.get('bytesTotal') or 0))}"
        + (f" ({human_bytes(int(st['storedBytes']))} stored)" if st.get("storedBytes") is not None else ""),
        f"Files:        {st.get('filesDone', 0)}/{st.get('filesTotal', 0)}",
        f"Throughput:   {st.get('throughput') or ''}",
        f"Started:      {st.get('startedAt', '')}",
        f"Completed:    {st.get('completedAt', '')}",
        f"Policy:       deletionPolicy {spec.get('deletionPolicy', 'Retain')}",
        f"Consistency:  {spec.get('consistency', 'node')}",
    ]
    if st.get("cut"):
        lines.append(f"Cut:          {st['cut']}")
    if st.get("consistentAt"):
        overlap = st.get("holdOverlapMs")
        lines.append(
            f"ConsistentAt: {st['consistentAt']}"
            + (f" (every hold overlapped {overlap:.1f} ms)" if isinstance(overlap, int | float) else "")
        )
    if st.get("error"):
        lines.append(f"Error:        {st['error']}")
    conditions = [
        f"{c.get('type')}={c.get('status')} ({c.get('reason')})" for c in st.get("conditions") or []
    ]
    if conditions:
        lines.append(f"Conditions:   {', '.join(conditions)}")
    nodes = st.get("nodes") or {}
    rows = []
    for name in sorted(nodes):
        n = nodes[name]
        rate, pause = n.get("bytesPerSecond"), n.get("pauseMs")
        done, total = (human_bytes(int(n.get(k) or 0)) for k in ("bytesDone", "bytesTotal"))
        rows.append(
            {
                "NODE": name,
                "PHASE": str(n.get("phase", "")),
                "BYTES": f"{done}/{total}",
                "FILES": f"{n.get('filesDone', 0)}/{n.get('filesTotal', 0)}",
                "THROUGHPUT": f"{human_bytes(int(rate))}/s" if rate else "",
                "PAUSE": f"{pause:.1f} ms" if isinstance(pause, int | float) else "",
                "HELD": _held(n.get("hold")),
                "ERROR": str(n.get("error") or ""),
            }
        )
    text = "\n".join(lines) + "\n"
    if rows:
        text += "\n" + _table(rows)
    return text


#: Where a pod finds its own namespace (the ServiceAccount volume kubelet mounts).
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _held(hold: Any) -> str:
    """A node's hold window, as ``from .. until`` (times of day, UTC), from its status."""
    if not isinstance(hold, dict) or not hold.get("heldFrom"):
        return ""
    until = _clock(hold["heldUntil"]) if hold.get("heldUntil") else "(held)"
    note = " ended by itself" if hold.get("endedByItself") else ""
    return f"{_clock(hold['heldFrom'])}..{until}{note}"


def _clock(t: object) -> str:
    """The time of day of an RFC 3339 timestamp (the whole text if it has none)."""
    return str(t).partition("T")[2].removesuffix("Z").removesuffix("+00:00") or str(t)


def _describe_backup(args: argparse.Namespace) -> int:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from shardkeeper import conventions as c

    namespace = args.namespace
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        if namespace is None:
            namespace = Path(_SA_NAMESPACE).read_text().strip()
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except config.ConfigException as exc:
            sys.stderr.write(f"error: no Kubernetes credentials (not in a pod, and no kubeconfig): {exc}\n")
            return 2
        if namespace is None:
            _, active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
            namespace = (active or {}).get("context", {}).get("namespace") or "default"
    try:
        obj: Any = client.CustomObjectsApi().get_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.BACKUP_PLURAL, args.name
        )
    except ApiException as exc:
        if exc.status == 404:
            raise SpecError(f'Backup "{args.name}" not found in namespace "{namespace}"') from None
        raise SpecError(f"reading Backup {namespace}/{args.name}: {exc.status} {exc.reason}") from None
    sys.stdout.write(json.dumps(obj, indent=1) + "\n" if args.output == "json" else describe(obj))
    return 0


def add_commands(
    backups: argparse._SubParsersAction,  # type: ignore[type-arg]
    top: argparse._SubParsersAction,  # type: ignore[type-arg]
    backends: list[str],
) -> None:
    rm = backups.add_parser("delete", help="delete a backup from a backend (descriptor first)")
    rm.add_argument("id")
    rm.add_argument("--backend", required=True, choices=backends)
    rm.add_argument("--path", type=storage_path, help="the backend path (default: BACKUP_*_PATH)")
    rm.add_argument("--force", action="store_true", help="also a backup that is not finished")
    rm.set_defaults(func=_delete)

    pr = backups.add_parser(
        "prune", help="apply a retention policy to the backups in a backend (as a BackupSchedule does)"
    )
    pr.add_argument("--backend", required=True, choices=backends)
    pr.add_argument("--path", type=storage_path, help="the backend path (default: BACKUP_*_PATH)")
    for name, text in _POLICY_FLAGS:
        pr.add_argument(f"--{name.replace('_', '-')}", type=int, metavar="N", help=text)
    pr.add_argument("--max-age", help="prune successful backups older than this (30d, 2w, 36h)")
    pr.add_argument("--dry-run", action="store_true", help="show the verdicts, delete nothing")
    pr.add_argument("-o", "--output", choices=["table", "json"], default="table")
    pr.set_defaults(func=_prune)

    ds = top.add_parser("describe", help="describe a custom resource, e.g. 'describe backup NAME'")
    kinds = ds.add_subparsers(dest="describe_kind", required=True)
    bk = kinds.add_parser("backup", help="a Backup: summary, conditions and a per-node table")
    bk.add_argument("name")
    bk.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    bk.add_argument("-o", "--output", choices=["text", "json"], default="text")
    bk.set_defaults(func=_describe_backup)


def _collections_line(st: dict[str, Any]) -> str:
    """The status's collections, with how many it leaves out (a status lists the first 100; the
    backup's descriptor, `shardkeeper backups describe ID`, lists them all)."""
    names = [str(n) for n in st.get("collections") or []]
    count = st.get("collectionCount")
    total = count if isinstance(count, int) and count > len(names) else len(names)
    more = f" ... and {total - len(names)} more ({total} in all)" if total > len(names) else ""
    return ",".join(names) + more
