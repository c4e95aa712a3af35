#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz on the stable toolchain
# (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly flags it needs). Inputs that reach new code
# are added to fuzz/corpus/<target>/ (commit them: the corpus replay test runs them in every
# `cargo test`); a crash lands in fuzz/artifacts/<target>/ — minimise it with
# `cargo fuzz tmin <target> <file>`, copy it to fuzz/regressions/<target>/, and fix the decoder.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
opts=(--sanitizer none --debug-assertions)
cargo fuzz build "${opts[@]}"
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if ! cargo fuzz run "${opts[@]}" "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -max_len=65536 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    echo "== $t: FAILED (see fuzz/artifacts/$t/)"; tail -40 "$log"; exit 1
  fi
  runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1)
  start=$(grep -E 'INITED' "$log" | head -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' || true)
  echo "== $t: $runs; from the stored corpus ($start) to $cov; corpus $(ls "corpus/$t" | wc -l) files"
  rm -f "$log"
done
