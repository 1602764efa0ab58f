#!/usr/bin/env bash
# Fuzzes the VHD/VHDX parsers with libFuzzer. Usage: bash fuzz/run.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release --scratch-path .build >/dev/null
export SWIFT_BACKTRACE=enable=no
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhd-fuzz-corpus.XXXXXX")
trap 'rm -rf "$WORK"; rm -f /dev/shm/vhd-fuzz-*.img' EXIT
# New inputs go to a scratch corpus; the committed seeds stay as they are.
.build/release/vhd-fuzz -max_total_time="${1:-60}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=./ "$WORK" corpus
