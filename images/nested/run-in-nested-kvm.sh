#!/bin/bash
# run-in-nested-kvm.sh: run a command inside a QEMU/TCG virtual machine that has a working
# /dev/kvm (kvm_amd on TCG's emulated AMD SVM), for hosts without /dev/kvm.
#
# Usage: run-in-nested-kvm.sh [options] [--] CMD [ARG...]
#   -s DIR      share host directory DIR read-write at the same path in the VM (repeatable)
#   -r DIR      share host directory DIR read-only at the same path in the VM (repeatable)
#   -e VAR      pass environment variable VAR into the VM (repeatable; GODVM_* always pass)
#   -n          do not share the host's /usr read-only (then only static programs run)
#   -t SECONDS  kill the VM after SECONDS (default 600); exit status 124
#   -m MEM      VM memory (default 2G)
#   -c CPUS     VM vCPUs (default 1; TCG runs them on one host thread each)
#   -k PARAMS   kvm_amd module parameters, comma separated (e.g. npt=0)
#   -v          stream the VM's kernel console to stderr (default: shown only on failure)
#   -p          only build (or find) the cached kernel + initramfs and print its directory
#
# The current directory is always shared read-write at the same path, and the command runs
# there with /bin/sh -c semantics on its quoted arguments. Its stdout and stderr come back
# on this script's stdout and stderr, and its exit status is this script's exit status.
# Statuses of the script itself: 124 timeout, 125 VM failed before the command finished
# (or stopped making progress: no heartbeat from the VM for GODVM_NESTED_STALL seconds,
# default 120), 126 setup error on the host. The command sees GODVM_NESTED_VM=1;
# GODVM_NESTED_MONITOR=PATH puts the VM's QEMU monitor socket at PATH.
#
# Needs (Debian packages): qemu-system-x86, busybox-static, cpio, and apt access to download
# linux-image-<version>-amd64 once (GODVM_NESTED_KERNEL_PKG chooses the package; default: the
# one linux-image-amd64 depends on). The outer kernel and initramfs are cached under
# ${GODVM_CACHE:-~/.cache/godvm}/nested-<hash>/ (vmlinux, vmlinuz, initramfs.cpio).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "run-in-nested-kvm: $*" >&2; exit 126; }

shares=() roshares=() envs=() share_usr=1 timeout_s=600 mem=2G cpus=1 kvmamd= verbose=0 printonly=0
while getopts 's:r:e:nt:m:c:k:vph' opt; do
	case $opt in
	s) shares+=("$(realpath -e -- "$OPTARG" 2>/dev/null)") || die "no such directory: $OPTARG" ;;
	r) roshares+=("$(realpath -e -- "$OPTARG" 2>/dev/null)") || die "no such directory: $OPTARG" ;;
	e) envs+=("$OPTARG") ;;
	n) share_usr=0 ;;
	t) timeout_s=$OPTARG ;;
	m) mem=$OPTARG ;;
	c) cpus=$OPTARG ;;
	k) kvmamd=$OPTARG ;;
	v) verbose=1 ;;
	p) printonly=1 ;;
	h) sed -n '2,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
	*) die "bad option (see -h)" ;;
	esac
