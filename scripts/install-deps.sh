#!/usr/bin/env bash
# Installs the Debian packages CSVFS builds and tests against. Idempotent; needs root.
set -euo pipefail
packages=(
  libfuse3-dev fuse3 libsqlite3-dev libaio-dev  # build: FUSE low-level API, SQLite, Linux native AIO
  qemu-utils libvhdi-utils            # VHD/VHDX cross-checks (qemu-img, qemu-io, vhdimount)
  etcd-server                         # the etcd coordination backend and its tests
  fio bc                              # benchmarks
  nbdkit nbdkit-plugin-python libnbd-bin  # tests: a LUN that fails with real EIO (no device-mapper in the test kernel)
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
modprobe fuse 2>/dev/null || true
test -c /dev/fuse || { echo "error: /dev/fuse is missing: FUSE is not available on this machine" >&2; exit 1; }
