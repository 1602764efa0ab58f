#!/usr/bin/env bash
# CSVFS file lock benchmark: lock latency through a two-node cluster against the same calls on a local ext4
# file, in one run.
#
#   bench/lock-bench.sh     # builds csvfs and lockbench in release, formats a LUN, mounts two nodes, measures, cleans up
#
# Measures with tools/lockbench (p50 and p99 in microseconds):
#   - uncontended: a write lock on bytes 0-99 and its unlock (F_OFD_SETLK and POSIX F_SETLK), on the coordinator's
#     mount, on the follower's mount, on ext4
#   - bounce: an OFD write lock on byte 0 passed back and forth between two open file descriptions, one through
#     each node's mount, each hand-off timed from the holder's unlock to the waiter's F_OFD_SETLKW returning; on
#     ext4 both open the one local file
# and prints each figure with its ratio to the ext4 figure of the same kind.
#
# The ext4 baseline is a directory in BENCH_DIR when BENCH_DIR is on ext4 (it says so), else an ext4 file system
# made in a loop-mounted image there.
#
# Knobs (environment): BENCH_DIR (default: a new dir under /var/tmp; removed at exit), LUN_SIZE (1G), COUNT
# (10000 lock+unlock pairs per kind), BOUNCES (1000 hand-offs), SETTLE_US (2000: how long a holder waits after
# the other side asked before it unlocks, so that the request is asleep on the lock), ROUNDS (3: every case once
# per round, back to back; the table gives medians), CSVFS_BIN and LOCKBENCH_BIN (skip the build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/csvfs-lock-bench.XXXXXX")}
LUN_SIZE=${LUN_SIZE:-1G}
COUNT=${COUNT:-10000}
BOUNCES=${BOUNCES:-1000}
SETTLE_US=${SETTLE_US:-2000}
ROUNDS=${ROUNDS:-3}

for tool in python3 fusermount3; do
    command -v "$tool" >/dev/null || { echo "lock-bench: $tool is required" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "lock-bench: run as root (FUSE allow_other, loop mount)" >&2; exit 2; }

if [[ -z ${CSVFS_BIN:-} || -z ${LOCKBENCH_BIN:-} ]]; then
    echo "== building csvfs and lockbench (release)"
    for product in csvfs lockbench; do
        (cd "$ROOT" && swift build -c release --scratch-path "$ROOT/.build-release" --product "$product") >&2
    done
    CSVFS_BIN=${CSVFS_BIN:-$ROOT/.build-release/release/csvfs}
    LOCKBENCH_BIN=${LOCKBENCH_BIN:-$ROOT/.build-release/release/lockbench}
fi
for bin in "$CSVFS_BIN" "$LOCKBENCH_BIN"; do
    [[ -x $bin ]] || { echo "lock-bench: no binary at $bin" >&2; exit 2; }
done

LUN=$BENCH_DIR/lun.img
COORD=$BENCH_DIR/coordinator # node 1, mounted first, so it is elected coordinator
FOLLOWER=$BENCH_DIR/follower # node 2: its lock calls go to the coordinator over the cluster transport
EXT4=$BENCH_DIR/ext4         # the baseline directory
EXT4_IMAGE=                  # set when the baseline is a loop-mounted image
COORD_PID=
FOLLOWER_PID=

mounted() { grep -q " $1 " /proc/self/mounts; }

