#!/usr/bin/env bash
# Benchmark: vhdtool convert of a 1 GiB dynamic VHDX and a 1 GiB dynamic VHD to raw, against qemu-img
# convert on the same files in the same run; and the read throughput of a depth-3 differencing chain,
# against libvhdi (vhdimount) on the same chain.
# Usage: bash bench/vhd-convert.sh [runs]      (needs qemu-utils and libvhdi-utils)
set -euo pipefail
RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
swift build -c release --scratch-path .build-vhd --product vhdtool >/dev/null
VHDTOOL="$ROOT/.build-vhd/release/vhdtool"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhd-bench.XXXXXX")
MNT="$WORK/mnt"
cleanup() {
    if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" || umount -l "$MNT" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# 1 GiB images with 64 scattered 4 MiB writes (256 MiB of data) at the same places in both.
writes=()
for i in $(seq 0 63); do
    offset=$(( (i * 16 + (i * 7) % 11) * 1024 * 1024 ))
    writes+=(-c "write -P $(( (i * 37) % 255 + 1 )) $offset 4M")
done
qemu-img create -q -f vhdx -o subformat=dynamic "$WORK/disk.vhdx" 1G
qemu-img create -q -f vpc -o subformat=dynamic,force_size=on "$WORK/disk.vhd" 1G
qemu-io -f vhdx "${writes[@]}" "$WORK/disk.vhdx" >/dev/null
qemu-io -f vpc "${writes[@]}" "$WORK/disk.vhd" >/dev/null

now() { date +%s.%N; }
# best of RUNS wall-clock seconds for a command (output file removed before each run)
best() {
    local out=$1; shift
    local best=999999
    for _ in $(seq "$RUNS"); do
        rm -f "$out"; sync
        local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now)
        best=$(echo "$t1 - $t0" | bc -l | awk -v b="$best" '{ print ($1 < b) ? $1 : b }')
    done
    rm -f "$out"
    echo "$best"
}

printf '%-44s %10s %10s %8s\n' "benchmark (best of $RUNS)" "vhdtool s" "peer s" "ratio"
for fmt in vhdx vpc; do
    src="$WORK/disk.${fmt/vpc/vhd}"
    ours=$(best "$WORK/out.raw" "$VHDTOOL" convert -O raw "$src" "$WORK/out.raw")
    theirs=$(best "$WORK/out.raw" qemu-img convert -f "$fmt" -O raw "$src" "$WORK/out.raw")
    ratio=$(echo "$theirs / $ours" | bc -l)
    printf '%-44s %10.3f %10.3f %7.2fx\n' "convert 1 GiB dynamic ${fmt/vpc/vhd} -> raw (vs qemu-img)" "$ours" "$theirs" "$ratio"
    # A fast wrong answer is worth nothing: both outputs must be the same bytes.
    "$VHDTOOL" convert -O raw "$src" "$WORK/ours.raw"
    qemu-img convert -f "$fmt" -O raw "$src" "$WORK/theirs.raw"
    cmp "$WORK/ours.raw" "$WORK/theirs.raw" || { echo "outputs differ for $src" >&2; exit 1; }
    rm -f "$WORK/ours.raw" "$WORK/theirs.raw"
done

# Depth-3 VHDX chain: base is the 1 GiB image, each child changes 32 MiB at its own places.
"$VHDTOOL" convert -O vhdx "$WORK/disk.vhdx" "$WORK/base.vhdx"
"$VHDTOOL" convert -O raw "$WORK/base.vhdx" "$WORK/level.raw"
parent="$WORK/base.vhdx"
for level in 1 2 3; do
    for j in 0 1 2 3; do
        dd if=/dev/urandom of="$WORK/level.raw" bs=1M count=8 seek=$(( level * 100 + j * 211 )) conv=notrunc status=none
    done
    "$VHDTOOL" convert -f raw -O vhdx -B "$parent" "$WORK/level.raw" "$WORK/child$level.vhdx"
    parent="$WORK/child$level.vhdx"
done
cmp <("$VHDTOOL" convert -O raw "$parent" "$WORK/check.raw" && cat "$WORK/check.raw") "$WORK/level.raw" >/dev/null \
    || { echo "chain does not read back what was written" >&2; exit 1; }
rm -f "$WORK/check.raw" "$WORK/level.raw"
ours=$(best "$WORK/out.raw" "$VHDTOOL" convert -O raw "$parent" "$WORK/out.raw")
mkdir -p "$MNT"
vhdimount "$parent" "$MNT" >/dev/null
top="$MNT/vhdi4"
theirs=$(best "$WORK/none" sh -c "cat '$top' > /dev/null")
fusermount3 -u "$MNT"
ratio=$(echo "$theirs / $ours" | bc -l)
printf '%-44s %10.3f %10.3f %7.2fx\n' "read depth-3 VHDX chain, 1 GiB (vs vhdimount)" "$ours" "$theirs" "$ratio"
printf '%-44s %10.0f %10.0f\n' "  as MiB/s of virtual disk" "$(echo "1024 / $ours" | bc -l)" "$(echo "1024 / $theirs" | bc -l)"
echo "ratio > 1 means vhdtool is faster"
