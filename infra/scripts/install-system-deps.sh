#!/usr/bin/env bash
# Installs the Debian packages the project needs (idempotent, quick when already present):
#   clickhouse-server  - the real ClickHouse server for integration tests (clickhouse-driver)
#   chromium           - headless browser for the dashboard's end-to-end test
set -euo pipefail
need=()
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/bin/clickhouse-server ] || need+=(clickhouse-server clickhouse-client)
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
