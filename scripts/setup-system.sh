#!/usr/bin/env bash
# System packages the tests use (Debian): bsdtar and unar extract N-BaIoT's RAR archives.
# Needs root (CI runs as root); skips what is already there.
set -euo pipefail
need=()
command -v bsdtar >/dev/null || need+=(libarchive-tools)
command -v unar >/dev/null || need+=(unar)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
