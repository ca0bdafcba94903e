"""CustomResourceDefinitions generated from the pydantic models.

The models are the one source of the schema; ``crds/*.yaml`` are generated from them
(``shardkeeper crds --write``) and a unit test fails when the committed files drift.

Kubernetes wants a *structural* OpenAPI v3 schema: no ``$ref``, no ``anyOf`` around optional
fields, ``type`` everywhere. ``structural()`` turns pydantic's JSON Schema into that.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pydantic import BaseModel

from shardkeeper import conventions as c
from shardkeeper.api.backup import BACKUP_ROOT_RULES, BackupSpec, BackupStatus
from shardkeeper.api.restore import RestoreSpec, RestoreStatus
from shardkeeper.api.schedule import SCHEDULE_NAME_MAX, BackupScheduleSpec, BackupScheduleStatus

Schema = dict[str, Any]

_DROP_KEYS = {"title"}


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", ...) is None:
            del rest["default"]
        return _resolve({**options[0], **rest}, defs)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP_KEYS or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        elif key == "default" and value is None:
            continue
        elif key == "description" and isinstance(value, str):
            out[key] = _paragraphs(value)
        else:
            out[key] = _resolve(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("format") == "date-time":
        out["type"] = "string"
    return out


def structural(model: type[BaseModel]) -> Schema:
    """The model's JSON Schema as a Kubernetes structural schema (aliases on, refs inlined)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    resolved: Schema = _resolve(raw, defs)
    return resolved


#: The only spec fields that may change after creation: a cancel request, and what deleting the
#: object does to its data (like a PersistentVolume's reclaim policy).
MUTABLE_SPEC_FIELDS = frozenset({"cancel", "deletionPolicy"})


