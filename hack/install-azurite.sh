#!/usr/bin/env bash
# Installs Azurite (the Azure Storage emulator) from npm, once per version, into a cache outside the
# repository; prints the directory holding its executables. 3.35.0 is the last release that runs on
# Node 20 (3.36 requires Node >= 21).
set -euo pipefail
V=${AZURITE_VERSION:-3.35.0}
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
W=$CACHE/azurite/$V
if [ -x "$W/node_modules/.bin/azurite-blob" ]; then echo "$W/node_modules/.bin"; exit 0; fi
mkdir -p "$W"
npm install --prefix "$W" --no-audit --no-fund --loglevel=error "azurite@$V" >&2
echo "$W/node_modules/.bin"
