"""The Helm chart, for real: rendered by the helm binary for every backend combination, accepted by
the real API server (server-side dry run), and the operator and agents run as the chart declares
them — the chart's ServiceAccount token and RBAC, the chart's ConfigMap and Secrets, the agent
sidecar from the chart's named templates — through a backup, a restore and a cancel."""

from __future__ import annotations

import itertools
import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.controlplane import REPO, ControlPlane
from testbed.helm import CHART, HelmError, container_run, helm, render, render_with_agent
from testbed.operator import OperatorProcess
from testbed.servers import StorageServer
from tests.e2e.conftest import Env, backup_manifest, restore_manifest

BACKENDS = ("filesystem", "s3", "gcs", "azure")
FS_PATH = "/var/lib/shardkeeper-backups"


def _values(enabled: tuple[str, ...], *, watch: list[str] | None = None) -> dict[str, Any]:
    """Values a user could write for these backends, exercising secrets and envSecrets both."""
    backups: dict[str, Any] = {name: {"enabled": name in enabled} for name in BACKENDS}
    backups["filesystem"]["volume"] = {"persistentVolumeClaim": {"claimName": "shared-backups"}}
    backups["s3"]["envconfig"] = {"BACKUP_S3_BUCKET": "b", "BACKUP_S3_ENDPOINT": "minio:9000"}
    backups["s3"]["secrets"] = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"}
    backups["gcs"]["envconfig"] = {"BACKUP_GCS_BUCKET": "g"}
    backups["gcs"]["secrets"] = {"GOOGLE_APPLICATION_CREDENTIALS": '{"type": "service_account"}'}
    backups["azure"]["envconfig"] = {"BACKUP_AZURE_CONTAINER": "c"}
    backups["azure"]["envSecrets"] = {"AZURE_STORAGE_CONNECTION_STRING": "azure-credentials"}
    return {
        "backups": backups,
        "operator": {"watchNamespaces": watch or []},
        "agent": {"namespaces": ["databases"]},
    }


COMBINATIONS = [c for n in range(len(BACKENDS) + 1) for c in itertools.combinations(BACKENDS, n)]


