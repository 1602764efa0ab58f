#!/usr/bin/env bash
# A newcomer's first run: install what is missing, build, format a LUN image, mount it, show it.
# Leaves the volume mounted; the last lines say how to unmount it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product csvfs
csvfs=$(swift build -c release --show-bin-path)/csvfs
ln -sf "$csvfs" /sbin/mount.csvfs     # so `mount -t csvfs LUN DIR` and fstab lines work

work=${CSVFS_DEMO_DIR:-/tmp/csvfs-demo}
mkdir -p "$work/mnt"
if mountpoint -q "$work/mnt"; then "$csvfs" unmount "$work/mnt"; fi
"$csvfs" format "$work/lun.img" --size 4G --force
mount -t csvfs "$work/lun.img" "$work/mnt"
echo "hello from CSVFS" > "$work/mnt/hello.txt"
mkdir -p "$work/mnt/vms"
"$csvfs" info "$work/lun.img"
ls -la "$work/mnt"
df -h "$work/mnt"
echo
echo "mounted $work/lun.img on $work/mnt; unmount with: $csvfs unmount $work/mnt"
