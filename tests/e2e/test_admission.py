"""The API server itself refuses invalid Backups, with messages that name the field (OpenAPI + CEL)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Env, backup_manifest


def _refused(env: Env, manifest: dict[str, Any]) -> str:
    out = env.kubectl("apply", "-f", "-", input=_yaml(manifest), check=False)
    assert "invalid" in out, out
    return out


def _yaml(manifest: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(manifest)


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"include": ["a"], "exclude": ["b"]}, "spec.include", "mutually exclusive"),
        ({"id": "Nightly"}, "spec.id", "should match"),
        ({"config": {"cpuPercentage": 0}}, "spec.config.cpuPercentage", "greater than or equal to 1"),
        ({"config": {"cpuPercentage": 81}}, "spec.config.cpuPercentage", "less than or equal to 80"),
        ({"backend": "ftp"}, "spec.backend", 'Unsupported value: "ftp"'),
        (
            {"config": {"compressionLevel": "Fastest"}},
            "spec.config.compressionLevel",
            'Unsupported value: "Fastest"',
        ),
        ({"config": {"chunkSize": 1}}, "spec.config.chunkSize", "greater than or equal to 2"),
        ({"config": {"path": "../escape"}}, "spec.config.path", "'..'"),
        ({"config": {"path": "/etc/x"}}, "spec.config.path", "must not start with '/'"),
    ],
)
def test_invalid_spec_is_refused_naming_the_field(
    env: Env, spec: dict[str, Any], field: str, words: str
) -> None:
    out = _refused(env, backup_manifest("bad", **spec))
    assert field in out and words in out
    assert "NotFound" in env.kubectl("get", "backup", "bad", check=False)


def test_spec_is_immutable_after_creation_except_cancel(env: Env) -> None:
    env.apply(backup_manifest("frozen", include=["articles"]))
    created = env.get("backup", "frozen")
    assert created["spec"]["config"] == {
        "chunkSize": 128,
        "compressionLevel": "DefaultCompression",
        "cpuPercentage": 50,
    }

    for change, field in (
        ({"backend": "s3"}, "spec.backend"),
        ({"include": ["users"]}, "spec.include"),
        ({"config": {"cpuPercentage": 10}}, "spec.config"),
        ({"id": "other"}, "spec.id"),
    ):
        out = _refused(env, backup_manifest("frozen", **{"include": ["articles"], **change}))
        assert f"{field} is immutable" in out, out

    assert "configured" in env.apply(backup_manifest("frozen", include=["articles"], cancel=True))
    out = _refused(env, backup_manifest("frozen", include=["articles"], cancel=False))
    assert "spec.cancel cannot be unset" in out


def _restore(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "shardkeeper.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": name},
        "spec": {"backupId": "nightly", "backend": "filesystem", "cluster": "sampledb", **spec},
    }


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"include": ["a"], "exclude": ["b"]}, "spec.include", "mutually exclusive"),
        ({"backupId": "Nightly"}, "spec.backupId", "should match"),
        ({"config": {"cpuPercentage": 81}}, "spec.config.cpuPercentage", "less than or equal to 80"),
        ({"backend": "ftp"}, "spec.backend", 'Unsupported value: "ftp"'),
        ({"config": {"path": "/etc/x"}}, "spec.config.path", "must not start with '/'"),
    ],
)
def test_invalid_restore_is_refused_naming_the_field(
    env: Env, spec: dict[str, Any], field: str, words: str
) -> None:
    out = _refused(env, _restore("bad", **spec))
    assert field in out and words in out


def test_restore_spec_is_immutable_except_cancel(env: Env) -> None:
    env.apply(_restore("frozen"))
    out = _refused(env, _restore("frozen", nodeMapping={"sampledb-0": "other-0"}))
    assert "spec.nodeMapping is immutable" in out
    assert "configured" in env.apply(_restore("frozen", cancel=True))


@pytest.mark.parametrize("name", ["nightly.2026-11-30", "n" * 129])
def test_name_that_is_not_a_backup_id_is_refused_without_spec_id(env: Env, name: str) -> None:
    """metadata.name is the backup id unless spec.id is set: a CEL rule on the root refuses a name
    with dots or over 128 characters, and accepts it with spec.id."""
    out = _refused(env, backup_manifest(name))
    assert "metadata.name" in out and "set spec.id" in out, out
    assert "NotFound" in env.kubectl("get", "backup", name, check=False)
    assert "created" in env.apply(backup_manifest(name, id="nightly-2026-11-30"))
