"""The README's Helm values table, generated from helm/shardkeeper/values.schema.json (with the
defaults from values.yaml). ``python -m testbed.values_reference --write`` updates README.md;
a unit test fails when they differ."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from testbed.controlplane import REPO

CHART = REPO / "helm" / "shardkeeper"
README = REPO / "README.md"
START, END = "<!-- values-reference:start -->", "<!-- values-reference:end -->"


def _rows(schema: dict[str, Any], defaults: Any, prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    for name, prop in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        default = defaults.get(name) if isinstance(defaults, dict) else None
        nested = prop.get("properties")
        is_env_map = nested and all(k.isupper() for k in nested)
        if prop.get("type") == "object" and nested and not is_env_map:
            rows += _rows(prop, default, key + ".")
            continue
        kind = prop.get("type", "")
        if "enum" in prop:
            kind = " \\| ".join(str(v) for v in prop["enum"])
        description = prop.get("description", "")
        if is_env_map:
            description += " Keys: " + ", ".join(f"`{k}`" for k in nested) + "."
        shown = json.dumps(default) if default not in (None, "", {}, []) else ""
        rows.append((key, str(kind), f"`{shown}`" if shown else "", description))
    return rows


def table() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, kind, default, description in _rows(schema, defaults):
        escaped = description.replace("|", "\\|")
        lines.append(f"| `{key}` | {kind} | {default} | {escaped} |")
    return "\n".join(lines) + "\n"


def readme_with_table(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}{END}{tail}"


if __name__ == "__main__":
    text = README.read_text()
    if "--write" in sys.argv:
        README.write_text(readme_with_table(text))
    else:
        sys.stdout.write(table())
