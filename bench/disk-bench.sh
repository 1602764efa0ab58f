#!/usr/bin/env bash
# The VHD-aware volume's benchmark: a dynamic VHDX's raw view (MOUNT/.csvfs/raw/disk.vhdx) against a raw image
# file on the same mount, in one run, and the time a disk's ownership takes to move between two nodes.
#
#   bench/disk-bench.sh            # builds csvfs in release, formats a sparse LUN, measures, cleans up
#
# Measures on the coordinator's mount of a two-node cluster, raw view and raw file back to back in each round:
#   - 1 MiB sequential O_DIRECT write (the VHDX allocates its blocks in the first round) and read (fio, libaio)
#   - 4 KiB random O_DIRECT read at queue depth 16
#   - 1 MiB sequential read of a depth-3 chain's raw view (base <- child <- grandchild, the upper two holding
#     some blocks of their own), against the raw file
# and, for each coordination backend (local, then etcd on loopback), the ownership handoff: a 4 KiB O_DIRECT
# write through one node's raw view right after the other node wrote the disk (the old owner flushes and lets
# go first), against the same write on the node that already owns it (p50, p99).
# Prints metric, raw view, baseline, ratio, target, PASS/FAIL; exits 1 if a target is missed.
#
# Knobs: BENCH_DIR (a new dir under /var/tmp; removed at exit), LUN_SIZE (8G), DISK_SIZE (2G), RAND_RUNTIME (8),
# ROUNDS (3), HANDOFFS (200), BACKENDS ("local etcd"), CSVFS_BIN (skip the build), VHDTOOL_BIN.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/disk-bench.XXXXXX")}
LUN_SIZE=${LUN_SIZE:-8G}
DISK_SIZE=${DISK_SIZE:-2G}
FIO_SIZE=$DISK_SIZE
RAND_RUNTIME=${RAND_RUNTIME:-8}
ROUNDS=${ROUNDS:-3}
HANDOFFS=${HANDOFFS:-200}
BACKENDS=${BACKENDS:-local etcd}
read -r -a backends <<<"$BACKENDS"
for backend in "${backends[@]}"; do
    [[ $backend == local || $backend == etcd ]] || { echo "disk-bench: BACKENDS: unknown backend $backend (local, etcd)" >&2; exit 2; }
done
for tool in fio python3 fusermount3 qemu-img; do
    command -v "$tool" >/dev/null || { echo "disk-bench: $tool is required" >&2; exit 2; }
done
[[ " ${backends[*]} " == *" etcd "* ]] && ! command -v etcd >/dev/null && { echo "disk-bench: etcd is required for BACKENDS=etcd" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "disk-bench: run as root (drop_caches, FUSE allow_other)" >&2; exit 2; }

if [[ -z ${CSVFS_BIN:-} ]]; then
    echo "== building csvfs and vhdtool (release)"
    (cd "$ROOT" && swift build -c release --scratch-path "$ROOT/.build-release" --product csvfs \
        && swift build -c release --scratch-path "$ROOT/.build-release" --product vhdtool) >&2
    CSVFS_BIN=$ROOT/.build-release/release/csvfs
fi
VHDTOOL_BIN=${VHDTOOL_BIN:-$(dirname "$CSVFS_BIN")/vhdtool}
for binary in "$CSVFS_BIN" "$VHDTOOL_BIN"; do
    [[ -x $binary ]] || { echo "disk-bench: no binary at $binary" >&2; exit 2; }
done

LUN=$BENCH_DIR/lun.img
A=$BENCH_DIR/node-a
B=$BENCH_DIR/node-b
PIDS=()
ETCD_PID=

mounted() { grep -q " $1 fuse" /proc/self/mounts; }