def _immutability_rules(spec: Schema, *, mutable: frozenset[str]) -> list[Schema]:
    """One rule per field, so that the API server's message names the field that changed."""
    rules: list[Schema] = []
    allowed = " and ".join(f"spec.{m}" for m in sorted(mutable & set(spec["properties"])))
    for name in sorted(spec["properties"]):
        if name in mutable:
            continue
        rules.append(
            {
                "rule": f"has(self.{name}) == has(oldSelf.{name}) && "
                f"(!has(self.{name}) || self.{name} == oldSelf.{name})",
                "message": f"spec.{name} is immutable: only {allowed} may change after creation",
                "fieldPath": f".{name}",
            }
        )
    return rules


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    columns: list[Schema],
    mutable: frozenset[str] | None = MUTABLE_SPEC_FIELDS,
    root_rules: list[Schema] | None = None,
) -> Schema:
    """``mutable``: the spec fields that may change after creation; None: all of them. ``root_rules``:
    CEL rules on the whole object (they can read ``metadata.name``)."""
    spec = structural(spec_model)
    spec["description"] = _doc(spec_model)
    if mutable is not None:
        spec.setdefault("x-kubernetes-validations", []).extend(_immutability_rules(spec, mutable=mutable))
    status = structural(status_model)
    status["description"] = _doc(status_model)
    # Defaults in status would be written by the API server on every read; status is ours alone.
    _strip_defaults(status)
    root: Schema = {
        "type": "object",
        "description": (spec_model.__doc__ or kind).strip().splitlines()[0],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"{c.API_VERSION}"},
            "kind": {"type": "string", "description": kind},
            # The API server forbids anything here but name and generateName rules; kubectl explain
            # shows ObjectMeta's own descriptions.
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if root_rules:
        root["x-kubernetes-validations"] = copy.deepcopy(root_rules)
    crd_spec: Schema = {
        "group": c.GROUP,
        "scope": "Namespaced",
        "names": {
            "kind": kind,
            "listKind": f"{kind}List",
            "plural": plural,
            "singular": kind.lower(),
            "shortNames": short_names,
            "categories": ["shardkeeper"],
        },
        "versions": [
            {
                "name": c.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": root},
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{c.GROUP}"},
        "spec": crd_spec,
    }


#: On every CRD: a digest of its spec. The chart refuses an upgrade while the cluster serves CRDs
#: with another digest (Helm installs ``crds/`` once and never upgrades them).
SCHEMA_HASH_ANNOTATION = f"{c.GROUP}/schema-hash"


def schema_hash(crd_spec: Schema) -> str:
    """The first 16 hex digits of the sha256 of the spec as canonical JSON (sorted keys)."""
    canonical = json.dumps(crd_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _paragraphs(text: str) -> str:
    """Docstring text as kubectl explain should wrap it: blank-line-separated paragraphs, each one line."""
    blocks = text.strip().split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in block.splitlines()) for block in blocks)


def _doc(model: type[BaseModel]) -> str:
    """A model's docstring as one paragraph per blank-line-separated block."""
    return _paragraphs(model.__doc__ or "")


def _strip_defaults(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("default", None)
        for value in node.values():
            _strip_defaults(value)
    elif isinstance(node, list):
        for item in node:
            _strip_defaults(item)


def _columns(*first: Schema, extra: list[Schema] | None = None) -> list[Schema]:
    """``kubectl get`` columns: what the operation is on, how far it got, and why it failed."""
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        *first,
        {"name": "Cluster", "type": "string", "jsonPath": ".spec.cluster"},
        {"name": "Backend", "type": "string", "jsonPath": ".spec.backend"},
        {"name": "Collections", "type": "integer", "jsonPath": ".status.collectionCount"},
        {"name": "Size", "type": "string", "jsonPath": ".status.size"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
        {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Error", "type": "string", "jsonPath": ".status.error"},
        {"name": "Path", "type": "string", "jsonPath": ".status.path", "priority": 1},
        {"name": "Throughput", "type": "string", "jsonPath": ".status.throughput", "priority": 1},
        *(extra or []),
    ]


def backup_crd() -> Schema:
    return _crd(
        kind=c.BACKUP_KIND,
        plural=c.BACKUP_PLURAL,
        short_names=["skb"],
        spec_model=BackupSpec,
        status_model=BackupStatus,
        columns=_columns(
            extra=[
                {"name": "Consistency", "type": "string", "jsonPath": ".spec.consistency", "priority": 1},
                {
                    "name": "Consistent At",
                    "type": "string",
                    "jsonPath": ".status.consistentAt",
                    "priority": 1,
                },
                {"name": "Max Pause ms", "type": "number", "jsonPath": ".status.maxPauseMs", "priority": 1},
            ]
        ),
        root_rules=BACKUP_ROOT_RULES,
    )


def restore_crd() -> Schema:
    return _crd(
        kind=c.RESTORE_KIND,
        plural=c.RESTORE_PLURAL,
        short_names=["skr"],
        spec_model=RestoreSpec,
        status_model=RestoreStatus,
        columns=_columns({"name": "Backup", "type": "string", "jsonPath": ".spec.backupId"}),
    )


def backupschedule_crd() -> Schema:
    crd = _crd(
        kind=c.SCHEDULE_KIND,
        plural=c.SCHEDULE_PLURAL,
        short_names=["sks"],
        spec_model=BackupScheduleSpec,
        status_model=BackupScheduleStatus,
        columns=[
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Cluster", "type": "string", "jsonPath": ".spec.template.cluster"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Last Success", "type": "date", "jsonPath": ".status.lastSuccessfulTime"},
            {"name": "Next Run", "type": "string", "jsonPath": ".status.nextScheduleTime"},
            {"name": "Kept", "type": "integer", "jsonPath": ".status.backups"},
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Time Zone", "type": "string", "jsonPath": ".spec.timeZone", "priority": 1},
            {"name": "Missed", "type": "integer", "jsonPath": ".status.missedRuns", "priority": 1},
        ],
        mutable=None,
    )
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    template = root["properties"]["spec"]["properties"]["template"]["properties"]
    template["id"]["description"] = "Must not be set: each Backup's id is its name (<schedule>-<slot>)."
    template["cancel"]["description"] = "Must not be set: suspend the schedule (spec.suspend) instead."
    # Children are named "<schedule>-<slot>" and labelled with the schedule's name.
    root["x-kubernetes-validations"] = [
        {
            "rule": f"size(self.metadata.name) <= {SCHEDULE_NAME_MAX} && "
            "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "message": f"a BackupSchedule's name must be a DNS label of at most {SCHEDULE_NAME_MAX} "
            "characters (lowercase letters, digits and '-'): its Backups are named after it",
        }
    ]
    return crd


def all_crds() -> dict[str, Schema]:
    """File name -> CRD, as committed under ``crds/``, each annotated with its schema hash."""
    crds = {
        f"{c.BACKUP_PLURAL}.{c.GROUP}.yaml": backup_crd(),
        f"{c.RESTORE_PLURAL}.{c.GROUP}.yaml": restore_crd(),
        f"{c.SCHEDULE_PLURAL}.{c.GROUP}.yaml": backupschedule_crd(),
    }
    for crd in crds.values():
        crd["metadata"]["annotations"] = {SCHEMA_HASH_ANNOTATION: schema_hash(crd["spec"])}
    return crds
