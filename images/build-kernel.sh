#!/bin/bash
# Builds godvm's test kernel from Debian's linux-source-6.12:
#   tinyconfig + images/kernel/config.fragment, images/kernel/patches/*.patch,
#   the in-kernel test agent (images/agent) as drivers/misc/godvm-agent.
# Results go to $CACHE/kernel-<hash>/{vmlinux,bzImage,System.map,config}
# where <hash> covers every input (source package version, fragment,
# patches, agent sources, this script). A second run with the same inputs
# does nothing. Either way $CACHE/kernel-current then points at it (what
# `godvm bench` and the e2e tests boot when given no kernel). The source
# tree is kept in $CACHE/build-<srchash> (package version + patches), so
# agent or config changes rebuild incrementally.
#
# Usage: images/build-kernel.sh [--print-path] [--print-dir]
#   --print-path  print only the vmlinux path on stdout (build first if needed)
#   --print-dir   print only the output directory on stdout
# Environment: GODVM_CACHE (default ~/.cache/godvm), JOBS (default nproc).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkg=linux-source-6.12
tarball=/usr/src/linux-source-6.12.tar.xz
cache=${GODVM_CACHE:-$HOME/.cache/godvm}
jobs=${JOBS:-$(nproc)}
print=

for arg in "$@"; do
	case $arg in
	--print-path) print=path ;;
	--print-dir) print=dir ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "build-kernel.sh: unknown argument $arg (try --help)" >&2
		exit 2
		;;
	esac
done

say() { echo "build-kernel: $*" >&2; }
die() { say "error: $*"; exit 1; }

if [ ! -f "$tarball" ]; then
	say "$tarball missing, installing $pkg"
	if [ "$(id -u)" -ne 0 ]; then
		die "run as root or install $pkg first (apt-get install $pkg)"
	fi
	apt-get install -y "$pkg" >&2 || die "apt-get install $pkg failed"
fi
version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
[ -n "$version" ] || version="unknown-$(stat -c %s-%Y "$tarball")"

# The cache key: everything that can change the kernel.
inputs() {
	echo "pkg $pkg $version"
	(
		cd "$here"
		find kernel/config.fragment kernel/patches agent build-kernel.sh -type f \
			! -name '*~' ! -name '.*' | LC_ALL=C sort | xargs sha256sum
	)
}
hash=$(inputs | sha256sum | cut -c1-16)
out=$cache/kernel-$hash
# The source tree depends only on the package: a change to the patches,
# the agent or the fragment rebuilds incrementally in the same tree (patches
# that changed are reversed with the copy kept when they were applied).
srchash=$(echo "pkg $pkg $version" | sha256sum | cut -c1-16)
build=$cache/build-$srchash
log=$cache/kernel-$hash.log

# kernel-current -> kernel-<hash>: the kernel built or found last, for
# whoever looks for "the test kernel" without a path (godvm bench, the e2e
# tests: internal/kernelcache). Relative, so the cache can be moved or
# shared; replaced by a rename, so a reader never sees it missing.
point_current() {
	local tmp=$cache/.kernel-current.$$
	ln -sfn "kernel-$hash" "$tmp" && mv -fT "$tmp" "$cache/kernel-current" ||
		{ rm -f "$tmp"; say "warning: could not point $cache/kernel-current at kernel-$hash"; }
}

finish() {
	point_current
	case $print in
	path) echo "$out/vmlinux" ;;
	dir) echo "$out" ;;
	*)
		say "kernel $hash ready:"
		ls -l "$out" >&2
		echo "$out/vmlinux"
		;;
	esac
	exit 0
}

[ -f "$out/.complete" ] && finish

mkdir -p "$cache"
exec 9>"$cache/build-$srchash.lock"
flock 9
[ -f "$out/.complete" ] && finish # built by a concurrent run

for tool in make gcc flex bison bc patch tar xz lz4 perl; do
	command -v "$tool" >/dev/null || die "$tool not found (make deps installs the build dependencies)"
done

say "building kernel $hash ($pkg $version, -j$jobs); log: $log"
start=$(date +%s)
: >"$log"

step() {
	say "$1"
	echo "=== $1" >>"$log"
}

fail() {
	say "FAILED: $1; last lines of $log:"
	tail -n 40 "$log" >&2
	exit 1
}

src=$build/linux
if [ ! -f "$build/.extracted" ]; then
	step "extracting $tarball"
	rm -rf "$build"
	mkdir -p "$src"
	tar -xJf "$tarball" -C "$src" --strip-components=1 >>"$log" 2>&1 || fail "extract"
	touch "$build/.extracted"
fi

