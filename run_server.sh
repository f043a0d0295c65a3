#!/usr/bin/env bash
# FedIoT server: a Flower SuperLink plus the FedDetect run, configured by config/fedml_config.yaml.
# TLS and device (SuperNode) authentication are on: it reads certs/ (ca.crt, server.pem,
# server.key, devices/*.pub), made once with `scripts/make-certs.sh certs HOST...`.
# Start it, then ./run_client.sh 1 … ./run_client.sh 9 (on the devices, or in other terminals).
# Usage: ./run_server.sh [extra `fediot server` options, e.g. --host 0.0.0.0 --certificates DIR;
#        --insecure: plain HTTP, loopback only; --resume runs/RUN after a crash;
#        --stop-stale: stop what a crashed session left running, then exit]
set -euo pipefail
cd "$(dirname "$0")"
exec ./fediot server --config config/fedml_config.yaml "$@"
