"""The demo (``make demo``): a local control plane, a 3-node sample cluster under live writes, the
operator, ``kubectl apply -f examples/backup.yaml``, then a migration: ``examples/restore.yaml``
restores the backup into another cluster, in another namespace, whose pods have other names, and
that cluster's database serves the data. It ends by printing the Backup's table.

Everything is real: kube-apiserver + etcd built from Go modules, the operator running as its own
ServiceAccount under RBAC, one agent and one RocksDB-backed sample database process per pod.
Add ``--keep`` to leave it running and get a kubeconfig to poke at it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.cluster import SampleCluster
from testbed.controlplane import REPO, ControlPlane
from testbed.operator import OperatorProcess

NAMESPACE = "demo"
TARGET_NAMESPACE = "staging"


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def show(cp: ControlPlane, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    out = cp.kubectl(*args).stdout
    print(out.rstrip(), flush=True)
    return out


def tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            print(f"  {path.stat().st_size:>10,d}  {path.relative_to(root.parent)}")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    # SIGTERM (a process manager, `kill`) and SIGINT (Ctrl-C; a shell starts background jobs with it
    # ignored) both stop the demo through its cleanup: control plane, pods' processes, operator.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default=str(REPO / ".demo"))
    parser.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    args = parser.parse_args()

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    token = work / "agent-token"
    token.write_text(secrets.token_hex(24))
    backups = work / "backups"
    backups.mkdir()
    backend = {"BACKUP_FILESYSTEM_PATH": str(backups)}

    cp = ControlPlane(work / "control-plane")
    clusters: list[SampleCluster] = []
    operator: OperatorProcess | None = None
    try:
        say("starting a local control plane (etcd + kube-apiserver, RBAC on) and applying the CRDs")
        cp.start()
        say("creating StatefulSet 'sampledb': 3 pods, each with the sample database and a shardkeeper agent")
        cluster = SampleCluster(
            cp, namespace=NAMESPACE, root=work / "nodes", token_file=token, agent_env=backend
        )
        clusters.append(cluster)
        cluster.create()
        cluster.fill({"articles": [0, 1, 2], "users": [0, 1], "vectors": [2]}, keys=20_000)
        cluster.start_writers()
        show(cp, "get", "pods", "-n", NAMESPACE, "-o", "wide")

        say("starting the operator (as ServiceAccount shardkeeper-system/shardkeeper-operator)")
        operator = OperatorProcess(cp, work / "operator", token, [NAMESPACE], env=backend).start()

        say("applying examples/backup.yaml while the database keeps writing")
        show(cp, "apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / "backup.yaml"))
        started = time.monotonic()
        show(
            cp,
            "wait",
            "-n",
            NAMESPACE,
            "--for=condition=Finished",
            "backups.shardkeeper.io/first-backup",
            "--timeout=180s",
        )
        print(f"(complete after {time.monotonic() - started:.1f}s)")
        acked = cluster.stop_writers()
        print(
            f"records acknowledged by now, per node: {acked} (the writers went on after the backup "
            "froze each node, so the restore below serves fewer)"
        )

        say("the files written to the filesystem backend")
        tree(backups / "first-backup")

        say(f"migration: an empty cluster 'replica' in namespace '{TARGET_NAMESPACE}', pods replica-0..2")
        replica = SampleCluster(
            cp,
            namespace=TARGET_NAMESPACE,
            root=work / "replica",
            token_file=token,
            agent_env=backend,
            name="replica",
        )
        clusters.append(replica)
        replica.create()
        operator.stop()  # the operator watches the namespaces it is given; now both
        operator = OperatorProcess(
            cp, work / "operator", token, [NAMESPACE, TARGET_NAMESPACE], env=backend
        ).start()
        show(cp, "apply", "-n", TARGET_NAMESPACE, "-f", str(REPO / "examples" / "restore.yaml"))
        show(
            cp,
            "wait",
            "-n",
            TARGET_NAMESPACE,
            "--for=condition=Finished",
            "restores.shardkeeper.io/first-restore",
            "--timeout=180s",
        )
        show(cp, "get", "restores.shardkeeper.io", "-n", TARGET_NAMESPACE, "-o", "wide")
        say("the database of cluster 'replica' serves the restored collections")
        for i, node in enumerate(replica.nodes):
            counts = {c: replica.summary(i, c)["keys"] for c in replica.db(i, "GET", "/collections")}
            print(f"  {node.name}: records per collection {counts}")

        say("the backup, node by node (shardkeeper describe backup)")
        command = ["shardkeeper", "describe", "backup", "first-backup", "-n", NAMESPACE]
        print(f"$ {' '.join(command)}", flush=True)
        subprocess.run(
            [sys.executable, "-m", *command],
            check=True,
            env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
        )
        say("kubectl get backups.shardkeeper.io")
        out = show(cp, "get", "backups.shardkeeper.io", "-n", NAMESPACE, "-o", "wide")
        if "SUCCESS" not in out:
            print(operator.logs()[-5000:], file=sys.stderr)
            return 1
        if args.keep:
            print(f"\nRunning. KUBECONFIG={cp.kubeconfig}  (Ctrl-C to stop)")
            print(f"kubectl: {cp.binaries.kubectl}; the shardkeeper CLI: BACKUP_FILESYSTEM_PATH={backups}")
            while True:
                time.sleep(3600)
        return 0
    except (KeyboardInterrupt, subprocess.CalledProcessError):
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        say("stopping everything")
        if operator:
            operator.stop()
        for each in clusters:
            each.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
