"""The ``shardkeeper`` command: ``operator``, ``agent`` and tools around them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from shardkeeper import __version__, logs


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
    from shardkeeper.agent.settings import AgentSettings, read_token

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
            max_bytes_per_second=int(os.environ.get("SHARDKEEPER_MAX_BYTES_PER_SECOND", 0)) or None,
            capacity_bytes=int(os.environ["SHARDKEEPER_DATA_CAPACITY_BYTES"])
            if os.environ.get("SHARDKEEPER_DATA_CAPACITY_BYTES")
            else None,
        )
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from shardkeeper.api.crd import all_crds

    rendered = {name: yaml.safe_dump(crd, sort_keys=False, width=120) for name, crd in all_crds().items()}
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (out / name).write_text(text)
        return 0
    sys.stdout.write("---\n".join(rendered.values()))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardkeeper", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("--log-level", default=os.environ.get("SHARDKEEPER_LOG_LEVEL", "INFO"))
    p.add_argument("--log-json", action="store_true", default=os.environ.get("SHARDKEEPER_LOG_JSON") == "1")
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
        "--tick-seconds", type=float, default=float(os.environ.get("SHARDKEEPER_TICK_SECONDS", 2.0))
    )
    op.add_argument(
        "--reservation-seconds",
        type=float,
        default=float(os.environ.get("SHARDKEEPER_RESERVATION_SECONDS", 60.0)),
    )
    op.add_argument(
        "--agent-unreachable-seconds",
        type=float,
        default=float(os.environ.get("SHARDKEEPER_AGENT_UNREACHABLE_SECONDS", 60.0)),
    )
    op.set_defaults(func=_operator)

    ag = sub.add_parser("agent", help="run a node agent (a sidecar next to the database)")
    ag.add_argument("--node", help="node name; default $POD_NAME")
    ag.add_argument("--data-root", help="the database's data directory; default $SHARDKEEPER_DATA_ROOT")
    ag.add_argument("--listen", default=os.environ.get("SHARDKEEPER_LISTEN", "0.0.0.0:8470"))
    ag.add_argument("--hook-url", help="workload hook base URL; default $SHARDKEEPER_HOOK_URL")
    ag.add_argument("--token-file", default=None, help="default: $SHARDKEEPER_AGENT_TOKEN_FILE")
    ag.set_defaults(func=_agent)

    cr = sub.add_parser("crds", help="print (or --write DIR) the CustomResourceDefinitions")
    cr.add_argument("--write", metavar="DIR")
    cr.set_defaults(func=_crds)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(level=args.log_level, json=args.log_json)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
