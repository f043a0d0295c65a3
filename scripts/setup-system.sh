#!/usr/bin/env bash
# System packages the tests use (Debian): bsdtar and unar extract N-BaIoT's RAR archives;
# Chromium renders reports and the dashboard in the browser tests (driven by Playwright).
# Installs what is missing when run as root (CI is); otherwise says what to install.
set -euo pipefail
need=()
command -v bsdtar >/dev/null || need+=(libarchive-tools)
command -v unar >/dev/null || need+=(unar)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} (sudo apt-get install ${need[*]})" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