def test_helm_lint_is_clean() -> None:
    out = helm("lint", str(CHART), "--strict", "--kube-version", "1.34.0", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("enabled", COMBINATIONS, ids=lambda c: "+".join(c) or "none")
def test_every_backend_combination_renders_and_the_api_server_accepts_it(
    control_plane: ControlPlane, tmp_path: Path, enabled: tuple[str, ...]
) -> None:
    watch = ["databases"] if len(enabled) % 2 else []  # both RBAC shapes, across the combinations
    values = _values(enabled, watch=watch)
    lint = helm("lint", str(CHART), "--strict", "-f", _write(tmp_path, values), check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = render_with_agent(values, workdir=tmp_path)

    config = rendered.find("ConfigMap", "shardkeeper-backups", "shardkeeper-system")["data"]
    enabled_by_config = {
        name
        for name, var in (
            ("filesystem", "BACKUP_FILESYSTEM_PATH"),
            ("s3", "BACKUP_S3_BUCKET"),
            ("gcs", "BACKUP_GCS_BUCKET"),
            ("azure", "BACKUP_AZURE_CONTAINER"),
        )
        if var in config
    }
    assert enabled_by_config == set(enabled)
    # The shared objects land in every agent namespace too, identical.
    assert rendered.find("ConfigMap", "shardkeeper-backups", "databases")["data"] == config
    assert len({s["data"]["token"] for s in rendered.all("Secret", "shardkeeper-agent-token")}) == 1
    rbac_kinds = {o["kind"] for o in rendered.objects if o["kind"].endswith(("Role", "RoleBinding"))}
    assert rbac_kinds == ({"Role", "RoleBinding"} if watch else {"ClusterRole", "ClusterRoleBinding"})

    for ns in ("shardkeeper-system", "databases"):
        control_plane.kubectl("create", "namespace", ns, check=False)
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered.yaml())
    out = control_plane.kubectl("apply", "--dry-run=server", "-f", str(manifest))
    assert out.returncode == 0
    created = [line for line in out.stdout.splitlines() if "(server dry run)" in line]
    assert len(created) == len(rendered.objects), out.stdout


def test_the_chart_refuses_invalid_values_naming_the_field(tmp_path: Path) -> None:
    cases = {
        "/backups/s3/envconfig": {
            "backups": {"s3": {"enabled": True, "envconfig": {"BACKUP_S3_BUKET": "x"}}}
        },
        "/backups/filesystem": {"backups": {"filesystem": {"enabled": True}}},
        # No default bucket: a backend enabled alone names none, and is refused naming the value.
        "BACKUP_S3_BUCKET": {"backups": {"s3": {"enabled": True}}},
        "BACKUP_GCS_BUCKET": {"backups": {"gcs": {"enabled": True}}},
        "BACKUP_AZURE_CONTAINER": {"backups": {"azure": {"enabled": True}}},
        "/operator/logLevel": {"operator": {"logLevel": "LOUD"}},
        "/agent/token/value": {"agent": {"token": {"value": "short"}}},
        "/backups/s3/secrets": {"backups": {"s3": {"enabled": True, "secrets": {"AWS_SECRET": "x"}}}},
        # A URL where a bucket name goes, and half a key pair.
        "/backups/s3/envconfig/BACKUP_S3_BUCKET": {
            "backups": {"s3": {"enabled": True, "envconfig": {"BACKUP_S3_BUCKET": "s3://bucket/path"}}}
        },
        "AWS_SECRET_ACCESS_KEY": {
            "backups": {
                "s3": {
                    "enabled": True,
                    "envconfig": {"BACKUP_S3_BUCKET": "b"},
                    "secrets": {"AWS_ACCESS_KEY_ID": "a"},
                }
            }
        },
    }
    for field, values in cases.items():
        with pytest.raises(HelmError) as refused:
            render(values, workdir=tmp_path)
        assert field in str(refused.value) or field.rsplit("/", 1)[-1] in str(refused.value), (
            field,
            str(refused.value),
        )


def test_the_crds_in_the_chart_are_the_ones_the_api_server_serves(control_plane: ControlPlane) -> None:
    rendered = render(include_crds=True)
    crds = {o["metadata"]["name"]: o for o in rendered.all("CustomResourceDefinition")}
    assert set(crds) == {
        "backups.shardkeeper.io",
        "restores.shardkeeper.io",
        "backupschedules.shardkeeper.io",
    }
    for name, crd in crds.items():
        served = json.loads(control_plane.kubectl("get", "crd", name, "-o", "json").stdout)
        assert served["spec"]["versions"][0]["schema"] == crd["spec"]["versions"][0]["schema"]


def test_operator_and_agents_as_the_chart_declares_them_back_up_restore_and_cancel(
    env: Env, storage_servers: dict[str, StorageServer], tmp_path: Path
) -> None:
    """Installs the chart into the test's namespace, watching only it (Role, not ClusterRole)."""
    s3 = storage_servers["s3"].env()
    token = secrets.token_urlsafe(36)
    values = {
        "operator": {"watchNamespaces": [env.namespace], "tickSeconds": 1},
        "agent": {"token": {"value": token}},
        "backups": {
            "filesystem": {
                "enabled": True,
                "envconfig": {"BACKUP_FILESYSTEM_PATH": FS_PATH},
                "volume": {"hostPath": {"path": str(env.backups)}},
            },
            "s3": {
                "enabled": True,
                "envconfig": {k: v for k, v in s3.items() if not k.startswith("AWS_") or k == "AWS_REGION"},
                "secrets": {k: s3[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
            },
        },
    }
    release = "sk"
    rendered = render_with_agent(
        values,
        workdir=tmp_path,
        data_path="/var/lib/sampledb",
        release=release,
        namespace=env.namespace,
    )
    # What `helm install` sends (the database StatefulSet is the testbed's, created below).
    manifest = tmp_path / "install.yaml"
    manifest.write_text(rendered.yaml({o["kind"] for o in rendered.objects} - {"StatefulSet"}))
    env.cp.kubectl("apply", "-n", env.namespace, "-f", str(manifest))

    assert not rendered.all("ClusterRole") and not rendered.all("ClusterRoleBinding")
    deployment = rendered.find("Deployment")["spec"]["template"]["spec"]
    sts = rendered.find("StatefulSet", "sampledb")["spec"]["template"]["spec"]
    mounts = tmp_path / "mounts"
    operator_run = container_run(
        rendered,
        deployment,
        "operator",
        namespace=env.namespace,
        mounts_root=mounts / "operator",
        host_paths={FS_PATH: env.backups},
    )
    agent_run = container_run(
        rendered,
        sts,
        "shardkeeper-agent",
        namespace=env.namespace,
        mounts_root=mounts / "agent",
        host_paths={FS_PATH: env.backups},
    )
    assert agent_run.field_refs == {"POD_NAME": "metadata.name"}
    assert agent_run.args[:3] == ["agent", "--data-root", "/var/lib/sampledb"]
    assert Path(agent_run.env["SHARDKEEPER_AGENT_TOKEN_FILE"]).read_text() == token
    assert operator_run.env["AWS_SECRET_ACCESS_KEY"] == s3["AWS_SECRET_ACCESS_KEY"]

    # The agents get exactly the chart's environment (the testbed supplies pod name, data root,
    # listen address and hook, as a kubelet and the pod's network would).
    env.backend_env = dict(agent_run.env)
    env.token_file = Path(agent_run.env["SHARDKEEPER_AGENT_TOKEN_FILE"])
    source = env.make_cluster(value_size=4096)
    source.fill({"articles": [0, 1, 2], "users": [0, 1]}, keys=600)
    target_ns = env.namespace  # same namespace: one Role covers both clusters
    target = env.make_cluster(name="replica", namespace=target_ns)

    sa = rendered.find("ServiceAccount")["metadata"]
    env.operator = OperatorProcess(
        env.cp,
        env.root / "operator",
        Path(operator_run.env.pop("SHARDKEEPER_AGENT_TOKEN_FILE")),
        [],  # the chart's args carry --namespace
        env=operator_run.env,
        identity=(sa["namespace"], sa["name"]),
    )
    assert f"--namespace={env.namespace}" in operator_run.args
    env.operator.start(extra_args=[a for a in operator_run.args if a.startswith("--namespace")])

    env.apply(backup_manifest("via-chart", backend="s3", id=f"chart-{env.namespace}"))
    done = env.wait_phase("backup", "via-chart", "SUCCESS", "FAILED", timeout=120)
    assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")

    mapping = {f"sampledb-{i}": f"replica-{i}" for i in range(3)}
    env.apply(
        restore_manifest(
            "via-chart", f"chart-{env.namespace}", backend="s3", cluster="replica", nodeMapping=mapping
        )
    )
    restored = env.wait_phase("restore", "via-chart", "SUCCESS", "FAILED", timeout=120)
    assert restored["status"]["phase"] == "SUCCESS", restored["status"].get("error")
    for i in range(3):
        collections = source.db(i, "GET", "/collections")
        assert sorted(target.db(i, "GET", "/collections")) == sorted(collections)
        for c in collections:
            assert target.summary(i, c)["digest"] == source.summary(i, c)["digest"]

    # Cancel, on the filesystem backend through the chart's shared volume, with slowed agents.
    for i in range(3):
        source.kill_agent(i)
        source.node_env[i] = {"SHARDKEEPER_MAX_BYTES_PER_SECOND": "300000"}
        source.start_agent(i)
    env.apply(backup_manifest("cancel-me"))
    env.wait_for("backup", "cancel-me", lambda o: o.get("status", {}).get("bytesDone", 0) > 0, timeout=60)
    env.apply(backup_manifest("cancel-me", cancel=True))
    canceled = env.wait_phase("backup", "cancel-me", "CANCELED", "SUCCESS", "FAILED", timeout=60)
    assert canceled["status"]["phase"] == "CANCELED"
    assert env.agents_free()

    log = env.operator.logs()
    assert not re.search(r"Forbidden|(?<![.\d])403(?![.\d])", log), log[-3000:]


def test_the_copy_paste_agent_example_matches_the_named_template(tmp_path: Path) -> None:
    """examples/statefulset-with-agent.yaml is for users without Helm; it must not drift from the
    sidecar the chart's named templates render with default values."""
    example = yaml.safe_load((REPO / "examples" / "statefulset-with-agent.yaml").read_text())
    pod = example["spec"]["template"]["spec"]
    rendered = render_with_agent(
        {},
        workdir=tmp_path,
        data_volume="data",
        data_path="/var/lib/sampledb",
        hook_url="http://127.0.0.1:8080/hook",
    )
    from_chart = rendered.find("StatefulSet", "sampledb")["spec"]["template"]["spec"]
    agent = next(c for c in from_chart["containers"] if c["name"] == "shardkeeper-agent")
    assert next(c for c in pod["containers"] if c["name"] == "shardkeeper-agent") == agent
    assert [v for v in pod["volumes"] if v["name"].startswith("shardkeeper-")] == from_chart["volumes"]


@pytest.mark.parametrize("mode", ["shared", "perNamespace"])
def test_per_namespace_credentials_keep_the_operators_keys_out_of_database_namespaces(
    tmp_path: Path, mode: str
) -> None:
    values = _values(("s3", "gcs"))
    values["backups"]["agentCredentials"] = mode
    rendered = render_with_agent(values, workdir=tmp_path)
    for name in ("shardkeeper-backup-s3", "shardkeeper-backup-gcs"):
        # The operator always has its keys; a database namespace only in "shared" mode.
        assert rendered.find("Secret", name, "shardkeeper-system")["data"]
        assert len(rendered.all("Secret", name, "databases")) == (1 if mode == "shared" else 0)
    # Either way the sidecar finds the keys by the same names, in its own pod's namespace: there,
    # in perNamespace mode, they are that namespace's own Secret.
    pod = rendered.find("StatefulSet", "sampledb")["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "shardkeeper-agent")
    assert {"secretRef": {"name": "shardkeeper-backup-s3"}} in agent["envFrom"]
    gcs = next(v for v in pod["volumes"] if v["name"] == "shardkeeper-gcp-credentials")
    assert gcs["secret"]["secretName"] == "shardkeeper-backup-gcs"
    # The ConfigMap (no secrets in it) and the agent token still go everywhere.
    assert rendered.find("ConfigMap", "shardkeeper-backups", "databases")
    assert rendered.find("Secret", "shardkeeper-agent-token", "databases")


@pytest.mark.parametrize(
    ("agent_namespaces", "where"), [(["databases"], "databases"), ([], "<your database namespace>")]
)
def test_the_install_notes_apply_the_first_backup_where_the_database_runs(
    agent_namespaces: list[str], where: str
) -> None:
    values = ["--set", "backups.s3.enabled=true", "--set", "backups.s3.envconfig.BACKUP_S3_BUCKET=b"]
    if agent_namespaces:
        values += ["--set", f"agent.namespaces={{{','.join(agent_namespaces)}}}"]
    out = helm("install", "sk", str(CHART), "-n", "shardkeeper-system", "--dry-run=client", *values)
    notes = out.stdout.split("NOTES:", 1)[1]
    assert f"kubectl apply -n {where} -f -" in notes
    assert f"kubectl wait -n {where} --for=condition=Finished backups.shardkeeper.io/first-backup" in notes
    assert "backend: s3" in notes
    assert "kubectl apply -n shardkeeper-system" not in notes
    # Every file it points at is a URL, not a path in a repository the user may not have.
    example = re.search(r"(\S*examples/statefulset-with-agent\.yaml)", notes)
    assert example and example.group(1).startswith("https://"), notes
    assert "helm show crds" in notes


def test_the_install_notes_warn_about_what_the_user_must_still_do() -> None:
    out = helm(
        *("install", "sk", str(CHART), "-n", "shardkeeper-system", "--dry-run=client"),
        *("--set", "backups.s3.enabled=true", "--set", "backups.s3.envconfig.BACKUP_S3_BUCKET=b"),
        *(
            "--set",
            "backups.s3.secrets.AWS_ACCESS_KEY_ID=a",
            "--set",
            "backups.s3.secrets.AWS_SECRET_ACCESS_KEY=s",
        ),
        *("--set", "backups.agentCredentials=perNamespace"),
        *("--set", "operator.watchNamespaces={db2}", "--set", "agent.namespaces={db1}"),
    )
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "create Secret shardkeeper-backup-s3 (keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)" in notes
    assert "agent namespace db1 is not in operator.watchNamespaces" in notes
    bare = helm("install", "sk", str(CHART), "-n", "shardkeeper-system", "--dry-run=client").stdout
    assert "Enable a backend first" in bare and "backend: filesystem" not in bare


def _write(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)
