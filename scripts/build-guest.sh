#!/bin/sh
# build-guest.sh [OUTDIR]: build the test guest that vmd-ts boots in its tests
# and benchmarks, from Debian packages only, without installing anything.
#
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img and OUTDIR/.stamp (default OUTDIR:
# <repo>/guest). The initramfs holds a static busybox, the virtio, ACPI
# button and pvpanic modules with their dependencies, guest-init/init as
# /init, and its acpid and udhcpc scripts. Environment: KERNEL_FLAVOR (default
# cloud-amd64: it boots about twice as fast under TCG as amd64), or KERNEL_PKG
# to pin a kernel package.
# Needs apt-get and dpkg-deb; the downloaded busybox does cpio and depmod.
set -eu

# Drivers the guest needs on q35 and microvm; Debian builds them as modules.
# Bus drivers come first: /init loads them in this order.
MODULES='virtio_pci virtio_mmio virtio_blk virtio_net button evdev
pvpanic_pci pvpanic_mmio'
LISTS=/var/lib/apt/lists

prog=build-guest
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(dirname "$here")/guest}
flavor=${KERNEL_FLAVOR:-cloud-amd64}
choice=${KERNEL_PKG:-flavor $flavor}

die() {
  echo "$prog: $*" >&2
  exit 1
}

# Anything that changes the guest changes the stamp. The kernel is stamped as
# chosen, not as resolved: resolving would cost an apt-cache run on every call.
stamp=$({ cat "$0" "$here"/guest-init/*; echo "$choice"; } |
  sha256sum)
stamp=${stamp%% *}
if [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ -f "$out/.stamp" ]
then
  read -r old <"$out/.stamp" || old=
  if [ "$old" = "$stamp" ]; then
    echo "$prog: $out: up to date" >&2
    exit 0
  fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/build-guest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

# Refresh the package lists only when they are missing or a day old. apt
# sets a list's mtime to the server's Last-Modified, but it touches every
# *Release file on each update, even when nothing changed: use their ctime.
if ! ls "$LISTS"/*_Packages* >/dev/null 2>&1 ||
  [ -z "$(find "$LISTS" -maxdepth 1 -name '*Release' -cmin -1440)" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "$prog: apt package lists: missing or stale, updating" >&2
    apt-get -qq update >&2 || die "apt-get update failed"
  else
    echo "$prog: apt package lists: stale; not root, not updating" >&2
  fi
fi

if [ -n "${KERNEL_PKG:-}" ]; then
  kpkg=$KERNEL_PKG
else
  kpkg=$(apt-cache depends "linux-image-$flavor" 2>/dev/null |
    sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[0-9][^ <>]*\).*/\1/p' |
    head -n1)
  [ -n "$kpkg" ] ||
    die "linux-image-$flavor: no versioned linux-image among its dependencies"
fi

# As root, apt downloads as user _apt, which cannot enter the private tmp dir.
sandbox=
[ "$(id -u)" -ne 0 ] || sandbox='-o APT::Sandbox::User=root'
# shellcheck disable=SC2086 # $sandbox is deliberately split
(cd "$tmp" && apt-get -qq $sandbox download "$kpkg" busybox-static >&2) ||
  die "$kpkg, busybox-static: apt-get download failed"
mkdir "$tmp/k" "$tmp/b"
dpkg-deb -x "$tmp/$kpkg"_*.deb "$tmp/k"
dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/b"
bb=$tmp/b/bin/busybox
[ -x "$bb" ] || die "busybox-static: no bin/busybox in the package"

set -- "$tmp"/k/boot/vmlinuz-*
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  die "$kpkg: expected one boot/vmlinuz-*, found: $*"
fi
vmlinuz=$1
kver=${vmlinuz##*/vmlinuz-}
kmods=$tmp/k/lib/modules/$kver
[ -d "$kmods" ] || die "$kpkg: no lib/modules/$kver"

root=$tmp/root
for dir in bin sbin usr/bin usr/sbin etc/acpi/PWRF etc/udhcpc proc sys dev \
  run tmp "lib/modules/$kver"; do
  mkdir -p "$root/$dir"
done
cp "$bb" "$root/bin/busybox"
ln -s busybox "$root/bin/sh" # the rest of the applet links come at boot
cp "$here/guest-init/init" "$root/init"
cp "$here/guest-init/power-button" "$root/etc/acpi/PWRF/00000080"
cp "$here/guest-init/dhcp-event" "$root/etc/udhcpc/default.script"
chmod 755 "$root/init" "$root/etc/acpi/PWRF/00000080" \
  "$root/etc/udhcpc/default.script"
echo "$MODULES" | tr ' ' '\n' >"$root/etc/modules"

# Copy each wanted module, then the ones named in its depends= field, until
# none is missing. Names treat - and _ alike, as the kernel does; compressed
# modules are stored decompressed so busybox modprobe needs no decompressor.
find "$kmods/kernel" -name '*.ko*' >"$tmp/ko.list"
todo=$MODULES
have=' '
count=0
while :; do
  # shellcheck disable=SC2086 # a list of module names, split on purpose
  set -- $todo
  [ $# -gt 0 ] || break
  name=$(echo "$1" | tr - _)
  shift
  todo=$*
  case $have in *" $name "*) continue ;; esac
  have="$have$name "
  pattern=$(echo "$name" | sed 's/_/[-_]/g')
  src=$(grep -E "/$pattern\\.ko(\\.xz|\\.zst|\\.gz)?\$" "$tmp/ko.list" |
    head -n1)
  [ -n "$src" ] || die "module $name: not in $kpkg (built in or absent?)"
  rel=${src#"$kmods/"}
  dst=$root/lib/modules/$kver/${rel%.ko*}.ko
  mkdir -p "${dst%/*}"
  case $src in
  *.ko) cp "$src" "$dst" ;;
  *.xz) "$bb" xz -dc "$src" >"$dst" ;;
  *.gz) gzip -dc "$src" >"$dst" ;;
  *.zst) zstd -qdc "$src" >"$dst" || die "module $name: cannot decompress" ;;
  esac
  count=$((count + 1))
  # .modinfo is a run of NUL-terminated key=value strings.
  todo="$todo $(tr '\0' '\n' <"$dst" | sed -n 's/^depends=//p' | tr , ' ')"
done
"$bb" depmod -b "$root" "$kver"

# -R 0:0 so that the guest's files belong to root even when built by a user.
(cd "$root" && find . | "$bb" cpio -o -H newc -R 0:0 -F "$tmp/initrd.cpio" \
  2>"$tmp/cpio.err") || die "initrd: cpio failed: $(cat "$tmp/cpio.err")"
# Drop the stamp first: a run that dies between the two moves below must not
# leave a stamp that vouches for a mixed pair.
mkdir -p "$out"
rm -f "$out/.stamp"
cp "$vmlinuz" "$out/.vmlinuz.$$"
gzip -9n <"$tmp/initrd.cpio" >"$out/.initrd.img.$$"
mv -f "$out/.vmlinuz.$$" "$out/vmlinuz"
mv -f "$out/.initrd.img.$$" "$out/initrd.img"
echo "$stamp" >"$out/.stamp"

size=$(wc -c <"$out/initrd.img")
echo "$prog: $out: built: kernel $kver, $count modules, initrd $size bytes" >&2
