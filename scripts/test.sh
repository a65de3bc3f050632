#!/usr/bin/env bash
# The test command: lint, types, layer contracts, then the whole pytest suite (unit, real gRPC,
# real control plane, real node, real Spark). Run after scripts/bootstrap.sh (`make test` does both).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";          ruff check src tests bench
echo "== mypy (strict)"; mypy
echo "== import-linter"; lint-imports
echo "== pytest";        pytest "$@"
