#!/bin/bash
# Boots the test kernel in QEMU with TCG (no /dev/kvm needed) and runs agent
# scenarios: a check of the kernel and the agent on machines without KVM.
# The exit status follows godvm's: 0 pass, 2 guest panicked, 3 a scenario
# failed, 1 anything else (QEMU error, no result).
#
# Usage: images/qemu-tcg.sh [SCENARIOS [EXTRA-CMDLINE...]]
#   SCENARIOS      godvm_agent.run= value (default boot,sysfs); "none" runs
#                  no scenario (with INITRD: the initrd's /init runs, and a
#                  guest power-off is a pass)
# Environment: KERNEL (bzImage; default: the cached build), INITRD (optional),
#   QEMU_ARGS (extra QEMU arguments), TIMEOUT (seconds, default 300).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
scenarios=${1:-boot,sysfs}
shift || true
extra="$*"
kernel=${KERNEL:-$(dirname "$("$here/build-kernel.sh" --print-path)")/bzImage}
timeout=${TIMEOUT:-300}
agent="godvm_agent.run=$scenarios"
[ "$scenarios" = none ] && agent=

# iosize=1: a 4-byte debug-exit region would also cover the boot-timer port
# 0xf5, whose write would end QEMU with "failure 1". The agent's outl then
# reaches the device as its low byte, enough for a failure count.
args=(-accel tcg -cpu max -smp 2 -m 512 -nographic -no-reboot
	-kernel "$kernel"
	-append "console=ttyS0 panic=-1 setcpuid=movdir64b $agent $extra"
	-device isa-debug-exit,iobase=0xf4,iosize=0x01
	-device pvpanic -action panic=exit-failure)
[ -n "${INITRD:-}" ] && args+=(-initrd "$INITRD")
# shellcheck disable=SC2206
[ -n "${QEMU_ARGS:-}" ] && args+=($QEMU_ARGS)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
timeout "$timeout" qemu-system-x86_64 "${args[@]}" </dev/null 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

if grep -q 'Kernel panic - not syncing' "$log"; then
	echo "qemu-tcg: guest panicked" >&2
	exit 2
fi
case $rc in
0) [ -z "$agent" ] && { echo "qemu-tcg: guest powered off" >&2; exit 0; } ;;
1) echo "qemu-tcg: agent reported pass" >&2; exit 0 ;;
124) echo "qemu-tcg: timed out after $timeout s" >&2; exit 1 ;;
esac
if [ $((rc & 1)) -eq 1 ] && [ "$rc" -gt 1 ]; then
	echo "qemu-tcg: agent reported failure $(((rc - 1) / 2))" >&2
	exit 3
fi
echo "qemu-tcg: no agent result (QEMU exit status $rc)" >&2
exit 1
