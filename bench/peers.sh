#!/usr/bin/env bash
# autoenroll side by side with the tools people use today, driven by the same load generator:
#   WSTEP issuance (autoenroll)  vs  cfssl /api/v1/cfssl/sign with its SQLite store (golang-cfssl)
#   SCEP PKCSReq (autoenroll)     vs  micromdm scepserver (Debian `scep`)
# Same CA key type on both sides: P-256 for autoenroll and cfssl; RSA-2048 for the SCEP pair
# (scepserver only has RSA CAs). Everything on 127.0.0.1; the peers are stopped at the end.
#
#   bench/peers.sh [DURATION]        (default 10s per concurrency level; levels 1, 8, 64)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}

need=()
command -v cfssl >/dev/null 2>&1 || need+=(golang-cfssl)
command -v scepserver >/dev/null 2>&1 || need+=(scep)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
cargo build --release --locked -p autoenroll-cli >/dev/null
AE=$PWD/target/release/autoenroll
W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }

# ---- cfssl: P-256 CA, TLS listener (our generator makes a new TLS connection per request on
# both sides), SQLite certificate store (cfssl's certdb schema).
cd "$W"
echo '{"CN":"cfssl bench CA","key":{"algo":"ecdsa","size":256}}' | cfssl gencert -initca - 2>/dev/null | cfssljson -bare ca
echo '{"CN":"127.0.0.1","hosts":["127.0.0.1"],"key":{"algo":"ecdsa","size":256}}' \
  | cfssl gencert -ca ca.pem -ca-key ca-key.pem - 2>/dev/null | cfssljson -bare tls
cat > signing.json <<'JSON'
{"signing":{"default":{"expiry":"8760h","usages":["digital signature","client auth"]}}}
JSON
sqlite3 certs.db <<'SQL'
CREATE TABLE certificates (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier));
SQL
echo "{\"driver\":\"sqlite3\",\"data_source\":\"$W/certs.db\"}" > db.json
CFSSL_PORT=$(free_port)
cfssl serve -address 127.0.0.1 -port "$CFSSL_PORT" -ca ca.pem -ca-key ca-key.pem -config signing.json \
  -db-config db.json -tls-cert tls.pem -tls-key tls-key.pem -loglevel 5 >cfssl.log 2>&1 &
pids+=($!)

# ---- micromdm scepserver: RSA-2048 CA, static challenge, file depot.
mkdir -p scep && (cd scep && scepserver ca -init -depot depot -keySize 2048 >/dev/null 2>&1)
SCEP_PORT=$(free_port)
(cd scep && exec scepserver -depot depot -port "$SCEP_PORT" -challenge bench-static-challenge -allowrenew 0) >scep.log 2>&1 &
pids+=($!)
cd - >/dev/null
wait_port "$CFSSL_PORT"; wait_port "$SCEP_PORT"

# `bench issue` rows start with what was measured ("issue": a new connection per request, as
# cfssl is driven); the other tables start with the concurrency.
rate() { awk -v c="$1" '($1==c) || ($1=="issue" && $2==c) { print ($1=="issue") ? $4 : $3 }' "$2"; }
p99() { awk -v c="$1" '($1==c) || ($1=="issue" && $2==c) { print ($1=="issue") ? $7 : $6 }' "$2"; }

echo "== WSTEP issuance: autoenroll (P-256 CA, SQLite, durable) vs cfssl sign (P-256 CA, SQLite certdb)"
"$AE" bench issue --duration "$DURATION" | tee "$W/ae-issue.txt"
"$AE" bench cfssl --url "https://127.0.0.1:$CFSSL_PORT" --root "$W/ca.pem" --duration "$DURATION" | tee "$W/cfssl.txt"
echo "== SCEP PKCSReq: autoenroll (RSA-2048 CA) vs micromdm scepserver (RSA-2048 CA)"
"$AE" bench scep --key-algorithm rsa2048 --duration "$DURATION" 2>/dev/null | tee "$W/ae-scep.txt"
"$AE" bench scep --url "http://127.0.0.1:$SCEP_PORT/scep" --duration "$DURATION" 2>/dev/null | tee "$W/scepserver.txt"

echo
echo "== ratios (autoenroll / peer; req/s, and p99 latency)"
printf '%-30s %6s %12s %12s %8s %14s\n' scenario conc "ours req/s" "peer req/s" ratio "p99 ours/peer"
for c in 1 8 64; do
  for pair in "WSTEP vs cfssl:ae-issue.txt:cfssl.txt" "SCEP vs scepserver:ae-scep.txt:scepserver.txt"; do
    IFS=: read -r name ours peer <<<"$pair"
    o=$(rate $c "$W/$ours"); p=$(rate $c "$W/$peer")
    awk -v n="$name" -v c=$c -v o="$o" -v p="$p" -v po="$(p99 $c "$W/$ours")" -v pp="$(p99 $c "$W/$peer")" \
      'BEGIN { r = (p > 0) ? sprintf("%.1fx", o / p) : "peer 0/s"; printf "%-30s %6s %12s %12s %8s %7s/%-7s\n", n, c, o, p, r, po, pp }'
  done
done
