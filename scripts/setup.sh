#!/usr/bin/env bash
# Create or refresh .venv.   Usage: scripts/setup.sh [runtime|dev|device]
#   runtime (default)  torch, then FedIoT with its simulation extra: what ./fediot and run_*.sh need
#   dev                runtime plus the test, lint, type-check, export and MLflow tools (.[dev]):
#                      what run_tests.sh, CI and bench/ need
#   device (--device)  a device only (`fediot client`): FedIoT's base install (.[device]), with
#                      Flower but no Ray and no torch; the device trains with NumPy. (For the
#                      torch path there, pip install torch into .venv the CPU way shown below.)
# torch: PyPI's torch for Linux x86_64 pulls the multi-GB CUDA stack, so there torch comes from
# PyTorch's CPU index (https://download.pytorch.org/whl/cpu, as pytorch.org documents it); if that
# index does not answer within 5 s, from the default index instead. Elsewhere (macOS, aarch64)
# PyPI's wheel is already CPU-only. Set before the first setup (or delete .venv to switch):
#   FEDIOT_TORCH=cuda          torch from the default index (the CUDA build on Linux x86_64)
#   FEDIOT_TORCH_INDEX=URL     torch from this index, e.g. https://download.pytorch.org/whl/cu126
# Re-runs only when pyproject.toml or the mode changed (dev includes runtime); pip's output goes to
# .venv/setup.log and is shown only if something fails.
set -euo pipefail

TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
VENV_PY=${VENV_PY:-.venv/bin/python}

# The index torch comes from; nothing for the default index.
torch_index() {
    if [ -n "${FEDIOT_TORCH_INDEX:-}" ]; then
        echo "$FEDIOT_TORCH_INDEX"
        return
    fi
    case "${FEDIOT_TORCH:-cpu}" in
        cpu) ;;
        cuda) return ;;
        *) echo "FEDIOT_TORCH must be cpu or cuda, not '${FEDIOT_TORCH}'" >&2; return 2 ;;
    esac
    if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ]; then
        echo "$TORCH_CPU_INDEX"
    fi
}

# Whether INDEX answers for torch's page within 5 s (proxies from the environment apply).
index_reachable() {
    "$VENV_PY" - "${1%/}/torch/" >/dev/null 2>&1 <<'PY'
import sys
import urllib.request

urllib.request.urlopen(sys.argv[1], timeout=5).read(1)
PY
}

# Whether the wanted torch is installed already (then pip need not be asked at all).
torch_installed() {
    "$VENV_PY" -c "import importlib.metadata as m, sys; \
sys.exit(m.version('torch').split('+')[0] != sys.argv[1])" "$TORCH_VERSION" 2>/dev/null
}

install_torch() {
    local index
    index=$(torch_index) || return
    if torch_installed; then
        return 0
    fi
    if [ -n "$index" ]; then
        if index_reachable "$index"; then
            "$VENV_PY" -m pip install "torch==$TORCH_VERSION" --index-url "$index" --timeout 15
            return
        fi
        if [ -n "${FEDIOT_TORCH_INDEX:-}" ]; then
            echo "fediot-setup: torch index $index does not answer" >&2
            return 1
        fi
        echo "fediot-setup: $index does not answer; torch from the default index" \
            "(on Linux x86_64 that may be the CUDA build: delete .venv and re-run to retry)" >&2
    fi
    "$VENV_PY" -m pip install "torch==$TORCH_VERSION"
}

main() {
    local mode=${1:-runtime} extra
    case "$mode" in
        runtime) extra=simulation ;;
        dev) extra=dev ;;
        device | --device) mode=device extra=device ;;
        *) echo "usage: scripts/setup.sh [runtime|dev|device]" >&2; exit 2 ;;
    esac
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    local python=${PYTHON:-python3} stamp=.venv/.fediot-setup want have=""
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    [ -f "$stamp" ] && have=$(cat "$stamp")
    # The stamp is "HASH MODE"; a dev venv serves runtime too, and either serves a device.
    if [ "$have" = "$want $mode" ] || [ "$have" = "$want dev" ] ||
        { [ "$mode" = device ] && [ "$have" = "$want runtime" ]; }; then
        exit 0
    fi
    echo "setting up .venv ($mode; the first time takes a minute or two)..." >&2
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    local log=.venv/setup.log
    if ! {
        "$VENV_PY" -m pip install --upgrade pip &&
        { [ "$mode" = device ] || install_torch; } &&
        "$VENV_PY" -m pip install -e ".[$extra]"
    } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "setup failed; full log: $log" >&2
        exit 1
    fi
    grep '^fediot-setup:' "$log" >&2 || true
    echo "$want $mode" > "$stamp"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
