#!/usr/bin/env bash
# Fuzzes the DLM's frame and message decoders with libFuzzer. Usage: bash fuzz/dlm/run.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release --scratch-path .build >/dev/null
export SWIFT_BACKTRACE=enable=no
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dlm-fuzz-corpus.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# New inputs go to a scratch corpus; the committed seeds stay as they are.
.build/release/dlm-fuzz -max_total_time="${1:-60}" -max_len=140000 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=./ "$WORK" corpus
