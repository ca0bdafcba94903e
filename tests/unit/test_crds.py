"""The CRDs are generated from the pydantic models; the committed files must be exactly that output."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shardkeeper.api.crd import all_crds, backup_crd, restore_crd

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "run: make crds"


@pytest.mark.parametrize("directory", ["crds", "helm/shardkeeper/crds"])
def test_committed_crds_match_the_models(directory: str) -> None:
    generated = all_crds()
    committed = {p.name: yaml.safe_load(p.read_text()) for p in (REPO / directory).glob("*.yaml")}
    assert set(committed) == set(generated), REGENERATE
    for name, crd in generated.items():
        assert committed[name] == crd, f"{directory}/{name} drifted from the models; {REGENERATE}"


def test_every_spec_field_but_cancel_and_deletion_policy_is_immutable() -> None:
    spec = backup_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    guarded = {r["fieldPath"] for r in spec["x-kubernetes-validations"] if "immutable" in r["message"]}
    assert guarded == {f".{name}" for name in spec["properties"] if name not in ("cancel", "deletionPolicy")}


def test_schema_is_structural() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
            if "properties" in node:
                assert node.get("type") == "object", path
                for key, child in node["properties"].items():
                    assert "type" in child, f"{path}.{key} has no type"
                    walk(child, f"{path}.{key}")
            for key in ("items", "additionalProperties"):
                if isinstance(node.get(key), dict):
                    walk(node[key], f"{path}[{key}]")

    for crd in all_crds().values():
        walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], crd["metadata"]["name"])


def _columns(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}


@pytest.mark.parametrize("crd", [backup_crd(), restore_crd()], ids=["backup", "restore"])
def test_default_columns_show_cluster_progress_duration_and_the_error(crd: dict[str, Any]) -> None:
    columns = _columns(crd)
    default = [name for name, c in columns.items() if c.get("priority", 0) == 0]
    for name in (
        "Phase",
        "Cluster",
        "Backend",
        "Collections",
        "Size",
        "Progress",
        "Duration",
        "Age",
        "Error",
    ):
        assert name in default, f"{name} is not in the default `kubectl get` view: {default}"
    # A count, not the list (which kubectl would print as a JSON array).
    assert columns["Collections"] == {
        "name": "Collections",
        "type": "integer",
        "jsonPath": ".status.collectionCount",
    }


def _fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from _fields(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _fields(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _fields(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_every_field_is_described_for_kubectl_explain(name: str) -> None:
    root = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # metadata is ObjectMeta: the API server refuses a description there, kubectl explain has its own.
    undescribed = [
        path
        for path, field in _fields(root, "")
        if path != ".metadata" and not field.get("description", "").strip()
    ]
    assert not undescribed, f"{name}: fields without a description: {undescribed}"
    descriptions = [field.get("description", "") for _, field in _fields(root, "")]
    internal = [d for d in descriptions if re.search(r"\bseed\b", d, re.IGNORECASE)]
    assert not internal, f"{name}: internal words in public descriptions: {internal}"


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_time_and_size_fields_name_their_unit(name: str) -> None:
    root = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, field in _fields(root, ""):
        leaf = path.rsplit(".", 1)[-1]
        text = field.get("description", "")
        if field.get("format") == "date-time":
            assert "RFC 3339" in text, f"{path} does not say its format: {text}"
        if (
            re.search(r"(Bytes|bytes)(Done|Total|Reused|PerSecond)?$|^storedBytes$", leaf)
            and field["type"] == "integer"
        ):
            assert "bytes" in text.lower(), f"{path} does not say its unit: {text}"
        if leaf.endswith(("Seconds", "Ms")):
            assert re.search(r"seconds|milliseconds", text), f"{path} does not say its unit: {text}"


def test_restore_path_is_where_the_backup_was_stored() -> None:
    spec = restore_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    text = spec["properties"]["config"]["properties"]["path"]["description"]
    assert "was stored" in text and "keep" not in text