# Patches: $build/applied holds a copy of each patch as applied. Keep the
# longest prefix (in name order) that is unchanged, reverse the rest newest
# first, then apply what is new.
applied=$build/applied
mkdir -p "$applied"
mapfile -t want < <(cd "$here/kernel/patches" && find . -maxdepth 1 -name '*.patch' -printf '%f\n' | LC_ALL=C sort)
mapfile -t have < <(cd "$applied" && find . -maxdepth 1 -name '*.patch' -printf '%f\n' | LC_ALL=C sort)
keep=0
while [ $keep -lt ${#want[@]} ] && [ $keep -lt ${#have[@]} ] && [ "${want[$keep]}" = "${have[$keep]}" ] &&
	cmp -s "$here/kernel/patches/${want[$keep]}" "$applied/${have[$keep]}"; do
	keep=$((keep + 1))
done
for ((i = ${#have[@]} - 1; i >= keep; i--)); do
	step "reversing ${have[$i]} (changed or removed)"
	patch -d "$src" -p1 -R --batch <"$applied/${have[$i]}" >>"$log" 2>&1 || fail "reverse ${have[$i]}"
	rm -f "$applied/${have[$i]}"
done
for ((i = keep; i < ${#want[@]}; i++)); do
	step "applying ${want[$i]}"
	patch -d "$src" -p1 --forward --batch <"$here/kernel/patches/${want[$i]}" >>"$log" 2>&1 || fail "patch ${want[$i]}"
	cp "$here/kernel/patches/${want[$i]}" "$applied/"
done

# The agent: copied fresh on every build (its sources are part of the hash),
# hooked into drivers/misc once.
step "adding the godvm agent as drivers/misc/godvm-agent"
rm -rf "$src/drivers/misc/godvm-agent"
mkdir -p "$src/drivers/misc/godvm-agent"
cp "$here"/agent/Kconfig "$here"/agent/Makefile "$here"/agent/*.c "$here"/agent/*.h \
	"$src/drivers/misc/godvm-agent/"
if ! grep -q godvm-agent "$src/drivers/misc/Makefile"; then
	echo 'obj-$(CONFIG_GODVM_AGENT) += godvm-agent/' >>"$src/drivers/misc/Makefile"
	# Before the final "endmenu" of drivers/misc/Kconfig.
	sed -i '$ {/^endmenu/i source "drivers/misc/godvm-agent/Kconfig"
}' "$src/drivers/misc/Kconfig"
	grep -q godvm-agent "$src/drivers/misc/Kconfig" || fail "hooking drivers/misc/Kconfig"
fi

export ARCH=x86_64
# Reconfigure only when what decides the .config changed (a minute or two).
config_key=$(cat "$here/kernel/config.fragment" "$here/agent/Kconfig" "$here/build-kernel.sh" | sha256sum | cut -c1-16)
if [ -f "$src/.config" ] && [ "$(cat "$build/.config-key" 2>/dev/null)" = "$config_key" ]; then
	step "configuration unchanged (.config from fragment $config_key)"
else
	rm -f "$build/.config-key"
	step "configuring: tinyconfig + kernel/config.fragment"
	make -C "$src" tinyconfig >>"$log" 2>&1 || fail "make tinyconfig"
	(cd "$src" && scripts/kconfig/merge_config.sh -n .config "$here/kernel/config.fragment") >>"$log" 2>&1 ||
		fail "merge_config.sh"
	echo "$config_key" >"$build/.config-key"
fi

# Every value the fragment asks for must have survived.
bad=0
while IFS= read -r line; do
	case $line in
	CONFIG_*=*)
		if ! grep -qxF -- "$line" "$src/.config"; then
			say "config: requested $line, got: $(grep -E "^(# )?${line%%=*}[= ]" "$src/.config" || echo absent)"
			bad=1
		fi
		;;
	"# CONFIG_"*" is not set")
		sym=${line#\# }
		sym=${sym%% *}
		if grep -qE "^$sym=" "$src/.config"; then
			say "config: requested $sym off, got: $(grep -E "^$sym=" "$src/.config")"
			bad=1
		fi
		;;
	esac
done <"$here/kernel/config.fragment"
[ $bad -eq 0 ] || fail "config fragment values dropped (see above; a dependency is missing)"

step "make -j$jobs vmlinux bzImage"
make -C "$src" -j"$jobs" vmlinux bzImage >>"$log" 2>&1 || fail "make"

grep -q ' godvm_agent_main$' "$src/System.map" || fail "agent missing from System.map"
grep -q ' cpu_parse_setcpuid$' "$src/System.map" ||
	grep -q 'setup_setcpuid' "$src/System.map" || fail "setcpuid patch missing from System.map"
grep -q ' godvm_pv64b_store$' "$src/System.map" || fail "pv64b patch missing from System.map"

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp "$src/vmlinux" "$src/arch/x86/boot/bzImage" "$src/System.map" "$out.tmp/"
cp "$src/.config" "$out.tmp/config"
{
	echo "hash=$hash"
	echo "package=$pkg $version"
	echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "seconds=$(($(date +%s) - start))"
	echo "jobs=$jobs"
	inputs
} >"$out.tmp/build-info"
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
say "done in $(($(date +%s) - start)) s"
finish
