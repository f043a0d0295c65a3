#!/usr/bin/env bash
# Set up .venv if needed, then lint (ruff), type-check (mypy) and run the tests (pytest).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k extractor
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 \
       FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
