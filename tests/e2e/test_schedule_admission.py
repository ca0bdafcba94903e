"""The API server refuses invalid BackupSchedules with messages that name the field (OpenAPI + CEL
generated from the models); what it cannot check (cron, time zone) the operator does, see
test_schedule.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Env
from tests.e2e.test_schedule import schedule_manifest


@pytest.mark.parametrize(
    ("name", "spec", "field", "words"),
    [
        (
            "s",
            {"template": {"backend": "filesystem", "cluster": "db", "id": "x"}},
            "spec.template.id",
            "must not",
        ),
        (
            "s",
            {"template": {"backend": "filesystem", "cluster": "db", "cancel": True}},
            "spec.template.cancel",
            "",
        ),
        (
            "s",
            {"template": {"backend": "filesystem", "cluster": "db", "include": ["a"], "exclude": ["b"]}},
            "spec.template.include",
            "mutually exclusive",
        ),
        ("s", {"startingDeadlineSeconds": 0}, "spec.startingDeadlineSeconds", "greater than or equal to 1"),
        ("s", {"concurrencyPolicy": "Allow"}, "spec.concurrencyPolicy", 'Unsupported value: "Allow"'),
        ("s", {"retention": {"keepLast": -1}}, "spec.retention.keepLast", "greater than or equal to 0"),
        ("s", {"retention": {"maxAge": "1y"}}, "spec.retention.maxAge", "should match"),
        ("a.b", {}, "", "DNS label"),
        ("x" * 64, {}, "", "at most 63"),
    ],
)
def test_invalid_schedules_are_refused_naming_the_field(
    env: Env, name: str, spec: dict[str, Any], field: str, words: str
) -> None:
    manifest = schedule_manifest(name)
    manifest["spec"].update(spec)
    out = env.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert "invalid" in out or "Invalid" in out, out
    assert field in out and words in out, out


def test_every_spec_field_may_change_and_a_valid_schedule_is_accepted(env: Env) -> None:
    env.apply(schedule_manifest("s"))
    env.kubectl(
        "patch",
        "backupschedule",
        "s",
        "--type=merge",
        "-p",
        '{"spec":{"schedule":"@daily","suspend":true,"template":{"cluster":"other"}}}',
    )
    assert env.get("backupschedule", "s")["spec"]["template"]["cluster"] == "other"
