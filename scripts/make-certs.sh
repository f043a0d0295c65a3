#!/usr/bin/env bash
# TLS and node-authentication material for a FedIoT deployment, made with Python's
# `cryptography` (no openssl needed): a CA (kept if OUTDIR already has one), the SuperLink's
# certificate naming every HOST (plus localhost, 127.0.0.1, ::1), and a key pair per N-BaIoT
# device (existing ones kept). Private keys are 0600; OUTDIR gets a .gitignore of `*`.
# Usage: scripts/make-certs.sh OUTDIR HOST [HOST...]
#   e.g. scripts/make-certs.sh certs 192.168.1.10 myserver.lan
# Then: the server uses OUTDIR as is (./run_server.sh --certificates OUTDIR --host 0.0.0.0);
# device N needs only OUTDIR/ca.crt and OUTDIR/devices/device-N.key.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR HOST [HOST...]" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
fediot="${FEDIOT:-$root/fediot}"  # tests point this at the venv's own command
outdir="$1"
shift
hosts=()
for host in "$@"; do hosts+=(--host "$host"); done
if [ ! -f "$outdir/ca.key" ]; then
    "$fediot" certs ca --dir "$outdir"
fi
"$fediot" certs server --dir "$outdir" "${hosts[@]}"
"$fediot" certs device --dir "$outdir" --skip-existing
