#!/usr/bin/env bash
# Create or refresh .venv: the CPU build of torch first (an unpinned torch pulls a multi-GB CUDA
# build), then FedIoT with its dev tools. Re-runs only when pyproject.toml changed; pip's output
# goes to .venv/setup.log and is shown only if something fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.fediot-setup
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setting up .venv (the first time takes a minute or two)..." >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
log=.venv/setup.log
if ! {
    .venv/bin/python -m pip install --upgrade pip &&
    .venv/bin/python -m pip install "torch==2.13.0" &&
    .venv/bin/python -m pip install -e ".[dev]"
} >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup failed; full log: $log" >&2
    exit 1
fi
echo "$want" > "$stamp"
