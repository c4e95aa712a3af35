#!/usr/bin/env bash
# End-to-end enrollment timing with the release binary: a server on loopback, then N fresh
# agents (new state directory each) running one cycle that enrolls both default templates
# (policy + 2 x (key generation, CSR, WSTEP issue, verification, atomic install)).
# Usage: bench/enroll.sh [N]   Prints per-run wall times and the median.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
cargo build --release --quiet
bin=target/release/autoenroll
work=$(mktemp -d)
trap 'kill $server_pid 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" server run --listen 127.0.0.1:0 --data-dir "$work/data" > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
base=$(head -1 "$work/server.out" | awk '{print $NF}')
echo 'correct horse battery' | "$bin" server account create bench --data-dir "$work/data" > /dev/null
times=()
for i in $(seq 1 "$n"); do
  cat > "$work/agent$i.toml" <<TOML
device = "bench$i.example.test"
state_dir = "$work/state$i"
trust_anchor = "$work/data/ca/root.pem"
[[policy_server]]
url = "$base/xcep"
[credentials]
username = "bench"
password = "correct horse battery"
TOML
  start=$(date +%s%N)
  AUTOENROLL_LOG=warn "$bin" agent run --once --config "$work/agent$i.toml" > /dev/null
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000000 )))
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "agent cycles enrolling 2 templates each (ms): ${times[*]}"
echo "median: ${sorted[$((n / 2))]} ms  min: ${sorted[0]} ms  max: ${sorted[$((n - 1))]} ms  (n=$n, includes process start and PBKDF2 password checks)"
