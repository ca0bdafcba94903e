#!/usr/bin/env bash
# Builds the images `make cluster-e2e` runs, without Docker and without a registry, each cached by
# content in $CACHE/images as a docker-archive tarball (what `ctr images import` takes):
#
#   base      Debian bookworm + python3/pip from Debian's packages (mmdebstrap; no registry image)
#   pause     the pod sandbox image: hack/pause/pause.go, a static Go binary that sleeps until
#             SIGTERM/SIGINT and reaps zombies (stands in for registry.k8s.io/pause)
#   shardkeeper:dev             the project's Dockerfile with --build-arg BASE=<base>
#   shardkeeper-sampledb:dev    deploy/kind/Dockerfile.sampledb with the same base
#
# Builder: buildah (Debian package), its storage in $CACHE/buildah. Needs root. Prints the directory
# holding the four tarballs' symlinks (base.tar, pause.tar, shardkeeper.tar, sampledb.tar).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
OUT=$CACHE/images; mkdir -p "$OUT"
BUILDAH=(buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run" --storage-driver overlay)
log() { echo "build-images: $*" >&2; }
hash_of() { # content hash of files/directories (tracked-or-not, minus bytecode)
  find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}
exec 9>"$CACHE/images.lock"; flock 9   # one build at a time per cache
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

# --- base: mmdebstrap rootfs tarball -> image
BASE_PKGS="python3 python3-pip python-is-python3 ca-certificates"
BASE_RECIPE=1   # bump when the base recipe below changes
BASE_KEY=$(printf '%s\n' "$BASE_RECIPE" "$BASE_PKGS" "$(mmdebstrap --version)" | sha256sum | cut -c1-16)
BASE_REF=localhost/shardkeeper-base:$BASE_KEY
if [ ! -s "$OUT/base-$BASE_KEY.tar" ]; then
  log "base image (mmdebstrap bookworm: $BASE_PKGS)"
  mmdebstrap --variant=minbase --include="${BASE_PKGS// /,}" \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED; rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$T/rootfs.tar" http://deb.debian.org/debian >&2
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$c" "$T/rootfs.tar" / >&2
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "$c"
  "${BUILDAH[@]}" commit --rm "$c" "$BASE_REF" >&2
  "${BUILDAH[@]}" push "$BASE_REF" "docker-archive:$OUT/base-$BASE_KEY.tar.tmp:$BASE_REF" >&2
  mv "$OUT/base-$BASE_KEY.tar.tmp" "$OUT/base-$BASE_KEY.tar"
fi
if ! "${BUILDAH[@]}" inspect --type image "$BASE_REF" >/dev/null 2>&1; then
  id=$("${BUILDAH[@]}" pull -q "docker-archive:$OUT/base-$BASE_KEY.tar" | tail -n1)
  "${BUILDAH[@]}" tag "$id" "$BASE_REF"
fi
ln -sf "base-$BASE_KEY.tar" "$OUT/base.tar"

# --- pause: a static binary in an image from scratch
PAUSE_KEY=$(hash_of hack/pause)
PAUSE_REF=registry.k8s.io/pause:3.10.1
if [ ! -s "$OUT/pause-$PAUSE_KEY.tar" ]; then
  log "pause image (hack/pause/pause.go)"
  (cd hack/pause && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$T/pause" .)
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy "$c" "$T/pause" /pause >&2
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  "${BUILDAH[@]}" commit --rm "$c" "$PAUSE_REF" >&2
  "${BUILDAH[@]}" push "$PAUSE_REF" "docker-archive:$OUT/pause-$PAUSE_KEY.tar.tmp:$PAUSE_REF" >&2
  mv "$OUT/pause-$PAUSE_KEY.tar.tmp" "$OUT/pause-$PAUSE_KEY.tar"
fi
ln -sf "pause-$PAUSE_KEY.tar" "$OUT/pause.tar"

# --- the project's images, from their Dockerfiles
build() { # name ref dockerfile pip-constraints key-files...
  local name=$1 ref=$2 file=$3 constraints=$4; shift 4
  local key; key=$(printf '%s\n' "$BASE_KEY" "$(hash_of "$file" "$@")" "$(sha256sum < "$constraints")" | sha256sum | cut -c1-16)
  [ -f "$file.dockerignore" ] && key=$(printf '%s\n' "$key" "$(hash_of "$file.dockerignore")" | sha256sum | cut -c1-16)
  if [ ! -s "$OUT/$name-$key.tar" ]; then
    log "$ref ($file, base $BASE_REF)"
    # RUN steps see this machine's CA bundle (pip reaches PyPI through its egress proxy); the
    # image keeps Debian's own.
    local ignore=(); [ -f "$file.dockerignore" ] && ignore=(--ignorefile "$file.dockerignore")
    "${BUILDAH[@]}" bud --isolation chroot --network host --layers --pull=never "${ignore[@]}" \
      -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
      -v "$constraints:/etc/pip-constraints.txt:ro" -v "$T/pip.conf:/etc/pip.conf:ro" \
      --build-arg "BASE=$BASE_REF" -f "$file" -t "$ref" . >&2
    "${BUILDAH[@]}" push "$ref" "docker-archive:$OUT/$name-$key.tar.tmp:$ref" >&2
    mv "$OUT/$name-$key.tar.tmp" "$OUT/$name-$key.tar"
    find "$OUT" -name "$name-*.tar" ! -name "$name-$key.tar" -delete   # older builds of this image
  fi
  ln -sf "$name-$key.tar" "$OUT/$name.tar"
}
# Layers no tag refers to any more (earlier builds) go; the cached layers of the current ones stay.
trap 'rm -rf "$T"; "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true' EXIT
# pip constraints for RUN steps (mounted as /etc/pip.conf, not kept in the image): the versions
# the project's .venv resolved, so the image carries what the tests ran against, and Debian's pip
# 23.0 does not backtrack through hundreds of boto3 releases. The sample database pins its own.
printf '[global]\nconstraint = /etc/pip-constraints.txt\n' > "$T/pip.conf"
.venv/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^(pip|setuptools|wheel)==' > "$T/venv.txt"
: > "$T/none.txt"
build shardkeeper docker.io/library/shardkeeper:dev Dockerfile "$T/venv.txt" pyproject.toml README.md operator
build sampledb docker.io/library/shardkeeper-sampledb:dev deploy/kind/Dockerfile.sampledb "$T/none.txt" testbed/__init__.py testbed/sampledb.py testbed/rocks.py testbed/transfers.py
echo "$OUT"
