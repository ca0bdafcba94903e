"""Leaves the machine as the node found it: every container killed, every mount under the work
directory and every pod network namespace the node made unmounted, the CNI bridge deleted, the
kubelet's and kube-proxy's iptables chains removed, the pod cgroups removed. Each step runs even if
an earlier one failed; what could not be undone is returned, so a test can fail naming it."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def run(*cmd: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=timeout)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under ``root`` (from /proc/self/mountinfo), deepest first."""
    found = []
    prefix = str(root).rstrip("/") + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(prefix):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def netns_files() -> set[str]:
    d = Path("/run/netns")
    return {str(p) for p in d.iterdir()} if d.is_dir() else set()


def unmount_all(root: Path) -> list[str]:
    for point in mounts_under(root):
        if run("umount", point).returncode != 0:
            run("umount", "-l", point)
    return mounts_under(root)


def release_netns(created: set[str]) -> list[str]:
    left = []
    for path in sorted(created):
        run("umount", path)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if os.path.exists(path):
            left.append(path)
    return left


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def pids_with(needle: str) -> list[int]:
    """Processes whose command line contains ``needle`` (our containerd's socket path: its shims)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(proc.name))
    return [p for p in found if p != os.getpid()]


def iptables_chains_removed(prefixes: tuple[str, ...] = ("KUBE-",)) -> list[str]:
    """Deletes every rule jumping to, and every chain named, KUBE-* in filter/nat/mangle, IPv4 and
    IPv6. Returns the chains still there."""
    left = []
    for tool in ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy"):
        for table in ("filter", "nat", "mangle"):
            out = run(tool, "-w", "-t", table, "-S")
            if out.returncode != 0:
                continue
            ours = [
                line.split()[1]
                for line in out.stdout.splitlines()
                if line.startswith("-N ") and line.split()[1].startswith(prefixes)
            ]
            for line in out.stdout.splitlines():
                parts = shlex.split(line)  # comments are quoted
                jump = parts[parts.index("-j") + 1] if "-j" in parts[:-1] else ""
                if parts[:1] == ["-A"] and parts[1] not in ours and jump in ours:
                    run(tool, "-w", "-t", table, "-D", *parts[1:])
            for chain in ours:
                run(tool, "-w", "-t", table, "-F", chain)
            for chain in ours:
                if run(tool, "-w", "-t", table, "-X", chain).returncode != 0:
                    left.append(f"{tool} -t {table} {chain}")
    return left


def make_cgroups(cgroup_root: str) -> None:
    """The kubelet's cgroupRoot must exist in every v1 hierarchy; a new cpuset cgroup starts with no
    CPUs or memory nodes, so it gets its parent's."""
    for hierarchy in CGROUP_FS.iterdir():
        if not (hierarchy / "cgroup.procs").exists() or (hierarchy / "cgroup.controllers").exists():
            continue  # not a v1 hierarchy
        top = hierarchy / cgroup_root.strip("/")
        top.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (top / name).exists() and not (top / name).read_text().strip():
                (top / name).write_text((hierarchy / name).read_text())


def cgroups_removed(cgroup_root: str) -> list[str]:
    left = []
    for hierarchy in CGROUP_FS.iterdir() if CGROUP_FS.is_dir() else []:
        top = hierarchy / cgroup_root.strip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: w[0].count("/"), reverse=True):
            for _ in range(20):
                try:
                    os.rmdir(dirpath)
                    break
                except OSError:
                    time.sleep(0.1)
        if top.exists():
            left.append(str(top))
    return left


def steps(named: list[tuple[str, Callable[[], list[str]]]]) -> list[str]:
    """Runs every step; a step returns what it left behind, an exception counts as left behind."""
    left = []
    for name, step in named:
        try:
            left += [f"{name}: {item}" for item in step()]
        except Exception as exc:  # every cleanup step runs, whatever failed before
            left.append(f"{name}: {type(exc).__name__}: {exc}")
    return left
