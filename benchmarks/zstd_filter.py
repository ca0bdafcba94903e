"""stdin -> stdout zstd filter with python-zstandard (the library the agent uses), single-threaded.

zstd_filter.py LEVEL     compress
zstd_filter.py -d        decompress
"""

import sys

import zstandard

BLOCK = 1 << 20

if __name__ == "__main__":
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    if sys.argv[1] == "-d":
        dobj = zstandard.ZstdDecompressor().decompressobj()
        while block := src.read(BLOCK):
            dst.write(dobj.decompress(block))
    else:
        cobj = zstandard.ZstdCompressor(level=int(sys.argv[1]), write_checksum=True).compressobj()
        while block := src.read(BLOCK):
            dst.write(cobj.compress(block))
        dst.write(cobj.flush())
    dst.flush()
