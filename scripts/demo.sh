#!/usr/bin/env bash
# A newcomer's first run: install what is missing, build, format a LUN image, mount it as two nodes of one
# cluster on this host (as two hypervisor hosts would mount one LUN), write on one, list it from the other,
# show the cluster with `csvfs status`.
# Leaves both mounted; the last lines say how to unmount them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product csvfs
csvfs=$(swift build -c release --show-bin-path)/csvfs
ln -sf "$csvfs" /sbin/mount.csvfs     # so `mount -t csvfs LUN DIR` and fstab lines work

work=${CSVFS_DEMO_DIR:-/tmp/csvfs-demo}
mkdir -p "$work/node1" "$work/node2"
for node in node2 node1 mnt; do
  if mountpoint -q "$work/$node" 2>/dev/null; then "$csvfs" unmount "$work/$node"; fi
done
# The old volume's cluster secret goes with it (format writes the new one to /etc/csvfs/VOLUME-UUID.secret).
old=$("$csvfs" info "$work/lun.img" 2>/dev/null | awk '$1 == "volume:" { print $2 }' || true)
if [ -n "$old" ]; then rm -f "/etc/csvfs/$old.secret"; fi
"$csvfs" format "$work/lun.img" --size 4G --force
mount -t csvfs "$work/lun.img" "$work/node1"      # the first node: elected coordinator
"$csvfs" mount "$work/lun.img" "$work/node2"      # a second node joins the same cluster
echo "hello from node 1" > "$work/node1/hello.txt"
mkdir -p "$work/node2/vms"
"$csvfs" info "$work/lun.img"
echo "--- node 2 lists what node 1 wrote, node 1 what node 2 made:"
ls -la "$work/node2"
cat "$work/node2/hello.txt"
ls -ld "$work/node1/vms"
df -h "$work/node1"
echo "--- the cluster:"
"$csvfs" status "$work/node1"
echo
echo "mounted $work/lun.img on $work/node1 and $work/node2, two nodes of one cluster"
echo "unmount with: $csvfs unmount $work/node2; $csvfs unmount $work/node1"
