"""The CRDs are generated from the pydantic models; the committed files must be exactly that output."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shardkeeper.api.crd import all_crds, backup_crd

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


def test_printer_columns_show_phase_backend_collections_size_age() -> None:
    columns = [c["name"] for c in backup_crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:5] == ["Phase", "Backend", "Collections", "Size", "Age"]
