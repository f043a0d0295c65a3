#!/usr/bin/env bash
# FedIoT device N (1–9): a Flower SuperNode serving that device's data to the server, over TLS
# (checked against certs/ca.crt) with its node key certs/devices/device-N.key, and one warm
# worker running every task with the device's data loaded once.
# Usage: ./run_client.sh N [extra `fediot client` options, e.g. --server HOST:PORT,
#        --root-certificates ca.crt --node-key device-N.key; --worker subprocess: Flower's
#        process per task; --insecure: loopback only]
set -euo pipefail
cd "$(dirname "$0")"
[ $# -ge 1 ] || { echo "usage: $0 N   (N = device id 1–9)" >&2; exit 2; }
device="$1"
shift
exec ./fediot client --device "$device" "$@"
