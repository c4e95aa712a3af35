#!/usr/bin/env bash
# Runs the whole test suite. Installs the Debian packages the interop tests need when they are
# missing (needs root or sudo for that); tests whose tool is still missing fail with a message
# that says how to get it - nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v certmonger >/dev/null 2>&1 || need+=(certmonger)
command -v scepclient >/dev/null 2>&1 || need+=(scep)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
command -v pebble-challtestsrv >/dev/null 2>&1 || need+=(pebble)
command -v lego >/dev/null 2>&1 || need+=(lego)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing missing test tools: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

# The metrics tests read /metrics and the agent's textfile with Prometheus' own Python parser.
python3 -c "import prometheus_client" 2>/dev/null || python3 -m pip install -q prometheus_client

# ACME interop runs certbot from PyPI: Debian's is too old for renewal information (RFC 9773
# needs certbot >= 4.1).
if ! certbot --version 2>/dev/null | awk '{split($2, v, "."); exit !(v[1] > 4 || (v[1] == 4 && v[2] >= 1))}'; then
  python3 -m pip install -q "certbot>=4.1" || python3 -m pip install -q --user --break-system-packages "certbot>=4.1"
  hash -r
fi

# The packaging test packages the agent-only binary, which no test target of its own builds.
cargo build --locked -p autoenroll-agent-bin
cargo test --workspace --locked "$@"
