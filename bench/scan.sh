#!/usr/bin/env bash
# Renewal-scan benchmark on both backends: RECORDS synthetic certificate records (default 10
# million), then "next 1000 due for renewal" and the check-in lookup by thumbprint through the
# Store API beside the same SQL run raw. PostgreSQL runs as a private cluster on 127.0.0.1
# (Debian's postgresql; default settings, fsync on), removed afterwards.
# Usage: bench/scan.sh [RECORDS] [sqlite|postgres|both]
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-10000000}
which=${2:-both}
cargo build --release --quiet -p autoenroll-store --example scan
scan=$PWD/target/release/examples/scan

if [ "$which" != postgres ]; then
  "$scan" "$records"
fi
if [ "$which" != sqlite ]; then
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  [ -x "$bin/initdb" ] || { echo "PostgreSQL is missing: apt-get install -y postgresql" >&2; exit 1; }
  dir=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; as_pg=(runuser -u postgres --); fi
  trap '"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
  "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -h 127.0.0.1 -c shared_buffers=1GB" \
    -l "$dir/log" -w start >/dev/null
  "${as_pg[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres scan
  "$scan" "$records" "postgres://postgres@127.0.0.1:$port/scan"
fi
