#!/usr/bin/env bash
# Builds the versitygw S3-compatible server (posix backend) from its Go module, once per version,
# into a cache outside the repository; prints the bin directory. Its go.mod has no replace
# directives, so a plain `go install` works.
set -euo pipefail
V=${VERSITYGW_VERSION:-1.7.0}
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
W=$CACHE/versitygw/$V
if [ -x "$W/bin/versitygw" ]; then echo "$W/bin"; exit 0; fi
mkdir -p "$W"
GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$W/bin.tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/versity/versitygw/cmd/versitygw@v$V" >&2
rm -rf "$W/bin" && mv "$W/bin.tmp" "$W/bin"
echo "$W/bin"
