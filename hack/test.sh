#!/usr/bin/env bash
# Every check CI runs, in order of cost. "hack/test.sh lint" stops after the static checks.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/bootstrap.sh
V=.venv/bin
step() { printf '\n== %s\n' "$*"; }
step "ruff";          $V/ruff check operator testbed tests benchmarks
step "ruff format";   $V/ruff format --check operator testbed tests benchmarks
step "mypy --strict"; $V/mypy operator/shardkeeper
step "import layers"; $V/lint-imports
[ "${1:-}" = lint ] && exit 0
step "pytest";        $V/python -m pytest -p no:cacheprovider --durations=15 "$@"
