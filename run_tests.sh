#!/usr/bin/env bash
# Set up system packages and .venv if needed, then lint (ruff), type-check (mypy) and run the tests (pytest).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k extractor
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-system.sh
scripts/setup.sh dev
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
