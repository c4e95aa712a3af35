#!/usr/bin/env bash
# Agent footprint: one agent daemon holding 100 certificates (the Machine template plus 99
# more autoenroll templates), then idle for 60 s. Prints resident memory (VmRSS, VmHWM),
# threads and the CPU time the process used while idle (from /proc).
# Usage: bench/agent-footprint.sh [IDLE_SECONDS]   (AGENT_BIN=... AUTOENROLL_BIN=... for other builds)
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-60}
# AUTOENROLL_BIN / AGENT_BIN: measure other builds (e.g. an older commit) instead.
if [ -z "${AGENT_BIN:-}" ]; then
  cargo build --release --quiet -p autoenroll-cli
  cargo build --profile agent --quiet -p autoenroll-agent-bin
fi
bin=${AUTOENROLL_BIN:-$PWD/target/release/autoenroll}
agent_bin=${AGENT_BIN:-$PWD/target/agent/autoenroll-agent}
ls -l "$agent_bin" | awk '{printf "agent binary: %.1f MiB\n", $5 / 1048576}'
work=$(mktemp -d)
agent_pid=""
trap 'kill $server_pid $agent_pid 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" server run --listen 127.0.0.1:0 --data-dir "$work/data" > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
for _ in $(seq 1 100); do grep -q "root CA" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
base=$(head -1 "$work/server.out" | awk '{print $NF}')
echo 'correct horse battery' | "$bin" server account create bench --data-dir "$work/data" > /dev/null
# The WebServer default template is not autoenrolled by agents; Machine is. 99 more:
for i in $(seq -w 1 99); do
  "$bin" server template create "Dev$i" --validity 30d --renewal-period 7d --data-dir "$work/data" > /dev/null
done
cat > "$work/agent.toml" <<TOML
device = "footprint.example.test"
state_dir = "$work/state"
trust_anchor = "$work/data/ca/root.pem"
[[policy_server]]
url = "$base/xcep"
[credentials]
username = "bench"
password = "correct horse battery"
TOML
AUTOENROLL_LOG=warn "$agent_bin" run --config "$work/agent.toml" > "$work/agent.out" 2>&1 &
agent_pid=$!
for _ in $(seq 1 600); do
  n=$( (ls "$work/state/live" 2>/dev/null || true) | wc -l)
  [ "$n" -ge 100 ] && break
  sleep 0.2
done
n=$(ls "$work/state/live" | wc -l)
echo "agent holds $n live certificates"
sleep 2
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
before=$(cpu)
sleep "$idle"
after=$(cpu)
grep -E "VmRSS|VmHWM|RssAnon|RssFile|Threads" "/proc/$agent_pid/status"
# Private memory: what this process alone costs (shared library pages excluded).
awk '/^Private_(Clean|Dirty)/ {s += $2} END {printf "private: %.1f MiB\n", s / 1024}' "/proc/$agent_pid/smaps_rollup"
# Where the resident pages are: per mapping (the binary's code and data, the heap, stacks, libc,
# the loader, anonymous mappings), in KiB.
echo "resident by mapping (KiB):"
awk -v bin="$(readlink -f "$agent_bin")" '
  /^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "") ? "[anonymous]" : $6; perms = $2;
    if (name == bin) name = "agent binary " perms; else if (name ~ /libc\.so/) name = "libc " perms;
    else if (name ~ /ld-linux/) name = "loader"; else if (name ~ /^\//) name = "other file " name; next }
  /^Rss:/ { rss[name] += $2 }
  END { for (n in rss) if (rss[n] > 0) printf "  %-28s %6d\n", n, rss[n] }' "/proc/$agent_pid/smaps" | sort -k1,1
awk -v b="$before" -v a="$after" -v t="$ticks" -v s="$idle" \
  'BEGIN { printf "CPU while idle for %d s: %.2f s (%d ticks)\n", s, (a - b) / t, a - b }'
# The same agent resting in its own image (rest_in_fresh_process = false): what the cycle
# itself costs at its peak (VmHWM) and what an in-process rest keeps resident. All 100
# certificates are held: a steady-state cycle (policy, check-in, nothing due).
kill "$agent_pid" 2>/dev/null || true
wait "$agent_pid" 2>/dev/null || true
sed 's/^\[\[policy_server\]\]/rest_in_fresh_process = false\n[[policy_server]]/' "$work/agent.toml" > "$work/agent-inproc.toml"
AUTOENROLL_LOG=info "$agent_bin" run --config "$work/agent-inproc.toml" > "$work/agent-inproc.out" 2>&1 &
agent_pid=$!
for _ in $(seq 1 300); do grep -q "sleeping" "$work/agent-inproc.out" 2>/dev/null && break; sleep 0.1; done
sleep 2
echo "resting in its own image (rest_in_fresh_process = false), after one steady-state cycle:"
grep -E "VmRSS|VmHWM" "/proc/$agent_pid/status"
awk '/^Private_(Clean|Dirty)/ {s += $2} END {printf "private: %.1f MiB\n", s / 1024}' "/proc/$agent_pid/smaps_rollup"
