#!/usr/bin/env bash
# Fuzzes the VHD/VHDX library with libFuzzer. Usage: bash fuzz/run.sh [seconds] [seed]   (default 60, seed 0 = random)
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release --scratch-path .build >/dev/null
export SWIFT_BACKTRACE=enable=no
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhd-fuzz-corpus.XXXXXX")
export VHD_FUZZ_SCRATCH=$(mktemp -d /dev/shm/vhd-fuzz-scratch.XXXXXX)
trap 'rm -rf "$WORK" "$VHD_FUZZ_SCRATCH"' EXIT
# New inputs go to a scratch corpus; the committed seeds stay as they are. -timeout=30: on a loaded
# machine (load 20 on 2 cores) an input that takes 1 s alone once took 14 s.
.build/release/vhd-fuzz -max_total_time="${1:-60}" -seed="${2:-0}" -max_len=65536 -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=./ "$WORK" corpus