done
shift $((OPTIND - 1))
[[ $printonly == 1 || $# -gt 0 ]] || die "no command given (see -h)"
[[ $timeout_s =~ ^[0-9]+$ ]] || die "-t wants seconds, got '$timeout_s'"
[[ $cpus =~ ^[0-9]+$ ]] || die "-c wants a number, got '$cpus'"

for tool in qemu-system-x86_64 cpio sha256sum; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install qemu-system-x86 cpio)"
done
busybox=${GODVM_NESTED_BUSYBOX:-/bin/busybox}
[[ -x $busybox ]] && ! ldd "$busybox" >/dev/null 2>&1 ||
	die "$busybox is not a static busybox (apt-get install busybox-static)"

# --- The cached outer kernel and initramfs -------------------------------------------------
cachetop=${GODVM_CACHE:-$HOME/.cache/godvm}
pkg=${GODVM_NESTED_KERNEL_PKG:-}
if [[ -z $pkg ]]; then
	# apt-cache takes seconds on a busy machine: remember its answer for a week.
	pkgfile=$cachetop/nested-kernel-package
	if [[ -n $(find "$pkgfile" -mtime -7 2>/dev/null) ]]; then
		pkg=$(cat "$pkgfile")
	else
		pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
		[[ -n $pkg ]] || die "cannot resolve linux-image-amd64 with apt-cache; set GODVM_NESTED_KERNEL_PKG"
		mkdir -p "$cachetop" && echo "$pkg" >"$pkgfile"
	fi
fi
# The cache key covers every input of the build: the package, busybox, /init, the module
# list, and this script's build section (between the two "# ---" markers).
key=$( {
	echo "$pkg"
	sha256sum <"$busybox"
	cat "$here/init" "$here/modules.list"
	sed -n '/^# --- The cached/,/^# --- One run/p' "$here/run-in-nested-kvm.sh"
} | sha256sum | cut -c1-16)
cache=$cachetop/nested-$key
if [[ ! -f $cache/initramfs.cpio ]]; then
	work=$(mktemp -d "${TMPDIR:-/tmp}/nested-build.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	echo "run-in-nested-kvm: building $cache (kernel package $pkg)" >&2
	(cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
	dpkg-deb -x "$work"/"$pkg"_*.deb "$work/pkg"
	kver=${pkg#linux-image-}
	kver=${kver%-unsigned}
	mods=$work/pkg/lib/modules/$kver/kernel
	[[ -d $mods ]] || die "$pkg has no lib/modules/$kver"
	root=$work/root
	mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,root,modules}
	cp "$busybox" "$root/bin/busybox"
	ln -s busybox "$root/bin/sh"
	cp "$here/init" "$root/init"
	chmod 755 "$root/init"
	grep -v -E '^\s*(#|$)' "$here/modules.list" | while read -r m; do
		f=$mods/$m
		if [[ ! -f $f ]]; then
			for z in xz zst gz; do [[ -f $f.$z ]] && f=$f.$z; done
		fi
		case $f in
		*.xz) xz -dc "$f" >"$root/modules/$(basename "$m")" ;;
		*.zst) zstd -qdc "$f" >"$root/modules/$(basename "$m")" ;;
		*.gz) gzip -dc "$f" >"$root/modules/$(basename "$m")" ;;
		*.ko) cp "$f" "$root/modules/" ;;
		esac || die "module $m missing from $pkg"
		basename "$m" >>"$root/modules/order"
	done
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$work/initramfs.cpio"
	mkdir -p "$(dirname "$cache")"
	mkdir -p "$work/out"
	cp "$work/pkg/boot/vmlinuz-$kver" "$work/out/vmlinuz"
	# Booting the uncompressed ELF through its PVH entry saves TCG the XZ decompressor
	# (5-8 s of every run); the bzImage stays as the fallback.
	off=$( (LC_ALL=C grep -abo $'\xfd7zXZ' "$work/out/vmlinuz" || true) | head -n 1 | cut -d: -f1)
	if [[ -n $off ]]; then
		(tail -c +"$((off + 1))" "$work/out/vmlinuz" || true) | xz -dc --single-stream >"$work/out/vmlinux" 2>/dev/null || true
		[[ $(head -c 4 "$work/out/vmlinux") == $'\x7fELF' ]] || rm -f "$work/out/vmlinux"
	fi
	mv "$work/initramfs.cpio" "$work/out/initramfs.cpio"
	echo "$pkg" >"$work/out/package"
	# Publish atomically: concurrent builders race harmlessly.
	mv -T "$work/out" "$cache" 2>/dev/null || true
	[[ -f $cache/initramfs.cpio ]] || die "could not populate $cache"
	rm -rf "$work"
	trap - EXIT
	# Drop builds of other inputs that nobody used for a week.
	find "$cachetop" -maxdepth 1 -type d -name 'nested-????????????????' ! -path "$cache" -mtime +7 \
		-exec rm -rf {} + 2>/dev/null || true
fi
if [[ $printonly == 1 ]]; then
	echo "$cache"
	exit 0
