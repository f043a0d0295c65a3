#!/usr/bin/env bash
# Single-machine FedIoT: N parallel device clients (device_args.worker_num = N) on the
# embedded testbed, as configured in config_simulation/fedml_config.yaml.
# Usage: ./run_simulation.sh [N] [extra `fediot simulate` options]
set -euo pipefail
cd "$(dirname "$0")"
workers="${1:-9}"
shift || true
exec ./fediot simulate --config config_simulation/fedml_config.yaml --workers "$workers" "$@"
