"""Building blocks shared by the CR, agent and descriptor models."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

ID_PATTERN = r"^[a-z0-9_-]+$"
BACKUP_ID_MAX_LENGTH = 128
#: DNS-1123 label: what a StatefulSet (and so a pod prefix) may be called.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A collection is a top-level directory of a node's data root. One rule decides which directories
#: are collections, everywhere (``collection_name_problem``): any name a Linux filesystem accepts that
#: is valid UTF-8 and does not start with '.' (hidden entries, the agent's own ``.shardkeeper`` among
#: them, are never collections). Selectors name collections with the same characters, plus the
#: wildcards '*' and '?'; every other character, '[' included, matches itself.
SELECTOR_PATTERN = r"^[^./\x00][^/\x00]*$"
#: The longest file name a Linux filesystem accepts (NAME_MAX), in bytes.
NAME_MAX_BYTES = 255

#: CEL rules shared by the Backup and Restore specs (immutability rules are added per field by ``crd``).
OPERATION_SPEC_RULES: dict[str, Any] = {
    "x-kubernetes-validations": [
        {
            "rule": "!(has(self.include) && size(self.include) > 0 && "
            "has(self.exclude) && size(self.exclude) > 0)",
            "message": "spec.include and spec.exclude are mutually exclusive: set at most one of them",
            "fieldPath": ".include",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
            "message": "spec.cancel cannot be unset once it is true",
            "fieldPath": ".cancel",
        },
    ]
}

BackupId = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=BACKUP_ID_MAX_LENGTH)]
Selector = Annotated[
    str,
    Field(
        pattern=SELECTOR_PATTERN,
        min_length=1,
        max_length=NAME_MAX_BYTES,
        description="A collection name, or a pattern: '*' matches any run of characters, '?' one.",
    ),
]


def collection_name_problem(name: str) -> str | None:
    """Why the directory ``name`` (as ``os.listdir`` returns it: undecodable bytes as surrogates)
    cannot be a collection, or None if it is one. The agents apply it to what they hold; the CRD's
    selector pattern is the same rule, so any collection an agent reports can be named in a spec."""
    if not name or name.startswith("."):
        return "hidden names (starting with '.') are never collections"
    if "/" in name or "\x00" in name:
        return "a name holds neither '/' nor NUL"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8, so no Backup or Restore could name it"
    if len(encoded) > NAME_MAX_BYTES:
        return f"the name is longer than {NAME_MAX_BYTES} bytes"
    return None


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are ignored for forward compatibility."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )

    def wire(self) -> dict[str, object]:
        """The JSON-ready form, as the API server, the agents and the backends see it."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Backend(StrEnum):
    FILESYSTEM = "filesystem"
    S3 = "s3"
    GCS = "gcs"
    AZURE = "azure"


class CompressionLevel(StrEnum):
    """Compression settings, named as Weaviate's backup module names them. Which codec and level each
    maps to is decided in ``archive``."""

    DEFAULT = "DefaultCompression"
    BEST_SPEED = "BestSpeed"
    BEST_COMPRESSION = "BestCompression"
    ZSTD_DEFAULT = "ZstdDefaultCompression"
    ZSTD_BEST_SPEED = "ZstdBestSpeed"
    ZSTD_BEST_COMPRESSION = "ZstdBestCompression"
    NONE = "NoCompression"


class Phase(StrEnum):
    """Where the operation is. QUEUED: another operation holds the same cluster; this one waits its
    turn. STARTED: the agents prepare and freeze a snapshot. TRANSFERRING: data moves. TRANSFERRED,
    FINALIZING: the result is being committed. SUCCESS, FAILED, CANCELED (one L): final. CANCELLING:
    a cancel is being carried out."""

    QUEUED = "QUEUED"
    STARTED = "STARTED"
    TRANSFERRING = "TRANSFERRING"
    TRANSFERRED = "TRANSFERRED"
    FINALIZING = "FINALIZING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset({Phase.SUCCESS, Phase.FAILED, Phase.CANCELED})


class DeletionPolicy(StrEnum):
    """What deleting a finished Backup object does to its data in the backend (as a PV's reclaim
    policy: Retain keeps it, Delete removes it). Data another Backup object wrote is never touched."""

    RETAIN = "Retain"
    DELETE = "Delete"


class Consistency(StrEnum):
    """How consistent a backup is across nodes.

    ``node``: each node is a point-in-time snapshot of its own, taken at about the same moment.
    ``cluster``: every node holds writes from its prepare until all nodes have frozen their files,
    so the whole backup is one consistent cut of the cluster (writes pause a little longer).
    """

    NODE = "node"
    CLUSTER = "cluster"


class Condition(Model):
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: str = Field(description="Kind of condition, e.g. Finished, Complete, Failed, Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
        description="Machine-readable reason for the last transition, in CamelCase.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: dt.datetime = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed from."
    )


def error_text(error: Mapping[str, Any]) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as users should read it: without
    pydantic's "Value error, " / "Assertion failed, " prefix for a validator's own message."""
    text = str(error.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        text = text.removeprefix(prefix)
    return text


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB': for printer columns and messages, never for arithmetic."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Codec(StrEnum):
    """The stream format of a chunk, as recorded in descriptors. Any reader of that format restores it."""

    GZIP = "gzip"
    ZSTD = "zstd"
    NONE = "none"


NAMES_IN_MESSAGES = 10
"""How many names a message, Event or error lists before '... and N more'."""
NAME_BYTES_IN_MESSAGES = 64
"""The most a name takes in a message, quoted, in UTF-8 bytes: collection names may have 255."""


def some_of(items: Sequence[str], limit: int = NAMES_IN_MESSAGES, *, total: int | None = None) -> str:
    """``items`` joined for a message, at most ``limit`` of them: 'a, b', or 'a, b, ... and 9998
    more'. ``total``: how many there are, when ``items`` holds only the first of them."""
    count = len(items) if total is None else max(total, len(items))
    shown = items[:limit]
    more = f", ... and {count - len(shown)} more" if count > len(shown) else ""
    return ", ".join(shown) + more


def shown_name(name: str, limit: int = NAME_BYTES_IN_MESSAGES) -> str:
    """``repr(name)``, cut in the middle to at most ``limit`` UTF-8 bytes ("'tenant_a…_v2'"): the
    start and the end stay, where names that share a prefix differ."""
    quoted = repr(name)
    if len(quoted.encode()) <= limit:
        return quoted
    keep = len(quoted) // 2
    while True:
        cut = quoted[:keep] + "…" + quoted[-keep:]
        if keep == 1 or len(cut.encode()) <= limit:
            return cut
        keep -= 1


def listed(names: Sequence[str], limit: int = NAMES_IN_MESSAGES, *, total: int | None = None) -> str:
    """``names`` for a message, at most ``limit`` of them, as Python shows a list: "['a', 'b']", or
    "['a', 'b', ... and 9998 more]"; each cut to ``NAME_BYTES_IN_MESSAGES`` (``shown_name``).
    Messages land in a status (one etcd object) and in Events (a 1 KiB note), so a list as long as
    the data never goes into one whole, nor ten names of 255 bytes."""
    shown = [shown_name(name) for name in names[:limit]]
    return f"[{some_of(shown, limit, total=total or len(names))}]"
