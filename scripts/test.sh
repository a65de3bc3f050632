#!/usr/bin/env bash
# The test command: lint, types, layer contracts, then the whole pytest suite (unit, real gRPC,
# real control plane, real node, real Spark). Run after scripts/bootstrap.sh (`make test` does both).
#   --lint-only   ruff, mypy --strict and the import contracts only (`make lint`)
#   --unit        the lint, then the pure tests: no control plane, real node, JVM or slow test (`make unit`)
# Any other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
mode=all
case "${1:-}" in
  --lint-only) mode=lint; shift ;;
  --unit) mode=unit; shift ;;
esac
echo "== ruff";          ruff check src tests bench
echo "== mypy (strict)"; mypy
echo "== import-linter"; lint-imports
case $mode in
  lint) ;;
  unit) echo "== pytest (pure)"; pytest -m "not cluster and not real_node and not spark and not slow" "$@" ;;
  all)  echo "== pytest";        pytest "$@" ;;
esac
