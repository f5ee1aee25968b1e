#!/bin/bash
# Builds godvm's test initrd: an uncompressed newc cpio with busybox-static,
# images/initrd/init and, when installed on this machine, accel-config with
# its libraries. Uncompressed on purpose: inflating a gzip initrd costs about
# a minute in a guest whose ring 0 is emulated.
# Result: $CACHE/initrd-<hash>/initrd.cpio, <hash> covering the package
# versions, the init script and this script; a second run does nothing.
#
# Usage: images/build-initrd.sh [--print-path] [--no-accel-config]
# Environment: GODVM_CACHE (default ~/.cache/godvm).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${GODVM_CACHE:-$HOME/.cache/godvm}
print=
accel=1

for arg in "$@"; do
	case $arg in
	--print-path) print=path ;;
	--no-accel-config) accel=0 ;;
	-h | --help)
		sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "build-initrd.sh: unknown argument $arg (try --help)" >&2
		exit 2
		;;
	esac
done

say() { echo "build-initrd: $*" >&2; }
die() { say "error: $*"; exit 1; }

busybox=/bin/busybox
# Capture whole outputs before matching: with pipefail, `grep -q` closing a
# pipe early kills the writer with SIGPIPE and fails the check at random.
bbhelp=$([ -x "$busybox" ] && "$busybox" --help 2>&1 || true)
[[ $bbhelp == *BusyBox* ]] ||
	die "busybox-static not installed (apt-get install busybox-static)"
bbfile=$(file -L "$busybox" 2>/dev/null || true)
bbldd=$(ldd "$busybox" 2>&1 || true)
[[ $bbfile == *"statically linked"* || $bbldd == *"not a dynamic"* ]] ||
	die "$busybox is not the static build (apt-get install busybox-static)"
command -v cpio >/dev/null || die "cpio not installed"

accel_bin=
if [ $accel -eq 1 ] && command -v accel-config >/dev/null; then
	accel_bin=$(command -v accel-config)
fi

inputs() {
	echo "busybox $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || sha256sum "$busybox")"
	if [ -n "$accel_bin" ]; then
		echo "accel-config $(dpkg-query -W -f='${Version}' accel-config 2>/dev/null || sha256sum "$accel_bin")"
	fi
	(cd "$here" && sha256sum initrd/init build-initrd.sh)
}
hash=$(inputs | sha256sum | cut -c1-16)
out=$cache/initrd-$hash

finish() {
	if [ "$print" = path ]; then
		echo "$out/initrd.cpio"
	else
		say "initrd $hash ready:"
		ls -l "$out" >&2
		echo "$out/initrd.cpio"
	fi
	exit 0
}

[ -f "$out/.complete" ] && finish
mkdir -p "$cache"
exec 9>"$cache/initrd-$hash.lock"
flock 9
[ -f "$out/.complete" ] && finish

stage=$(mktemp -d "$cache/initrd-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,etc,usr/bin,usr/sbin,lib,lib64}
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh" # the interpreter of /init; /init installs the rest
install -m 0755 "$here/initrd/init" "$stage/init"

if [ -n "$accel_bin" ]; then
	say "adding $accel_bin and its libraries"
	cp "$accel_bin" "$stage/usr/bin/accel-config"
	# Every library ldd resolves, at the same path (the dynamic loader too).
	ldd "$accel_bin" | grep -oE '/[^ ]+' | while read -r lib; do
		mkdir -p "$stage$(dirname "$lib")"
		cp -L "$lib" "$stage$lib"
	done
else
	say "accel-config not installed here; the initrd will not configure DSA"
fi

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
(cd "$stage" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --owner=0:0 --quiet) >"$out.tmp/initrd.cpio"
{
	echo "hash=$hash"
	echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	inputs
} >"$out.tmp/build-info"
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
finish
