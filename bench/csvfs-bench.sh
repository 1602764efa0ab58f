#!/usr/bin/env bash
# CSVFS benchmark: the mount against the raw LUN image file, in one run, from the coordinator node and from a
# second node of the same cluster (its metadata over the cluster transport).
#
#   bench/csvfs-bench.sh            # builds csvfs in release, formats an 8G sparse LUN, measures, cleans up
#
# Measures, through the mount and on the baseline (a plain file / directory on the same local disk):
#   - 1 MiB sequential O_DIRECT write and read (fio, libaio, direct=1)
#   - 4 KiB random O_DIRECT read at queue depth 16 (fio, libaio, direct=1) on a preallocated file
#   (these three once per LUN I/O engine of the server: -o io=aio, the default, and -o io=threads)
#   - create / stat / unlink of 10,000 files (files/s)
#   - `ls -l` of a 10,000-entry directory, cold (after remount and drop_caches)
#   - from the second node: metadata RPCs per create/stat/unlink, and the latency of a 4 KiB write on one node
#     followed by its read on the other (p50, p99)
# and prints: metric, csvfs, baseline, ratio, target, PASS/FAIL. Exits 1 if any target is missed.
#
# The virtual disk and CPUs of a VM swing by a third from one second to the next, so the fio and file measurements run
# ROUNDS times, csvfs and its baseline back to back in each round; the table gives medians, and the ratio is
# the median of the per-round ratios (each printed too).
#
# Knobs (environment): BENCH_DIR (default: a new dir under /var/tmp; must be on a local disk; removed at exit), LUN_SIZE (8G),
# FIO_SIZE (4G), RAND_RUNTIME (8 s), SEQ_IODEPTH (16), NFILES (10000), ROUNDS (3), CSVFS_BIN (skip the build),
# IO_MODES ("aio threads": the server's LUN I/O engines to measure the fio metrics with; the first one also
# serves the metadata measurements), ROLES ("coordinator follower": which node of a two-node cluster the
# measured mount is; as follower, a coordinator is mounted beside it first), PINGS (1000 cross-node round trips).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/csvfs-bench.XXXXXX")}
LUN_SIZE=${LUN_SIZE:-8G}
FIO_SIZE=${FIO_SIZE:-4G}
RAND_RUNTIME=${RAND_RUNTIME:-8}
SEQ_IODEPTH=${SEQ_IODEPTH:-16}
NFILES=${NFILES:-10000}
ROUNDS=${ROUNDS:-3}
IO_MODES=${IO_MODES:-aio threads}
read -r -a io_modes <<<"$IO_MODES"
ROLES=${ROLES:-coordinator follower}
read -r -a roles <<<"$ROLES"
for role in "${roles[@]}"; do
    [[ $role == coordinator || $role == follower ]] || { echo "csvfs-bench: ROLES: unknown role $role (coordinator, follower)" >&2; exit 2; }
done
PINGS=${PINGS:-1000}
for mode in "${io_modes[@]}"; do
    [[ $mode == aio || $mode == threads ]] || { echo "csvfs-bench: IO_MODES: unknown engine $mode (aio, threads)" >&2; exit 2; }