fi

# --- One run ------------------------------------------------------------------------------
run=$(mktemp -d "${TMPDIR:-/tmp}/nested-run.XXXXXX")
qpid= cpids=()
cleanup() {
	[[ -n $qpid ]] && kill "$qpid" 2>/dev/null
	for p in "${cpids[@]}"; do kill "$p" 2>/dev/null; done
	rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
{
	# A heartbeat in the run share while the command runs: the host sees a VM that has
	# stopped making progress (below) long before the -t limit.
	echo '( while :; do date +%s >/run/nested/heartbeat; sleep 5; done ) </dev/null >/dev/null 2>&1 &'
	for a in "$@"; do printf '%s ' "$(quote "$a")"; done
	echo
} >"$run/cmd"
pwd -P >"$run/cwd"
{
	for v in "${envs[@]}" $(compgen -e | grep '^GODVM_' || true) PATH; do
		[[ -v $v ]] && echo "export $v=$(quote "${!v}")"
	done
	# Tests may tell the nested VM's own faults from theirs (e2e nestedEnvFault).
	echo "export GODVM_NESTED_VM=1"
} >"$run/env"

kernel=$cache/vmlinuz
[[ -f $cache/vmlinux ]] && kernel=$cache/vmlinux
qargs=(-accel tcg -cpu max -smp "$cpus" -m "$mem" -nodefaults -nographic -no-reboot
	-kernel "$kernel" -initrd "$cache/initramfs.cpio")
n=0
addshare() { # path mode
	local tag=s$n
	n=$((n + 1))
	local ro=
	[[ $2 == ro ]] && ro=,readonly=on
	qargs+=(-virtfs "local,path=$1,mount_tag=$tag,security_model=none,multidevs=remap$ro")
	echo "$tag $1 $2" >>"$run/shares"
}
: >"$run/shares"
qargs+=(-virtfs "local,path=$run,mount_tag=run,security_model=none")
[[ $share_usr == 1 ]] && addshare /usr ro
for d in "${roshares[@]}"; do addshare "$d" ro; done
addshare "$(pwd -P)" rw
# Programs named by a path outside the shares (e.g. the test binary that
# `go test -exec run-in-nested-kvm.sh` passes from its /tmp/go-build* directory, also behind a
# wrapper) get their directory shared read-only: every argument that is an executable file.
declare -A seen=()
for a in "$@"; do
	[[ $a == */* && -f $a && -x $a ]] || continue
	bindir=$(dirname "$(realpath -e -- "$a")")
	case $bindir/ in
	"$(pwd -P)"/* | /usr/*) continue ;;
	esac
	[[ -n ${seen[$bindir]:-} ]] && continue
	seen[$bindir]=1
	addshare "$bindir" ro
done
# The test kernel, initrd and godvm binary named by GODVM_* variables come along read-only.
for v in GODVM_TEST_KERNEL GODVM_TEST_INITRD GODVM_BINARY; do
	[[ -n ${!v:-} && -f ${!v} ]] && addshare "$(dirname "$(realpath -e -- "${!v}")")" ro
done
# Mount parents before children: shorter paths first.
awk '{print length($2), $0}' "$run/shares" | sort -n -s | cut -d' ' -f2- >"$run/shares.sorted"
mv "$run/shares.sorted" "$run/shares"
for d in "${shares[@]}"; do addshare "$d" rw; done

# Serial ports: ttyS0 kernel console, ttyS1 the command's stdout, ttyS2 its stderr.
# QEMU's pipe chardev writes to <path>.out; we relay those FIFOs to our stdout/stderr.
mkfifo "$run/con.in" "$run/con.out" "$run/out.in" "$run/out.out" "$run/err.in" "$run/err.out"
if [[ $verbose == 1 ]]; then
	cat "$run/con.out" >&2 &
else
	cat "$run/con.out" >"$run/console.log" &
fi
cpids+=($!)
cat "$run/out.out" &
cpids+=($!)
cat "$run/err.out" >&2 &
cpids+=($!)
qargs+=(-chardev "pipe,id=con,path=$run/con" -serial chardev:con
	-chardev "pipe,id=out,path=$run/out" -serial chardev:out
	-chardev "pipe,id=err,path=$run/err" -serial chardev:err)
# A QEMU monitor, to say where a VM that stopped making progress was (GODVM_NESTED_MONITOR=PATH
# puts it at PATH, to look at a running VM: info registers -a, nmi).
monitor=${GODVM_NESTED_MONITOR:-$run/monitor.sock}
qargs+=(-monitor "unix:$monitor,server,nowait")
append="console=ttyS0 panic=-1 quiet loglevel=4 nokaslr"
[[ -n $kvmamd ]] && append+=" nested.kvm_amd=$kvmamd"
qargs+=(-append "$append")

# nested_rips: the outer vCPUs' instruction pointers from the monitor (needs python3).
nested_rips() {
	command -v python3 >/dev/null || return 0
	python3 - "$monitor" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
out = b""
def drain():
    global out
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except OSError:
        pass
drain()
out = b""
for _ in range(3):
    s.sendall(b"info registers -a\n")
    time.sleep(0.5)
    drain()
cpu = None
for line in out.decode(errors="replace").splitlines():
    if line.startswith("CPU#"):
        cpu = line.strip()
    elif line.startswith("RIP="):
        print("outer", cpu, line.split()[0], "CPL=" + line.split("CPL=")[1].split()[0], "IF" if int(line.split("RFL=")[1].split()[0], 16) & 0x200 else "IF=0")
PY
}
start=$EPOCHREALTIME
set +e
timeout -k 5 "$timeout_s" qemu-system-x86_64 "${qargs[@]}" </dev/null >"$run/qemu.log" 2>&1 &
qpid=$!
# The stall watchdog: the nested stack (QEMU/TCG's SVM, the outer kvm_amd) now and then livelocks the outer kernel (seen:
# one vCPU looping on the INT3 of a kernel text patch with interrupts off while the other
# waits for it in smp_call_function_many_cond), and then nothing in the VM runs, timeouts
# included. A heartbeat older than GODVM_NESTED_STALL seconds (default 120) ends the run.
stall=${GODVM_NESTED_STALL:-120}
stalled=0
while kill -0 "$qpid" 2>/dev/null; do
	sleep 2
	hb=$(stat -c %Y "$run/heartbeat" 2>/dev/null) || continue
	if ((EPOCHSECONDS - hb > stall)); then
		stalled=$((EPOCHSECONDS - hb))
		nested_rips >"$run/rips" 2>&1 || true
		kill "$qpid" 2>/dev/null
		break
	fi
done
wait "$qpid"
qrc=$?
qpid=
set -e
# The relays end at EOF once QEMU has closed its ends; a relay still waiting in open()
# (QEMU never got that far) is released by opening and closing the FIFO here.
for f in con out err; do exec 3<>"$run/$f.out"; exec 3>&-; done
for p in "${cpids[@]}"; do wait "$p" 2>/dev/null || true; done
cpids=()
elapsed=$(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $start}")
if [[ -s $run/status ]]; then
	status=$(cat "$run/status")
	[[ $verbose == 1 ]] && echo "run-in-nested-kvm: VM ran ${elapsed}s, command exit status $status" >&2
	exit "$status"
fi
if [[ $stalled != 0 ]]; then
	echo "run-in-nested-kvm: the VM stopped making progress (no heartbeat for ${stalled}s; QEMU/TCG's SVM or the outer kernel, not the command)" >&2
	[[ -s $run/rips ]] && sed 's/^/run-in-nested-kvm: /' "$run/rips" >&2
	rc=125
elif [[ $qrc == 124 || $qrc == 137 ]]; then
	echo "run-in-nested-kvm: timed out after ${timeout_s}s" >&2
	rc=124
else
	echo "run-in-nested-kvm: the VM stopped before the command finished (qemu exit $qrc)" >&2
	rc=125
fi
cat "$run/qemu.log" >&2
[[ $verbose == 1 ]] || { echo "--- last 40 lines of the VM console:" >&2; tail -n 40 "$run/console.log" >&2 || true; }
exit $rc
