#!/usr/bin/env bash
# CSVFS benchmark (issue 2): the mount against the raw LUN image file, in one run.
#
#   bench/csvfs-bench.sh            # builds csvfs in release, formats an 8G sparse LUN, measures, cleans up
#
# Measures, through the mount and on the baseline (a plain file / directory on the same local disk):
#   - 1 MiB sequential O_DIRECT write and read (fio, libaio, direct=1)
#   - 4 KiB random O_DIRECT read at queue depth 16 (fio, libaio, direct=1) on a preallocated file
#   (these three once per LUN I/O engine of the server: -o io=aio, the default, and -o io=threads)
#   - create / stat / unlink of 10,000 files (files/s)
#   - `ls -l` of a 10,000-entry directory, cold (after remount and drop_caches)
# and prints: metric, csvfs, baseline, ratio, target, PASS/FAIL. Exits 1 if any target is missed.
#
# The virtual disk and CPUs of a VM swing by a third from one second to the next, so the fio and file measurements run
# ROUNDS times, csvfs and its baseline back to back in each round; the table gives medians, and the ratio is
# the median of the per-round ratios (each printed too).
#
# Knobs (environment): BENCH_DIR (default: a new dir under /var/tmp; must be on a local disk; removed at exit), LUN_SIZE (8G),
# FIO_SIZE (4G), RAND_RUNTIME (8 s), SEQ_IODEPTH (16), NFILES (10000), ROUNDS (3), CSVFS_BIN (skip the build),
# IO_MODES ("aio threads": the server's LUN I/O engines to measure the fio metrics with; the first one also
# serves the metadata measurements).
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
MNT=$BENCH_DIR/mnt
PLAIN=$BENCH_DIR/plain      # the baseline directory for the metadata tests
SERVER_PID=

mounted() { grep -q " $MNT fuse" /proc/self/mounts; }

