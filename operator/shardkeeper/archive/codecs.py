"""Compression codecs, and which one each ``compressionLevel`` means.

Chosen by measurement (see ``benchmarks/``): the seed's "gzip" levels are served by ISA-L's igzip
(``isal``), which writes the standard gzip format an order of magnitude faster than zlib; any gzip
reader restores them. Descriptors record the format (``gzip``), never the library.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Protocol, cast

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


class _Identity:
    def compress(self, data: bytes | memoryview, /) -> bytes | memoryview:
        return data  # no copy: callers only read it

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


class _Blocks:
    """A file-like view of an iterator of blocks, for zstandard's streaming reader."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks

    def read(self, _: int = -1) -> bytes:
        return next(self._blocks, b"")


def decompressed(codec: Codec, blocks: Iterator[bytes], *, limit: int = 1 << 20) -> Iterator[bytes]:
    """The decompressed stream of ``blocks``, in pieces of at most ``limit`` bytes however far the
    data expands (a crafted chunk can expand a thousandfold in gzip, far more in zstd), so memory
    stays bounded. Raises the codec's own errors on invalid data; the caller translates them."""
    if codec is Codec.NONE:
        yield from blocks
    elif codec is Codec.GZIP:
        d = isal_zlib.decompressobj(_GZIP_WBITS)
        for block in blocks:
            if d.eof and block:
                raise ValueError("data after the end of the gzip stream")
            data = block
            while data:
                out = d.decompress(data, limit)
                if out:
                    yield out
                data = d.unconsumed_tail
        if not d.eof:
            raise ValueError("the gzip stream is cut short")
    else:
        dctx = zstandard.ZstdDecompressor()
        yield from dctx.read_to_iter(cast("IO[bytes]", _Blocks(blocks)), read_size=limit, write_size=limit)


__all__ = ["CODEC_FOR_LEVEL", "CodecChoice", "compressor", "decompressed"]
