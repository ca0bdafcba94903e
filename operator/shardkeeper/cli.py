"""The shardkeeper command: the operator, the agent, and tools around them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from shardkeeper import __version__, cli_backups, logs
from shardkeeper.cli_backups import storage_path
from shardkeeper.errors import ShardkeeperError


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from shardkeeper.agent.settings import read_token
    from shardkeeper.coordinator import handlers
    from shardkeeper.coordinator.context import OperatorContext
    from shardkeeper.coordinator.kube import load_kube_config
    from shardkeeper.coordinator.settings import OperatorSettings

    settings = OperatorSettings(
        agent_token=read_token(token_file=args.agent_token_file),
        tick_seconds=args.tick_seconds,
        reservation_seconds=args.reservation_seconds,
        agent_unreachable_seconds=args.agent_unreachable_seconds,
        progress_interval_seconds=float(os.environ.get("SHARDKEEPER_PROGRESS_INTERVAL_SECONDS", 5.0)),
    )
    load_kube_config()
    if args.metrics_port:
        from shardkeeper.coordinator import metrics

        metrics.serve(args.metrics_port)
    registry = kopf.OperatorRegistry()
    ctx = OperatorContext(settings)
    handlers.register(registry, ctx)
    namespaces = args.namespace or []
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
    )
    return 0


def _agent(args: argparse.Namespace) -> int:
    from shardkeeper.agent.app import run
    from shardkeeper.agent.settings import (
        AgentSettings,
        immutable_patterns,
        memory_limit,
        read_token,
    )

    host, _, port = args.listen.rpartition(":")
    node = args.node or os.environ.get("POD_NAME")
    if not node:
        raise SystemExit("the agent needs its node name: --node or POD_NAME (downward API)")
    data_root = Path(args.data_root or os.environ.get("SHARDKEEPER_DATA_ROOT", ""))
    if not data_root.is_absolute() or not data_root.is_dir():
        raise SystemExit(f"--data-root must be an existing absolute directory, not {str(data_root)!r}")
    run(
        AgentSettings(
            node=node,
            data_root=data_root,
            token=read_token(token_file=args.token_file),
            host=host or "0.0.0.0",  # noqa: S104
            port=int(port),
            hook_url=args.hook_url or os.environ.get("SHARDKEEPER_HOOK_URL") or None,
            immutable_patterns=immutable_patterns(),
            max_bytes_per_second=int(os.environ.get("SHARDKEEPER_MAX_BYTES_PER_SECOND", 0)) or None,
            capacity_bytes=int(os.environ["SHARDKEEPER_DATA_CAPACITY_BYTES"])
            if os.environ.get("SHARDKEEPER_DATA_CAPACITY_BYTES")
            else None,
            memory_limit_bytes=memory_limit(os.environ),
        )
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from shardkeeper.api.crd import all_crds

    rendered = {name: yaml.safe_dump(crd, sort_keys=False, width=120) for name, crd in all_crds().items()}
    for directory in args.write or []:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (out / name).write_text(text)
    if args.write:
        return 0
    sys.stdout.write("---\n".join(rendered.values()))
    return 0


def _table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    lines = ["  ".join(k.ljust(widths[k]) for k in rows[0])]
    lines += ["  ".join(r[k].ljust(widths[k]) for k in r) for r in rows]
    return "\n".join(lines) + "\n"


def _backups_list(args: argparse.Namespace) -> int:
    from shardkeeper.api.common import Backend, human_bytes
    from shardkeeper.storage import open_storage
    from shardkeeper.storage.catalog import list_backups

    storage = open_storage(Backend(args.backend), path=args.path)
    found = list_backups(storage)
    if args.output == "json":
        sys.stdout.write(json.dumps([d.wire() for d in found], indent=1) + "\n")
        return 0
    rows = [
        {
            "ID": d.id,
            "STATUS": d.status.value,
            "COLLECTIONS": ",".join(d.collections),
            "NODES": str(len(d.nodes)),
            "SIZE": human_bytes(d.bytes),
            "STORED": human_bytes(d.stored_bytes),
            "STARTED": d.started_at.isoformat().replace("+00:00", "Z"),
            "COMPLETED": d.completed_at.isoformat().replace("+00:00", "Z") if d.completed_at else "",
        }
        for d in found
    ]
    # Name where it looked: a mistyped path or bucket reads as an empty one.
    sys.stdout.write(_table(rows) if rows else f"no backups at {storage.url()}\n")
    return 0


def _backups_describe(args: argparse.Namespace) -> int:
    from shardkeeper.api.common import Backend
    from shardkeeper.storage import open_storage
    from shardkeeper.storage.catalog import read_descriptor

    storage = open_storage(Backend(args.backend), path=args.path)
    descriptor = read_descriptor(storage, args.id)
    out = {"location": storage.url(args.id), **descriptor.wire()}
    sys.stdout.write(
        json.dumps(out, indent=1) if args.output == "json" else yaml.safe_dump(out, sort_keys=False)
    )
    return 0


def _backups_copy(args: argparse.Namespace) -> int:
    import time

    from shardkeeper.api.common import Backend, human_bytes
    from shardkeeper.storage import open_storage
    from shardkeeper.storage.catalog import CopyReport, copy_backup

    source = open_storage(Backend(args.source), path=args.from_path)
    target = open_storage(Backend(args.target), path=args.to_path)
    started = time.monotonic()

    tty = sys.stderr.isatty()

    def progress(report: CopyReport) -> None:
        line = f"{report.objects} objects, {human_bytes(report.bytes)} copied and verified"
        # A terminal gets one line, rewritten; a log or a pipe gets a line per object.
        sys.stderr.write(f"\r{line}" if tty else f"{line}\n")

    report = copy_backup(source, target, args.id, on_progress=progress)
    seconds = max(time.monotonic() - started, 1e-6)
    if tty:
        sys.stderr.write("\n")
    sys.stdout.write(
        f'copied backup "{args.id}" from {source.url(args.id)} to {target.url(args.id)}: '
        f"{report.objects} objects, {human_bytes(report.bytes)}, every chunk verified, "
        f"{human_bytes(int(report.bytes / seconds))}/s\n"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardkeeper", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument(
        "--log-level",
        default=os.environ.get("SHARDKEEPER_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: $SHARDKEEPER_LOG_LEVEL, else INFO)",
    )
    p.add_argument(
        "--log-json",
        action="store_true",
        default=os.environ.get("SHARDKEEPER_LOG_JSON") == "1",
        help="one JSON object per log line (default: $SHARDKEEPER_LOG_JSON=1)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    op = sub.add_parser(
        "operator", help="run the operator (kopf) against the current kubeconfig or in-cluster"
    )
    op.add_argument("--namespace", "-n", action="append", help="watch only these namespaces (repeatable)")
    op.add_argument("--agent-token-file", default=None, help="default: $SHARDKEEPER_AGENT_TOKEN_FILE")
    op.add_argument(
        "--liveness", default=os.environ.get("SHARDKEEPER_LIVENESS"), help="e.g. http://0.0.0.0:8080/healthz"
    )
    op.add_argument(
        "--tick-seconds",
        type=float,
        default=float(os.environ.get("SHARDKEEPER_TICK_SECONDS", 2.0)),
        help="how often a running operation is reconciled, in seconds (default 2)",
    )
    op.add_argument(
        "--reservation-seconds",
        type=float,
        default=float(os.environ.get("SHARDKEEPER_RESERVATION_SECONDS", 60.0)),
        help="how long a prepared agent waits for the commit before it frees itself, in seconds (default 60)",
    )
    op.add_argument(
        "--agent-unreachable-seconds",
        type=float,
        default=float(os.environ.get("SHARDKEEPER_AGENT_UNREACHABLE_SECONDS", 60.0)),
        help="an agent silent this long fails the operation, in seconds (default 60)",
    )
    op.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("SHARDKEEPER_METRICS_PORT", 8471)),
        help="serve Prometheus metrics at :PORT/metrics (default 8471; 0: off)",
    )
    op.set_defaults(func=_operator)

    ag = sub.add_parser("agent", help="run a node agent (a sidecar next to the database)")
    ag.add_argument("--node", help="node name; default $POD_NAME")
    ag.add_argument("--data-root", help="the database's data directory; default $SHARDKEEPER_DATA_ROOT")
    ag.add_argument(
        "--listen",
        default=os.environ.get("SHARDKEEPER_LISTEN", "0.0.0.0:8470"),
        help="HOST:PORT to serve the agent API on (default: $SHARDKEEPER_LISTEN, else 0.0.0.0:8470)",
    )
    ag.add_argument("--hook-url", help="workload hook base URL; default $SHARDKEEPER_HOOK_URL")
    ag.add_argument("--token-file", default=None, help="default: $SHARDKEEPER_AGENT_TOKEN_FILE")
    ag.set_defaults(func=_agent)

    backends = ["filesystem", "s3", "gcs", "azure"]
    bk = sub.add_parser(
        "backups",
        help="list, describe, copy, delete and prune backups in a backend (configured from the environment)",
    )
    bsub = bk.add_subparsers(dest="backups_command", required=True)
    ls = bsub.add_parser("list", help="backups in a backend, newest first")
    ls.add_argument("--backend", required=True, choices=backends)
    ls.add_argument("--path", type=storage_path, help="the backend path (default: BACKUP_*_PATH)")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ls.set_defaults(func=_backups_list)
    ds = bsub.add_parser("describe", help="a backup's global descriptor")
    ds.add_argument("id")
    ds.add_argument("--backend", required=True, choices=backends)
    ds.add_argument("--path", type=storage_path, help="the backend path (default: BACKUP_*_PATH)")
    ds.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    ds.set_defaults(func=_backups_describe)
    cp = bsub.add_parser("copy", help="copy a backup to another backend, verifying every chunk's checksum")
    cp.add_argument("id")
    cp.add_argument("--from", dest="source", required=True, choices=backends, help="the backend it is in")
    cp.add_argument("--to", dest="target", required=True, choices=backends, help="the backend to copy it to")
    cp.add_argument(
        "--from-path", type=storage_path, help="its path there (default: that backend's BACKUP_*_PATH)"
    )
    cp.add_argument(
        "--to-path", type=storage_path, help="the path to write it under (default: BACKUP_*_PATH)"
    )
    cp.set_defaults(func=_backups_copy)
    cli_backups.add_commands(bsub, sub, backends)

    cr = sub.add_parser("crds", help="print (or --write DIR) the CustomResourceDefinitions")
    cr.add_argument("--write", metavar="DIR", action="append", help="write the files here (repeatable)")
    cr.set_defaults(func=_crds)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(level=args.log_level, json=args.log_json)
    try:
        result: int = args.func(args)
    except ShardkeeperError as exc:
        sys.stderr.write(f"shardkeeper: {exc}\n")
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
