#!/usr/bin/env bash
# Set up system packages and .venv if needed, then lint (ruff), type-check (mypy) and run the tests (pytest).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k extractor, or ./run_tests.sh -m "not slow"
# (the fast subset: everything but the tests marked slow).
# The tests run in parallel (pytest-xdist, --dist worksteal) on FEDIOT_TEST_WORKERS processes,
# default one per CPU: measured on 2 cores, 2 workers beat 4 and 6 (the tests compute more than
# they wait, and every worker pays for its own imports and module fixtures).
# FEDIOT_TEST_WORKERS=1 runs them in this one process, as do
# -n 0 / -n N or -p no:xdist among the arguments (those then decide).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-system.sh
scripts/setup.sh dev
.venv/bin/ruff check src tests bench
.venv/bin/mypy

workers="${FEDIOT_TEST_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
    echo "FEDIOT_TEST_WORKERS must be a whole number ≥ 1, not '$workers'" >&2
    exit 2
fi
parallel=(-n "$workers" --dist worksteal)
previous=""
for arg in "$@"; do
    # the caller chose: -n N / --numprocesses N, or xdist switched off (-p no:xdist)
    case "$arg" in
        -n|--numprocesses|-n[0-9]*|--numprocesses=*|-pno:xdist) parallel=() ;;
        no:xdist) [[ "$previous" == "-p" ]] && parallel=() ;;
    esac
    previous="$arg"
done
if [[ "$workers" == 1 ]]; then
    parallel=()
fi
.venv/bin/pytest "${parallel[@]}" "$@"
