#!/usr/bin/env bash
# Installs the Debian packages CSVFS builds and tests against. Idempotent; needs root.
# --hypervisor also installs qemu-system-x86 for LiveMigrationTests: about 150 packages, so only the CI step
# that runs those tests asks for it.
set -euo pipefail
hypervisor=false
for argument in "$@"; do
  case "$argument" in
    --hypervisor) hypervisor=true ;;
    *) echo "usage: $0 [--hypervisor]" >&2; exit 2 ;;
  esac
done
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
export DEBIAN_FRONTEND=noninteractive
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if $hypervisor && ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"; then
  echo "installing: qemu-system-x86"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi
modprobe fuse 2>/dev/null || true
test -c /dev/fuse || { echo "error: /dev/fuse is missing: FUSE is not available on this machine" >&2; exit 1; }