done
((${#io_modes[@]})) || { echo "csvfs-bench: IO_MODES is empty" >&2; exit 2; }

for tool in fio python3 fusermount3; do
    command -v "$tool" >/dev/null || { echo "csvfs-bench: $tool is required" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "csvfs-bench: run as root (drop_caches, FUSE allow_other)" >&2; exit 2; }

if [[ -z ${CSVFS_BIN:-} ]]; then
    echo "== building csvfs (release)"
    (cd "$ROOT" && swift build -c release --scratch-path "$ROOT/.build-release" --product csvfs) >&2
    CSVFS_BIN=$ROOT/.build-release/release/csvfs
fi
[[ -x $CSVFS_BIN ]] || { echo "csvfs-bench: no csvfs binary at $CSVFS_BIN" >&2; exit 2; }

LUN=$BENCH_DIR/lun.img      # the CSVFS volume
RAW=$BENCH_DIR/raw.img      # the baseline: a plain file of the same size on the same disk
MNT=$BENCH_DIR/mnt          # the measured mount
COORD=$BENCH_DIR/coordinator # the coordinator beside it, when the measured mount is the second node
PLAIN=$BENCH_DIR/plain      # the baseline directory for the metadata tests
SERVER_PID=
COORD_PID=

mounted() { grep -q " ${1:-$MNT} fuse" /proc/self/mounts; }

cleanup() {
    set +e
    for dir in "$MNT" "$COORD"; do
        if mounted "$dir"; then "$CSVFS_BIN" unmount "$dir" >/dev/null 2>&1 || fusermount3 -u -z "$dir"; fi
    done
    for pid in $SERVER_PID $COORD_PID; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        wait "$pid" 2>/dev/null
    done
    for dir in "$MNT" "$COORD"; do mounted "$dir" && fusermount3 -u -z "$dir"; done
    mounted "$MNT" || mounted "$COORD" || rm -rf "$BENCH_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server DIR ENGINE LOG: a node's server in the foreground in the background of this shell (so its PID is
# ours); sets STARTED_PID once mounted.
start_server() {
    "$CSVFS_BIN" mount "$LUN" "$1" --foreground --secret-file "$BENCH_DIR/lun.secret" -o "io=$2" 2>>"$3" &
    STARTED_PID=$!
    for _ in $(seq 300); do
        mounted "$1" && return 0
        kill -0 "$STARTED_PID" 2>/dev/null || { echo "csvfs-bench: server exited:" >&2; cat "$3" >&2; exit 1; }
        sleep 0.1
    done
    echo "csvfs-bench: mount of $1 not ready after 30 s" >&2
    exit 1
}

# mount_volume ROLE ENGINE: the measured mount at $MNT, as the coordinator, or as a second node after a
# coordinator at $COORD; the LUN I/O engine io=ENGINE on both.
mount_volume() {
    if [[ $1 == follower ]]; then
        start_server "$COORD" "$2" "$BENCH_DIR/coordinator.log"
        COORD_PID=$STARTED_PID
    fi
    : >"$BENCH_DIR/server.log"
    start_server "$MNT" "$2" "$BENCH_DIR/server.log"
    SERVER_PID=$STARTED_PID
}

unmount_volume() {
    "$CSVFS_BIN" unmount "$MNT"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    if [[ -n $COORD_PID ]]; then
        "$CSVFS_BIN" unmount "$COORD"
        wait "$COORD_PID" 2>/dev/null || true
        COORD_PID=
    fi
}

# The measured node's metadata RPCs, as its server logs them when it exits ("metadata RPCs: N calls ...").
rpc_calls() { grep -o 'metadata RPCs: [0-9]*' "$BENCH_DIR/server.log" | tail -1 | grep -o '[0-9]*$'; }

# ping_run FILE_ON_ONE FILE_ON_OTHER -> "p50 p99" in microseconds of a 4 KiB write on one node followed by its
# read on the other; every read is checked against what was written.
ping_run() {
    python3 - "$1" "$2" "$PINGS" <<'EOF'
import os, statistics, sys, time
one, other, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(one, "wb") as f:
    f.write(b"\0" * 4096)
times = []
for i in range(count):
    data = (b"%08d" % i) * 512
    start = time.perf_counter()
    fd = os.open(one, os.O_WRONLY)
    os.pwrite(fd, data, 0)
    os.close(fd)
    fd = os.open(other, os.O_RDONLY)
    got = os.pread(fd, 4096, 0)
    os.close(fd)
    times.append((time.perf_counter() - start) * 1e6)
    if got != data:
        sys.exit("round %d: the other node read %r, not what was written" % (i, got[:16]))
times.sort()
print("%.0f %.0f" % (statistics.median(times), times[int(len(times) * 0.99) - 1]))
EOF
}

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# meta_run DIR -> "creates/s stats/s unlinks/s" for NFILES empty files.
meta_run() {
    python3 - "$1" "$NFILES" <<'EOF'
import os, sys, time
directory, count = sys.argv[1], int(sys.argv[2])
os.makedirs(directory, exist_ok=True)
names = [os.path.join(directory, "f%06d" % i) for i in range(count)]
rates = []
start = time.perf_counter()
for name in names:
    os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
rates.append(count / (time.perf_counter() - start))
start = time.perf_counter()
for name in names:
    os.stat(name)
rates.append(count / (time.perf_counter() - start))
start = time.perf_counter()
for name in names:
    os.unlink(name)
rates.append(count / (time.perf_counter() - start))
print(" ".join("%.0f" % r for r in rates))
EOF
}

make_files() {
    python3 - "$1" "$NFILES" <<'EOF'
import os, sys
os.makedirs(sys.argv[1], exist_ok=True)
for i in range(int(sys.argv[2])):
    os.close(os.open(os.path.join(sys.argv[1], "entry-%06d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
EOF
}

# ls_cold DIR -> seconds for `ls -l DIR` after drop_caches (the caller remounts first for csvfs).
ls_cold() {
    drop_caches
    python3 - "$1" <<'EOF'
import subprocess, sys, time
start = time.perf_counter()
out = subprocess.run(["ls", "-l", sys.argv[1]], stdout=subprocess.PIPE, check=True).stdout
elapsed = time.perf_counter() - start
lines = out.count(b"\n") - 1
if lines < 1:
    sys.exit("ls -l listed nothing")
print("%.3f" % elapsed)
EOF
}

echo "== preparing $BENCH_DIR (LUN $LUN_SIZE, fio size $FIO_SIZE)"
rm -rf "$BENCH_DIR"
mkdir -p "$MNT" "$COORD" "$PLAIN"
"$CSVFS_BIN" format "$LUN" --size "$LUN_SIZE" --secret-file "$BENCH_DIR/lun.secret" >/dev/null
truncate -s "$LUN_SIZE" "$RAW"

# Each series holds one number per round, space-separated.
declare -A series
record() { series[$1]+="$2 "; }

for round in $(seq "$ROUNDS"); do
  for role in "${roles[@]}"; do
    for mode in "${io_modes[@]}"; do
        echo "== round $round of $ROUNDS, $role: fio sequential 1 MiB write/read, random 4 KiB read (QD16), io=$mode vs raw"
        mount_volume "$role" "$mode"
        rm -f "$MNT/fio.dat" "$RAW"
        truncate -s "$LUN_SIZE" "$RAW"
        key="${role}_$mode"
        record "seq_write_$key" "$(fio_run "seqwrite-$key" "$MNT/fio.dat" write 1M "$SEQ_IODEPTH" --end_fsync=1)"
        record "seq_write_raw_$key" "$(fio_run "seqwrite-raw-$key" "$RAW" write 1M "$SEQ_IODEPTH" --end_fsync=1)"
        record "seq_read_$key" "$(fio_run "seqread-$key" "$MNT/fio.dat" read 1M "$SEQ_IODEPTH")"
        record "seq_read_raw_$key" "$(fio_run "seqread-raw-$key" "$RAW" read 1M "$SEQ_IODEPTH")"
        record "rand_read_$key" "$(fio_run "randread-$key" "$MNT/fio.dat" randread 4k 16 --time_based --runtime="$RAND_RUNTIME")"
        record "rand_read_raw_$key" "$(fio_run "randread-raw-$key" "$RAW" randread 4k 16 --time_based --runtime="$RAND_RUNTIME")"
        rm -f "$MNT/fio.dat"
        unmount_volume
    done

    echo "== round $round of $ROUNDS, $role: create/stat/unlink of $NFILES files (io=${io_modes[0]})"
    mount_volume "$role" "${io_modes[0]}"
    read -r create stat unlink < <(meta_run "$MNT/meta$round")
    record "create_$role" "$create"; record "stat_$role" "$stat"; record "unlink_$role" "$unlink"
    if [[ $role == follower ]]; then
        echo "== round $round of $ROUNDS: a 4 KiB write on one node, read on the other, $PINGS times"
        read -r p50 p99 < <(ping_run "$COORD/ping.dat" "$MNT/ping.dat")
        record ping_p50 "$p50"; record ping_p99 "$p99"
    fi
    unmount_volume
    # Everything the second node sent while it made, statted and removed the files (and read the pings' file).
    if [[ $role == follower ]]; then record rpcs_per_op "$(python3 -c "print($(rpc_calls) / (3 * $NFILES))")"; fi
    if [[ $role == "${roles[0]}" ]]; then
        read -r create stat unlink < <(meta_run "$PLAIN/meta$round")
        record create_plain "$create"; record stat_plain "$stat"; record unlink_plain "$unlink"
    fi
  done
done

echo "== ls -l of $NFILES entries, cold"
mount_volume "${roles[0]}" "${io_modes[0]}"
make_files "$MNT/lsdir"
make_files "$PLAIN/lsdir"
unmount_volume
ls_plain=$(ls_cold "$PLAIN/lsdir")
for role in "${roles[@]}"; do
    mount_volume "$role" "${io_modes[0]}"
    record "ls_$role" "$(ls_cold "$MNT/lsdir")"
    unmount_volume
done

python3 - <<EOF
import statistics
def numbers(text): return [float(x) for x in text.split()]
def pair(mine, base):
    mine, base = numbers(mine), numbers(base)
    ratios = [m / b if b else float("nan") for m, b in zip(mine, base)]
    return statistics.median(mine), statistics.median(base), statistics.median(ratios), ratios
series = {$(for key in "${!series[@]}"; do printf '"%s": "%s", ' "$key" "${series[$key]}"; done)}
rows = []
roles = "${roles[*]}".split()
for role in roles:
    for mode in "${io_modes[*]}".split():
        key = role + "_" + mode
        # metric, (csvfs, baseline, ratio, per-round ratios), unit, scale, target kind, target
        rows += [
            (role + ": seq write 1 MiB O_DIRECT io=" + mode, pair(series["seq_write_" + key], series["seq_write_raw_" + key]), "MiB/s", 1 / 2**20, "ratio>=", 0.80),
            (role + ": seq read 1 MiB O_DIRECT io=" + mode, pair(series["seq_read_" + key], series["seq_read_raw_" + key]), "MiB/s", 1 / 2**20, "ratio>=", 0.80),
            (role + ": rand read 4 KiB QD16 io=" + mode, pair(series["rand_read_" + key], series["rand_read_raw_" + key]), "IOPS", 1, "ratio>=", 0.60 if role == "follower" else 0.50),
        ]
    rows += [
        (role + ": create $NFILES files", pair(series["create_" + role], series["create_plain"]), "files/s", 1, "value>=", 10000 if role == "coordinator" else 5000),
        (role + ": stat $NFILES files", pair(series["stat_" + role], series["stat_plain"]), "files/s", 1, None, None),
        (role + ": unlink $NFILES files", pair(series["unlink_" + role], series["unlink_plain"]), "files/s", 1, None, None),
        (role + ": ls -l $NFILES entries, cold", pair(series["ls_" + role], "$ls_plain"), "s", 1, "value<", 0.5),
    ]
if "coordinator" in roles and "follower" in roles:
    rows.append(("follower creates / coordinator's", pair(series["create_follower"], series["create_coordinator"]), "files/s", 1, "ratio>=", 0.5))
if "follower" in roles:
    # No baseline: one figure each.
    for name, key, unit in [("follower: metadata RPCs per meta op", "rpcs_per_op", "RPCs"),
                            ("write on a node, read on other p50", "ping_p50", "us"),
                            ("write on a node, read on other p99", "ping_p99", "us")]:
        values = numbers(series[key])
        rows.append((name, (statistics.median(values), float("nan"), float("nan"), []), unit, 1, None, None))
failed = 0
print()
print("%-38s %14s %14s %8s %16s  %-6s %s" % ("metric", "csvfs", "baseline", "ratio", "target", "result", "ratio per round"))
for name, (mine, base, ratio, ratios), unit, scale, kind, target in rows:
    if kind == "ratio>=":
        ok, goal = ratio >= target, ">= %d%% of raw" % (target * 100)
    elif kind == "value>=":
        ok, goal = mine >= target, ">= %d %s" % (target, unit)
    elif kind == "value<":
        ok, goal = mine < target, "< %g %s" % (target, unit)
    else:
        ok, goal = None, "-"
    result = "-" if ok is None else ("PASS" if ok else "FAIL")
    failed += ok is False
    fmt = "%.3f" if unit == "s" else "%.2f" if unit == "RPCs" else "%.0f"
    print("%-38s %14s %14s %8.2f %16s  %-6s %s" % (name, (fmt % (mine * scale)) + " " + unit, (fmt % (base * scale)) + " " + unit,
                                                   ratio, goal, result, " ".join("%.2f" % r for r in ratios)))
modes = "${io_modes[*]}".split()
if len(modes) == 2:
    # The engines against each other (each round's pair ran back to back, same disk, same file layout).
    print()
    for metric, label in [("seq_write", "seq write"), ("seq_read", "seq read"), ("rand_read", "rand read")]:
        ratios = [x / y for x, y in zip(numbers(series[metric + "_" + roles[0] + "_" + modes[0]]), numbers(series[metric + "_" + roles[0] + "_" + modes[1]]))]
        print("%-38s %8.2f   per round: %s" % ("%s io=%s / io=%s" % (label, modes[0], modes[1]), statistics.median(ratios),
                                               " ".join("%.2f" % r for r in ratios)))
print()
print("%d target(s) missed" % failed if failed else "all targets met")
open("$BENCH_DIR/failed", "w").write(str(failed))
EOF
[[ $(cat "$BENCH_DIR/failed") == 0 ]]
