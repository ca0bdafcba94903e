#!/usr/bin/env bash
# Every check CI runs, in order of cost. "hack/test.sh lint" stops after the static checks.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
V=.venv/bin
step() { printf '\n== %s\n' "$*"; }
step "ruff";          $V/ruff check operator testbed tests benchmarks
step "ruff format";   $V/ruff format --check operator testbed tests benchmarks
step "mypy --strict"; $V/mypy operator/shardkeeper benchmarks testbed
step "import layers"; $V/lint-imports
step "hadolint";      $V/hadolint Dockerfile deploy/kind/Dockerfile.sampledb
step "helm lint";     H=$(mktemp -d) && HELM_CACHE_HOME=$H/c HELM_CONFIG_HOME=$H/f HELM_DATA_HOME=$H/d \
                      "$(hack/install-helm.sh)" lint helm/shardkeeper --strict --kube-version 1.34.0; rm -rf "$H"
step "bash -n";       for f in hack/*.sh; do bash -n "$f"; done
step "promtool";      P=$(hack/build-prometheus.sh) && "$P/promtool" check rules helm/shardkeeper/files/prometheus-rules.yaml \
                      && "$P/promtool" test rules tests/rules/prometheus-rules.test.yaml
[ "${1:-}" = lint ] && exit 0
step "pytest";        $V/python -m pytest -p no:cacheprovider --durations=15 "$@"
# The real node cluster last (make cluster-e2e); only in a full run, not with a pytest selection.
if [ $# -eq 0 ]; then step "cluster-e2e"; hack/cluster-e2e.sh; fi
