"""The demo stops cleanly, whichever way it is told to: nothing it started is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.controlplane import REPO


def _ours(workdir: Path) -> list[str]:
    """Command lines of live processes that mention ``workdir`` (control plane, pods, operator)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if str(workdir) in cmdline and state != "Z":
            found.append(f"{pid}: {cmdline[:200]}")
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_demo_stops_everything_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    workdir = tmp_path / "demo"
    log = (tmp_path / "demo.log").open("w+")
    # As a background job of a non-interactive shell: SIGINT starts ignored.
    demo = subprocess.Popen(
        [sys.executable, "-m", "testbed.demo", "--workdir", str(workdir)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 120
    while "creating StatefulSet" not in Path(log.name).read_text():
        assert demo.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()[-3000:]
        time.sleep(0.2)
    assert _ours(workdir), "the demo should be running its control plane by now"
    demo.send_signal(signum)
    assert demo.wait(timeout=120) == 130
    assert "stopping everything" in Path(log.name).read_text()
    deadline = time.monotonic() + 10
    while _ours(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ours(workdir) == []
