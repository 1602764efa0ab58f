# What the benchmarks share; sourced, not run. Needs BENCH_DIR (where fio's JSON goes) and FIO_SIZE.

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
