"""An independent reader of backups in the filesystem backend, for tests.

It uses only the standard library's tarfile and gzip (zstandard for zstd chunks, blake3 for the
chunk checksums of format 4), never the product's unpack code, so a test that passes through it
proves that a plain reader can restore.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import rocksdict
import zstandard

from testbed.sampledb import value_for


@dataclass
class NodeBackup:
    node: str
    descriptor: dict[str, Any]
    files: dict[str, bytes]  # path relative to data root -> content


def _decompress(codec: str, data: bytes) -> bytes:
    if codec == "gzip":
        return gzip.decompress(data)
    if codec == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert codec == "none", codec
    return data


def _entry_path(entry: dict[str, Any]) -> str:
    if "path" in entry:
        return str(entry["path"])
    return base64.b64decode(entry["pathB64"]).decode("utf-8", "surrogateescape")


def read_backup(root: Path) -> tuple[dict[str, Any], dict[str, NodeBackup]]:
    """Reads and verifies every chunk and file checksum of the backup at ``root`` (= <path>/<id>).
    Regular files only (format 2 entries of type file, or format 1 files); sparse files come back
    whole (tarfile reads GNU sparse 1.0)."""
    global_descriptor = json.loads((root / "backup_config.json").read_text())
    nodes: dict[str, NodeBackup] = {}
    for node in global_descriptor["nodes"]:
        descriptor = json.loads((root / node / "backup.json").read_text())
        files: dict[str, bytes] = {}
        for collection in descriptor["collections"]:
            by_chunk: dict[int, dict[str, bytes]] = {}
            for chunk in collection["chunks"]:
                holder = root.parent / chunk["backup"] if chunk.get("backup") else root  # incremental
                stored = (holder / node / chunk["key"]).read_bytes()
                if "blake3" in chunk:  # format 4 on
                    assert blake3.blake3(stored).hexdigest() == chunk["blake3"], (
                        f"chunk {chunk['key']} checksum"
                    )
                else:
                    assert hashlib.sha256(stored).hexdigest() == chunk["sha256"], (
                        f"chunk {chunk['key']} checksum"
                    )
                assert len(stored) == chunk["size"]
                raw = _decompress(descriptor["codec"], stored)
                assert len(raw) == chunk["rawSize"]
                members = by_chunk.setdefault(chunk["n"], {})
                with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", errors="surrogateescape") as tar:
                    for member in tar.getmembers():
                        if member.isreg():
                            extracted = tar.extractfile(member)
                            assert extracted is not None
                            members[member.name] = extracted.read()
            listed = collection.get("entries") or [{**f, "type": "file"} for f in collection["files"]]
            for entry in listed:
                if entry["type"] != "file":
                    continue
                path = _entry_path(entry)
                content = by_chunk[entry["chunk"]][path]  # from the chunk the descriptor names
                assert len(content) == entry["size"], path
                assert hashlib.sha256(content).hexdigest() == entry["sha256"], f"file {path} checksum"
                files[path] = content
        nodes[node] = NodeBackup(node=node, descriptor=descriptor, files=files)
    return global_descriptor, nodes


def materialize(node: NodeBackup, target: Path) -> None:
    for path, content in node.files.items():
        dest = target / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)


def check_collection(path: Path, collection: str, node: str, value_size: int) -> int:
    """Opens a materialized collection with RocksDB; asserts its keys are exactly s0..sN with the
    values the writers wrote. Returns N + 1 (the number of records)."""
    opts = rocksdict.Options(raw_mode=True)
    db = rocksdict.Rdict(str(path), opts)
    try:
        expected = 0
        for key, value in db.items():
            seq = int(key[1:].decode())
            assert seq == expected, f"{collection}@{node}: gap before seq {seq} (expected {expected})"
            assert value == value_for(collection, node, seq, value_size), (
                f"{collection}@{node}: value of {seq}"
            )
            expected += 1
        return expected
    finally:
        db.close()


def ledger_seqs(path: Path, collection: str, value_size: int) -> set[int]:
    """Sequence numbers in a materialized collection written by a cluster-wide writer (one sequence
    spread over every node); checks each value on the way."""
    db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
    try:
        seqs = set()
        for key, value in db.items():
            seq = int(key[1:].decode())
            assert value == value_for(collection, "cluster", seq, value_size), f"{collection}: value of {seq}"
            seqs.add(seq)
        return seqs
    finally:
        db.close()


def collection_digest(path: Path) -> tuple[int, str]:
    """(records, sha256 over every key=value in key order), as the sample database's summary reports it."""
    db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
    try:
        digest, count = hashlib.sha256(), 0
        for key, value in db.items():
            digest.update(key + b"=" + value + b";")
            count += 1
        return count, digest.hexdigest()
    finally:
        db.close()


def expected_contents(backups: Path, backup_id: str, scratch: Path) -> dict[str, dict[str, tuple[int, str]]]:
    """node -> collection -> (records, digest) of what the backup holds, read with plain readers."""
    _, nodes = read_backup(backups / backup_id)
    out: dict[str, dict[str, tuple[int, str]]] = {}
    for name, node in nodes.items():
        materialize(node, scratch / name)
        out[name] = {
            c["name"]: collection_digest(scratch / name / c["name"]) for c in node.descriptor["collections"]
        }
    return out
