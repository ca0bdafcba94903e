"""The e2e marker selects exactly the tests under tests/e2e (``-m e2e`` / ``-m "not e2e"``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _collected(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr
    return {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}


def test_e2e_marker_selects_the_e2e_tier_by_path() -> None:
    paths = ("tests/e2e/test_admission.py", "tests/unit/test_queue.py")
    assert _collected("-m", "e2e", *paths) == {"tests/e2e/test_admission.py"}
    assert _collected("-m", "not e2e", *paths) == {"tests/unit/test_queue.py"}