cleanup() {
    set +e
    if mounted; then
        "$CSVFS_BIN" unmount "$MNT" >/dev/null 2>&1 || fusermount3 -u -z "$MNT"
    fi
    if [[ -n $SERVER_PID ]]; then
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null
    fi
    mounted && fusermount3 -u -z "$MNT"
    mounted || rm -rf "$BENCH_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the server in the foreground in the background of this shell (so its PID is ours), waits until mounted.
# mount_volume ENGINE: the server's LUN I/O engine (io=ENGINE).
mount_volume() {
    "$CSVFS_BIN" mount "$LUN" "$MNT" --foreground --secret-file "$BENCH_DIR/lun.secret" -o "io=$1" 2>>"$BENCH_DIR/server.log" &
    SERVER_PID=$!
    for _ in $(seq 300); do
        mounted && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "csvfs-bench: server exited:" >&2; cat "$BENCH_DIR/server.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "csvfs-bench: mount not ready after 30 s" >&2
    exit 1
}

unmount_volume() {
    "$CSVFS_BIN" unmount "$MNT"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# fio_run NAME FILE RW BS IODEPTH [extra...] -> prints bytes/s (seq) or IOPS (rand) from the JSON output.
fio_run() {
    local name=$1 file=$2 rw=$3 bs=$4 depth=$5; shift 5
    drop_caches
    fio --name="$name" --filename="$file" --rw="$rw" --bs="$bs" --size="$FIO_SIZE" --ioengine=libaio --direct=1 \
        --iodepth="$depth" --numjobs=1 --group_reporting --output-format=json "$@" >"$BENCH_DIR/fio-$name.json"
    python3 - "$BENCH_DIR/fio-$name.json" "$rw" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = job["write"] if "write" in sys.argv[2] else job["read"]
print(side["iops"] if sys.argv[2].startswith("rand") else side["bw_bytes"])
EOF
}

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
mkdir -p "$MNT" "$PLAIN"
"$CSVFS_BIN" format "$LUN" --size "$LUN_SIZE" --secret-file "$BENCH_DIR/lun.secret" >/dev/null
truncate -s "$LUN_SIZE" "$RAW"

# Each series holds one number per round, space-separated.
declare -A series
record() { series[$1]+="$2 "; }

for round in $(seq "$ROUNDS"); do
    for mode in "${io_modes[@]}"; do
        echo "== round $round of $ROUNDS: fio sequential 1 MiB write/read, random 4 KiB read (QD16), io=$mode vs raw"
        mount_volume "$mode"
        rm -f "$MNT/fio.dat" "$RAW"
        truncate -s "$LUN_SIZE" "$RAW"
        record "seq_write_$mode" "$(fio_run "seqwrite-$mode" "$MNT/fio.dat" write 1M "$SEQ_IODEPTH" --end_fsync=1)"
        record "seq_write_raw_$mode" "$(fio_run "seqwrite-raw-$mode" "$RAW" write 1M "$SEQ_IODEPTH" --end_fsync=1)"
        record "seq_read_$mode" "$(fio_run "seqread-$mode" "$MNT/fio.dat" read 1M "$SEQ_IODEPTH")"
        record "seq_read_raw_$mode" "$(fio_run "seqread-raw-$mode" "$RAW" read 1M "$SEQ_IODEPTH")"
        record "rand_read_$mode" "$(fio_run "randread-$mode" "$MNT/fio.dat" randread 4k 16 --time_based --runtime="$RAND_RUNTIME")"
        record "rand_read_raw_$mode" "$(fio_run "randread-raw-$mode" "$RAW" randread 4k 16 --time_based --runtime="$RAND_RUNTIME")"
        rm -f "$MNT/fio.dat"
        unmount_volume
    done

    echo "== round $round of $ROUNDS: create/stat/unlink of $NFILES files (io=${io_modes[0]})"
    mount_volume "${io_modes[0]}"
    read -r create stat unlink < <(meta_run "$MNT/meta$round")
    record create_csvfs "$create"; record stat_csvfs "$stat"; record unlink_csvfs "$unlink"
    read -r create stat unlink < <(meta_run "$PLAIN/meta$round")
    record create_plain "$create"; record stat_plain "$stat"; record unlink_plain "$unlink"
    unmount_volume
done

echo "== ls -l of $NFILES entries, cold"
mount_volume "${io_modes[0]}"
make_files "$MNT/lsdir"
make_files "$PLAIN/lsdir"
unmount_volume
mount_volume "${io_modes[0]}"
ls_csvfs=$(ls_cold "$MNT/lsdir")
ls_plain=$(ls_cold "$PLAIN/lsdir")
unmount_volume

python3 - <<EOF
import statistics
def numbers(text): return [float(x) for x in text.split()]
def pair(mine, base):
    mine, base = numbers(mine), numbers(base)
    ratios = [m / b if b else float("nan") for m, b in zip(mine, base)]
    return statistics.median(mine), statistics.median(base), statistics.median(ratios), ratios
series = {$(for key in "${!series[@]}"; do printf '"%s": "%s", ' "$key" "${series[$key]}"; done)}
rows = []
for mode in "${io_modes[*]}".split():
    # metric, (csvfs, baseline, ratio, per-round ratios), unit, scale, target kind, target
    rows += [
        ("seq write 1 MiB O_DIRECT io=" + mode, pair(series["seq_write_" + mode], series["seq_write_raw_" + mode]), "MiB/s", 1 / 2**20, "ratio>=", 0.80),
        ("seq read 1 MiB O_DIRECT io=" + mode, pair(series["seq_read_" + mode], series["seq_read_raw_" + mode]), "MiB/s", 1 / 2**20, "ratio>=", 0.80),
        ("rand read 4 KiB QD16 io=" + mode, pair(series["rand_read_" + mode], series["rand_read_raw_" + mode]), "IOPS", 1, "ratio>=", 0.50),
    ]
rows += [
    ("create $NFILES files", pair("${series[create_csvfs]}", "${series[create_plain]}"), "files/s", 1, "value>=", 10000),
    ("stat $NFILES files", pair("${series[stat_csvfs]}", "${series[stat_plain]}"), "files/s", 1, None, None),
    ("unlink $NFILES files", pair("${series[unlink_csvfs]}", "${series[unlink_plain]}"), "files/s", 1, None, None),
    ("ls -l $NFILES entries, cold", pair("$ls_csvfs", "$ls_plain"), "s", 1, "value<", 0.5),
]
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
    fmt = "%.3f" if unit == "s" else "%.0f"
    print("%-38s %14s %14s %8.2f %16s  %-6s %s" % (name, (fmt % (mine * scale)) + " " + unit, (fmt % (base * scale)) + " " + unit,
                                                   ratio, goal, result, " ".join("%.2f" % r for r in ratios)))
modes = "${io_modes[*]}".split()
if len(modes) == 2:
    # The engines against each other (each round's pair ran back to back, same disk, same file layout).
    print()
    for metric, label in [("seq_write", "seq write"), ("seq_read", "seq read"), ("rand_read", "rand read")]:
        ratios = [x / y for x, y in zip(numbers(series[metric + "_" + modes[0]]), numbers(series[metric + "_" + modes[1]]))]
        print("%-38s %8.2f   per round: %s" % ("%s io=%s / io=%s" % (label, modes[0], modes[1]), statistics.median(ratios),
                                               " ".join("%.2f" % r for r in ratios)))
print()
print("%d target(s) missed" % failed if failed else "all targets met")
open("$BENCH_DIR/failed", "w").write(str(failed))
EOF
[[ $(cat "$BENCH_DIR/failed") == 0 ]]