cleanup() {
    set +e
    for dir in "$B" "$A"; do
        if mounted "$dir"; then "$CSVFS_BIN" unmount "$dir" >/dev/null 2>&1 || fusermount3 -u -z "$dir"; fi
    done
    for pid in "${PIDS[@]}" $ETCD_PID; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        wait "$pid" 2>/dev/null
    done
    for dir in "$A" "$B"; do mounted "$dir" && fusermount3 -u -z "$dir"; done
    mounted "$A" || mounted "$B" || rm -rf "$BENCH_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_node DIR LOG [ARGS...]: a node's server in the foreground in the background of this shell (its PID is ours).
start_node() {
    local dir=$1 log=$2; shift 2
    "$CSVFS_BIN" mount "$LUN" "$dir" --foreground --secret-file "$BENCH_DIR/lun.secret" "$@" 2>>"$log" &
    PIDS+=($!)
    for _ in $(seq 300); do
        mounted "$dir" && return 0
        kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "disk-bench: server exited:" >&2; cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    echo "disk-bench: mount of $dir not ready after 30 s" >&2
    exit 1
}

stop_nodes() {
    for dir in "$B" "$A"; do "$CSVFS_BIN" unmount "$dir"; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# handoff_run VIEW_ON_A VIEW_ON_B -> "handoff_p50 handoff_p99 same_p50 same_p99" in microseconds: a 4 KiB
# O_DIRECT write on the node that did not write last (the disk moves), and one on the node that did.
handoff_run() {
    python3 - "$1" "$2" "$HANDOFFS" <<'EOF'
import mmap, os, statistics, sys, time
paths, count = sys.argv[1:3], int(sys.argv[3])
fds = [os.open(p, os.O_RDWR | os.O_DIRECT) for p in paths]
buffer = mmap.mmap(-1, 4096)
moved, stayed = [], []
for i in range(count):
    for repeat in range(2):          # the first write moves the disk here, the second finds it here
        buffer[:8] = b"%08d" % (2 * i + repeat)
        start = time.perf_counter()
        os.pwritev(fds[i % 2], [buffer], (i % 64) * 65536)
        (moved if repeat == 0 else stayed).append((time.perf_counter() - start) * 1e6)
back = mmap.mmap(-1, 4096)
os.preadv(fds[0], [back], ((count - 1) % 64) * 65536)
if back[:8] != b"%08d" % (2 * count - 1):
    sys.exit("the last write did not read back on the other node: %r" % back[:8])
def p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]
print("%.0f %.0f %.0f %.0f" % (statistics.median(moved), p(moved, 0.99), statistics.median(stayed), p(stayed, 0.99)))
EOF
}

median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

mkdir -p "$A" "$B"
"$CSVFS_BIN" format "$LUN" --size "$LUN_SIZE" --secret-file "$BENCH_DIR/lun.secret" >/dev/null

ROWS=()
FAILED=0
# row METRIC VIEW BASELINE RATIO TARGET ROUND_RATIOS
row() {
    local verdict=PASS
    if [[ $5 != - ]] && ! python3 -c "import sys; sys.exit(0 if float('$4') >= float('${5#>= }') else 1)"; then
        verdict=FAIL
        FAILED=1
    fi
    ROWS+=("$(printf '%-34s %14s %14s %7s %8s %5s  %s' "$1" "$2" "$3" "$4" "$5" "$([[ $5 == - ]] && echo - || echo $verdict)" "$6")")
}

start_node "$A" "$BENCH_DIR/node-a.log"
start_node "$B" "$BENCH_DIR/node-b.log"
qemu-img create -q -f vhdx -o subformat=dynamic "$A/disk.vhdx" "$DISK_SIZE"
truncate -s "$DISK_SIZE" "$A/raw.img"
VIEW=$A/.csvfs/raw/disk.vhdx

declare -A view base
for metric in seqwrite seqread randread chainread; do view[$metric]=; base[$metric]=; done
echo "== fio on the raw view and on the raw file, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
    view[seqwrite]+=" $(fio_run vw "$VIEW" write 1M 16 --end_fsync=1)"
    base[seqwrite]+=" $(fio_run bw "$A/raw.img" write 1M 16 --end_fsync=1)"
    view[seqread]+=" $(fio_run vr "$VIEW" read 1M 16)"
    base[seqread]+=" $(fio_run br "$A/raw.img" read 1M 16)"
    view[randread]+=" $(fio_run vq "$VIEW" randread 4k 16 --time_based --runtime="$RAND_RUNTIME")"
    base[randread]+=" $(fio_run bq "$A/raw.img" randread 4k 16 --time_based --runtime="$RAND_RUNTIME")"
done

echo "== a depth-3 chain on the written disk"
disk_mib=$(( $(numfmt --from=iec "$DISK_SIZE") >> 20 ))
"$VHDTOOL_BIN" create -f vhdx -b "$A/disk.vhdx" "$A/child.vhdx" >/dev/null
dd if=/dev/urandom of="$A/.csvfs/raw/child.vhdx" bs=1M count=$((disk_mib / 16)) seek=$((disk_mib / 8)) conv=notrunc oflag=direct status=none
"$VHDTOOL_BIN" create -f vhdx -b "$A/child.vhdx" "$A/grandchild.vhdx" >/dev/null
dd if=/dev/urandom of="$A/.csvfs/raw/grandchild.vhdx" bs=1M count=$((disk_mib / 16)) seek=$((disk_mib / 2)) conv=notrunc oflag=direct status=none
for round in $(seq "$ROUNDS"); do
    view[chainread]+=" $(fio_run cr "$A/.csvfs/raw/grandchild.vhdx" read 1M 16)"
    base[chainread]+=" $(fio_run br "$A/raw.img" read 1M 16)"
done

ratios() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print(" ".join("%.2f" % (x / y) for x, y in zip(v, b)))' "$1" "$2"; }
fio_row() {
    local metric=$1 label=$2 unit=$3 target=$4 scale=$5
    local per_round; per_round=$(ratios "${view[$metric]}" "${base[$metric]}")
    # shellcheck disable=SC2086
    row "$label" "$(python3 -c "print('%.0f $unit' % ($(median ${view[$metric]}) / $scale))")" \
        "$(python3 -c "print('%.0f $unit' % ($(median ${base[$metric]}) / $scale))")" "$(median $per_round)" "$target" "rounds: $per_round"
}
fio_row seqwrite "1 MiB sequential write" MiB/s ">= 0.7" 1048576
fio_row seqread "1 MiB sequential read" MiB/s ">= 0.7" 1048576
fio_row randread "4 KiB random read, QD16" IOPS ">= 0.5" 1
fio_row chainread "depth-3 chain, sequential read" MiB/s - 1048576

qemu-img create -q -f vhdx -o subformat=dynamic,block_size=1M "$A/handoff.vhdx" 64M
for backend in "${backends[@]}"; do
    if [[ $backend == etcd ]]; then
        stop_nodes
        client=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        etcd --name bench --data-dir "$BENCH_DIR/etcd" --listen-client-urls "http://127.0.0.1:$client" \
            --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
            --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "bench=http://127.0.0.1:$peer" \
            --log-level error >"$BENCH_DIR/etcd.log" 2>&1 &
        ETCD_PID=$!
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$client/health" >/dev/null 2>&1 && break; sleep 0.1; done
        start_node "$A" "$BENCH_DIR/node-a.log" --etcd "http://127.0.0.1:$client"
        start_node "$B" "$BENCH_DIR/node-b.log" --etcd "http://127.0.0.1:$client"
    fi
    echo "== ownership handoff, $backend backend, $HANDOFFS round trips"
    read -r moved50 moved99 same50 same99 < <(handoff_run "$A/.csvfs/raw/handoff.vhdx" "$B/.csvfs/raw/handoff.vhdx")
    target=$([[ $backend == local ]] && echo 5000 || echo 50000)
    verdict=PASS
    ((moved50 < target && moved99 < target)) || { verdict=FAIL; FAILED=1; }
    ROWS+=("$(printf '%-34s %14s %14s %7s %8s %5s  %s' "handoff p50 / p99 ($backend)" "$moved50 / $moved99 us" \
        "$same50 / $same99 us" "$(python3 -c "print('%.1f' % ($moved50 / max($same50, 1)))")" "< $((target / 1000)) ms" "$verdict" \
        "baseline: the same write on the owning node")")
done

echo
printf '%-34s %14s %14s %7s %8s %5s  %s\n' metric "raw view" baseline ratio target "" notes
printf '%s\n' "${ROWS[@]}"
exit $FAILED
