#!/bin/sh
# Sets a fresh Debian machine up for vmd-ts: QEMU and friends from Debian, the npm
# dependencies (which build the native addon), and the test guest.
set -eu
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 qemu-utils busybox-static cpio iproute2 >/dev/null
fi
npm ci
sh scripts/build-guest.sh
