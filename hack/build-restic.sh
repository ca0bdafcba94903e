#!/usr/bin/env bash
# Builds restic from its Go module, once per version, into a cache outside the repository; prints the
# bin directory. Only the benchmarks use it (benchmarks/incremental.py compares with its second run).
set -euo pipefail
V=${RESTIC_VERSION:-0.18.1}
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
W=$CACHE/restic/$V
if [ -x "$W/bin/restic" ]; then echo "$W/bin"; exit 0; fi
mkdir -p "$W"
GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$W/bin.tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/restic/restic/cmd/restic@v$V" >&2
rm -rf "$W/bin" && mv "$W/bin.tmp" "$W/bin"
echo "$W/bin"
