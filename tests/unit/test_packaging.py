"""What ships besides the package stays consistent: one version everywhere, the README's values
table equal to the chart's schema."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from testbed.values_reference import README, readme_with_table

REPO = Path(__file__).resolve().parents[2]


def test_one_version_in_pyproject_dockerfile_chart_and_image_tag() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    dockerfile = re.search(r"^ARG VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    chart = yaml.safe_load((REPO / "helm" / "shardkeeper" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "helm" / "shardkeeper" / "values.yaml").read_text())
    assert dockerfile is not None
    assert {dockerfile.group(1), chart["appVersion"], values["image"]["tag"]} == {version}


def test_readme_values_reference_matches_the_schema() -> None:
    text = README.read_text()
    assert readme_with_table(text) == text, "run: make values-reference"
