#!/usr/bin/env bash
# Interop with the published vox-core 0.3.0: builds this workspace (vox-peer, chaos-proxy and the
# sotto side in interop-tests) and runs the sotto <-> vox tests, directly and through the chaos
# proxy, one scenario at a time. Bounded in time: INTEROP_TIMEOUT_SECS (default 480) covers the
# build and the tests. INTEROP_SEEDS=1,2,3 picks the chaos proxy seeds (default 1,2,3,4);
# INTEROP_CLIPPY=1 also runs clippy on this workspace (warnings denied). Not --locked: the
# sotto crates are path dependencies, and a dependency they add lands in interop/Cargo.lock here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
# This workspace is not a member of the root one; keep its (large) build apart.
export CARGO_TARGET_DIR="$here/target"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)
deadline=$((start + ${INTEROP_TIMEOUT_SECS:-480}))
left() {
  local n=$((deadline - $(date +%s)))
  if [ "$n" -le 0 ]; then
    echo "interop: out of time" >&2
    exit 124
  fi
  echo "$n"
}

cargo fmt -- --check
echo "interop: building (vox-core 0.3.0 and friends on a cold cache take a while)"
timeout "$(left)" cargo build --workspace --all-targets
if [ "${INTEROP_CLIPPY:-0}" = 1 ]; then
  timeout "$(left)" cargo clippy --workspace --all-targets -- -D warnings
fi
echo "interop: built in $(($(date +%s) - start))s; running the tests"
timeout "$(left)" cargo test --workspace --test vox -- --test-threads=1 --nocapture
echo "interop: done in $(($(date +%s) - start))s"
