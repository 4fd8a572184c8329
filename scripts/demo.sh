#!/bin/sh
# The main job, end to end: start vmd, start the demo VM, wait until the guest is ready,
# show the status table, stop the VM gracefully, and stop vmd.
set -eu
cd "$(dirname "$0")/.."

sh scripts/build-guest.sh
run=$(mktemp -d /tmp/vmd-demo.XXXXXX)
# VM processes run unprivileged and start in an empty directory under this one.
chmod 755 "$run"
sock="$run/vmd.sock"
vmctl() { node bin/vmctl.cjs --socket "$sock" "$@"; }

node bin/vmd.js -d --socket "$sock" --state-dir "$run" -D guest="$PWD/guest" \
  -f scripts/demo.conf 2>"$run/vmd.log" &
vmd=$!
trap 'kill $vmd 2>/dev/null; wait $vmd 2>/dev/null; rm -rf "$run"' EXIT INT TERM
i=0
until [ -S "$sock" ]; do
  i=$((i + 1))
  if [ $i -gt 100 ] || ! kill -0 $vmd 2>/dev/null; then cat "$run/vmd.log" >&2; exit 1; fi
  sleep 0.1
done

vmctl start -w --timeout 120 demo
vmctl status
vmctl stop --timeout 30 demo
vmctl status
echo "vmd log:"
sed 's/^/  /' "$run/vmd.log"
