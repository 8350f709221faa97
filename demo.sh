#!/usr/bin/env bash
# The main job: build memgate and memgated (release) and run the end-to-end demo — a live
# process's memory migrated post-copy through the broker's restricted keys and verified
# byte for byte. Options go to `memgate demo`, e.g. ./demo.sh --size 1G --pattern seq --json
set -euo pipefail
cd "$(dirname "$0")"
scripts/deps.sh demo
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
cargo build --release --quiet -p memgate -p memgated >&2
exec "${CARGO_TARGET_DIR:-target}/release/memgate" demo "$@"
