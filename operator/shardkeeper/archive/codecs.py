"""Compression codecs, and which one each ``compressionLevel`` means.

Chosen by measurement (see ``benchmarks/``): the seed's "gzip" levels are served by ISA-L's igzip
(``isal``), which writes the standard gzip format an order of magnitude faster than zlib; any gzip
reader restores them. Descriptors record the format (``gzip``), never the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import zstandard
from isal import isal_zlib

from shardkeeper.api.common import Codec, CompressionLevel

_GZIP_WBITS = 16 + 15  # zlib's way of asking for a gzip header and trailer


@dataclass(frozen=True)
class CodecChoice:
    codec: Codec
    level: int


CODEC_FOR_LEVEL: dict[CompressionLevel, CodecChoice] = {
    # isal levels are 0-3; 0 uses static Huffman tables and expands float data, so it is never used.
    CompressionLevel.BEST_SPEED: CodecChoice(Codec.GZIP, 1),
    CompressionLevel.DEFAULT: CodecChoice(Codec.GZIP, 2),
    CompressionLevel.BEST_COMPRESSION: CodecChoice(Codec.GZIP, 3),
    CompressionLevel.ZSTD_BEST_SPEED: CodecChoice(Codec.ZSTD, 1),
    CompressionLevel.ZSTD_DEFAULT: CodecChoice(Codec.ZSTD, 3),
    CompressionLevel.ZSTD_BEST_COMPRESSION: CodecChoice(Codec.ZSTD, 9),
    CompressionLevel.NONE: CodecChoice(Codec.NONE, 0),
}


class Compressor(Protocol):
    def compress(self, data: bytes | memoryview, /) -> bytes | memoryview: ...

    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    def decompress(self, data: bytes | memoryview, /) -> bytes | memoryview: ...


class _Identity:
    def compress(self, data: bytes | memoryview, /) -> bytes | memoryview:
        return data  # no copy: callers only read it

    def decompress(self, data: bytes | memoryview, /) -> bytes | memoryview:
        return data

    def flush(self) -> bytes:
        return b""


class _ZstdCompressor:
    def __init__(self, level: int) -> None:
        self._obj = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()

    def compress(self, data: bytes | memoryview, /) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


def compressor(choice: CodecChoice) -> Compressor:
    if choice.codec is Codec.GZIP:
        gz: Compressor = isal_zlib.compressobj(choice.level, isal_zlib.DEFLATED, _GZIP_WBITS)
        return gz
    if choice.codec is Codec.ZSTD:
        return _ZstdCompressor(choice.level)
    return _Identity()


def decompressor(codec: Codec) -> Decompressor:
    if codec is Codec.GZIP:
        gz: Decompressor = isal_zlib.decompressobj(_GZIP_WBITS)
        return gz
    if codec is Codec.ZSTD:
        zs: Decompressor = zstandard.ZstdDecompressor().decompressobj()
        return zs
    return _Identity()


__all__ = ["CODEC_FOR_LEVEL", "CodecChoice", "compressor", "decompressor"]
