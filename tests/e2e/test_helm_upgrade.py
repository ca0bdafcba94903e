"""Upgrading the chart: Helm installs ``crds/`` once and never upgrades them, so the chart refuses an
upgrade while the cluster serves other CRDs, and the documented path (README "Upgrading") updates
them. Real helm against a real API server of its own (this test replaces the CRDs)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.controlplane import REPO, ControlPlane
from testbed.helm import CHART, helm
from tests.e2e.conftest import wait_until

PREVIOUS = REPO / "tests" / "fixtures" / "charts" / "shardkeeper-0.1.0"
NAMESPACE = "shardkeeper-system"
CRDS = ("backups.shardkeeper.io", "restores.shardkeeper.io", "backupschedules.shardkeeper.io")


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path / "cp").start(crds=False)
    yield cp
    cp.stop()


def _crd(cp: ControlPlane, name: str) -> dict[str, Any]:
    crd: dict[str, Any] = json.loads(cp.kubectl("get", "crd", name, "-o", "json").stdout)
    return crd


def _status_fields(crd: dict[str, Any]) -> set[str]:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return set(schema["properties"]["status"]["properties"])


def _install(
    cp: ControlPlane, verb: str, chart: Path, release: str = "shardkeeper"
) -> subprocess.CompletedProcess[str]:
    return helm(
        verb,
        release,
        str(chart),
        "-n",
        NAMESPACE,
        "--create-namespace",
        kubeconfig=cp.kubeconfig,
        check=False,
    )


def test_a_fresh_install_brings_the_crds_and_passes_the_check(bare: ControlPlane) -> None:
    out = _install(bare, "install", CHART)
    assert out.returncode == 0, out.stderr
    committed = {p.stem: yaml.safe_load(p.read_text()) for p in (CHART / "crds").glob("*.yaml")}
    for name in CRDS:
        served = _crd(bare, name)
        assert served["metadata"]["annotations"] == committed[name]["metadata"]["annotations"]


def test_an_upgrade_is_refused_until_the_crds_are_applied_then_updates_them(bare: ControlPlane) -> None:
    out = _install(bare, "install", PREVIOUS)
    assert out.returncode == 0, out.stderr
    old = _crd(bare, "backups.shardkeeper.io")
    assert "collectionCount" not in _status_fields(old)
    # An object written under the old CRDs, to be kept across the upgrade.
    bare.kubectl("create", "namespace", "db")
    backup = {
        "apiVersion": "shardkeeper.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": "before-upgrade", "namespace": "db"},
        "spec": {"backend": "filesystem", "cluster": "sampledb"},
    }
    bare.kubectl("apply", "-f", "-", input=json.dumps(backup))

    refused = _install(bare, "upgrade", CHART)
    assert refused.returncode != 0
    assert "backups.shardkeeper.io" in refused.stderr and "helm show crds" in refused.stderr, refused.stderr
    assert "collectionCount" not in _status_fields(_crd(bare, "backups.shardkeeper.io"))  # nothing changed

    # The documented path: the chart's CRDs, applied server-side, then the upgrade.
    crds = helm("show", "crds", str(CHART)).stdout
    bare.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)
    upgraded = _install(bare, "upgrade", CHART)
    assert upgraded.returncode == 0, upgraded.stderr

    new = _crd(bare, "backups.shardkeeper.io")
    assert {"collectionCount", "progress", "duration"} <= _status_fields(new)
    for name in CRDS:
        committed = yaml.safe_load((CHART / "crds" / f"{name}.yaml").read_text())
        assert _crd(bare, name)["metadata"]["annotations"] == committed["metadata"]["annotations"]
    kept = json.loads(
        bare.kubectl("get", "backups.shardkeeper.io", "before-upgrade", "-n", "db", "-o", "json").stdout
    )
    assert kept["spec"]["cluster"] == "sampledb"

    # And kubectl explain reads the new descriptions from the API server, once it has published the
    # updated CRD's OpenAPI schema (asynchronously, some time after the update).
    def explained() -> bool:
        found = bare.kubectl(
            "explain", "backups.status.collectionCount", "--api-version=shardkeeper.io/v1alpha1", check=False
        )
        return found.returncode == 0 and "How many collections" in found.stdout

    wait_until(explained, timeout=30, what="kubectl explain to read the upgraded CRD's descriptions")