cleanup() {
    set +e
    for dir in "$FOLLOWER" "$COORD"; do
        if mounted "$dir"; then "$CSVFS_BIN" unmount "$dir" >/dev/null 2>&1 || fusermount3 -u -z "$dir"; fi
    done
    for pid in $FOLLOWER_PID $COORD_PID; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        wait "$pid" 2>/dev/null
    done
    for dir in "$FOLLOWER" "$COORD"; do mounted "$dir" && fusermount3 -u -z "$dir"; done
    [[ -n $EXT4_IMAGE ]] && mounted "$EXT4" && umount "$EXT4"
    mounted "$FOLLOWER" || mounted "$COORD" || mounted "$EXT4" || rm -rf "$BENCH_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server DIR LOG: a node's server in the foreground in the background of this shell (so its PID is ours);
# sets STARTED_PID once mounted.
start_server() {
    "$CSVFS_BIN" mount "$LUN" "$1" --foreground --secret-file "$BENCH_DIR/lun.secret" 2>>"$2" &
    STARTED_PID=$!
    for _ in $(seq 300); do
        mounted "$1" && return 0
        kill -0 "$STARTED_PID" 2>/dev/null || { echo "lock-bench: server exited:" >&2; cat "$2" >&2; exit 1; }
        sleep 0.1
    done
    echo "lock-bench: mount of $1 not ready after 30 s" >&2
    exit 1
}

echo "== preparing $BENCH_DIR (LUN $LUN_SIZE)"
mkdir -p "$COORD" "$FOLLOWER" "$EXT4"
"$CSVFS_BIN" format "$LUN" --size "$LUN_SIZE" --secret-file "$BENCH_DIR/lun.secret" >/dev/null

fstype=$(df --output=fstype "$BENCH_DIR" | tail -1)
if [[ $fstype == ext4 ]]; then
    ext4_what="a directory in $BENCH_DIR (on ext4, $(df --output=source "$BENCH_DIR" | tail -1))"
else
    EXT4_IMAGE=$BENCH_DIR/ext4.img
    truncate -s 256M "$EXT4_IMAGE"
    mkfs.ext4 -q -F "$EXT4_IMAGE"
    mount -o loop "$EXT4_IMAGE" "$EXT4"
    ext4_what="a loop-mounted ext4 image ($BENCH_DIR is on $fstype)"
fi
echo "== ext4 baseline: $ext4_what"
: >"$EXT4/lock.dat"

start_server "$COORD" "$BENCH_DIR/coordinator.log"
COORD_PID=$STARTED_PID
start_server "$FOLLOWER" "$BENCH_DIR/follower.log"
FOLLOWER_PID=$STARTED_PID
: >"$COORD/lock.dat"
[[ -e $FOLLOWER/lock.dat ]] || { echo "lock-bench: the follower does not see the coordinator's file" >&2; exit 1; }

# Every lockbench line goes to results as "CASE LINE", for the table below.
RESULTS=$BENCH_DIR/results
: >"$RESULTS"
run() {
    local case=$1; shift
    local out
    out=$("$LOCKBENCH_BIN" "$@") || { echo "lock-bench: lockbench $* failed" >&2; exit 1; }
    sed "s/^/$case /" <<<"$out" | tee -a "$RESULTS"
}

for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS: $COUNT uncontended lock+unlock pairs per kind, $BOUNCES hand-offs"
    run coordinator uncontended "$COORD/lock.dat" --count "$COUNT"
    run follower uncontended "$FOLLOWER/lock.dat" --count "$COUNT"
    run ext4 uncontended "$EXT4/lock.dat" --count "$COUNT"
    run nodes bounce "$COORD/lock.dat" "$FOLLOWER/lock.dat" --count "$BOUNCES" --settle-us "$SETTLE_US"
    run ext4 bounce "$EXT4/lock.dat" "$EXT4/lock.dat" --count "$BOUNCES" --settle-us "$SETTLE_US"
done

python3 - "$RESULTS" "$ext4_what" <<'EOF'
import statistics, sys
# (case, kind) -> {"p50_us": [per round], "p99_us": [...]}
figures = {}
for line in open(sys.argv[1]):
    case, kind, *fields = line.split()
    values = dict(field.split("=") for field in fields)
    entry = figures.setdefault((case, kind), {"p50_us": [], "p99_us": []})
    for key in entry:
        entry[key].append(float(values[key]))
rows = [("uncontended OFD, coordinator", "coordinator", "ofd"), ("uncontended OFD, follower", "follower", "ofd"),
        ("uncontended OFD, ext4", "ext4", "ofd"),
        ("uncontended POSIX, coordinator", "coordinator", "posix"), ("uncontended POSIX, follower", "follower", "posix"),
        ("uncontended POSIX, ext4", "ext4", "posix"),
        ("bounce between the two nodes", "nodes", "bounce"), ("bounce on ext4", "ext4", "bounce")]
print()
print("ext4 baseline: " + sys.argv[2])
print("%-32s %10s %10s %10s %10s   %s" % ("case", "p50 us", "p99 us", "p50/ext4", "p99/ext4", "per round p50/ext4, p99/ext4"))
for name, case, kind in rows:
    mine, base = figures[(case, kind)], figures[("ext4", kind)]
    cells = []
    per_round = []
    for key in ("p50_us", "p99_us"):
        ratios = [m / b for m, b in zip(mine[key], base[key])]
        cells.append(statistics.median(ratios))
        per_round.append(" ".join("%.1f" % r for r in ratios))
    print("%-32s %10.1f %10.1f %10.1f %10.1f   %s" % (name, statistics.median(mine["p50_us"]), statistics.median(mine["p99_us"]),
                                                   cells[0], cells[1], " / ".join(per_round)))
EOF
