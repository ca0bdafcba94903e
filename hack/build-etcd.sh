#!/usr/bin/env bash
# Builds the etcd server from its Go module, once per version, into a cache outside the
# repository. Prints the bin directory on stdout. The tagged go.mod files of etcd require real
# versions, so a wrapper module needs no replace directives.
set -euo pipefail
E=${ETCD_VERSION:-3.6.4}
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
W=$CACHE/etcd/$E
if [ -x "$W/bin/etcd" ]; then echo "$W/bin"; exit 0; fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$W" && cd "$W"
printf 'module local/etcdbin\n\ngo 1.24\n' > go.mod
go mod edit -require="go.etcd.io/etcd/server/v3@v$E"
printf '//go:build tools\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
go mod tidy >&2
mkdir -p bin.tmp
go build -trimpath -ldflags "-s -w" -o bin.tmp/etcd go.etcd.io/etcd/server/v3 >&2
rm -rf bin && mv bin.tmp bin
echo "$W/bin"
