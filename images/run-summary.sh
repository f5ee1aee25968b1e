#!/bin/bash
# Prints a short summary of a `godvm run --boot-trace` of the test agent,
# read from its combined console and godvm output: each KTAP result, each
# step of the dsa scenario with its time, dmatest's result, the DSA path,
# boot time and exits. Used by `make run`.
#
# Usage: images/run-summary.sh LOG STATUS
set -uo pipefail
log=$1
status=$2
[ -f "$log" ] || { echo "run-summary: no log $log" >&2; exit 2; }

verdict=PASS
[ "$status" -eq 0 ] || verdict=FAIL
case $status in
0) why="the guest reported success" ;;
1) why="godvm error" ;;
2) why="the guest panicked" ;;
3) why="the guest reported failure" ;;
4) why="timeout" ;;
*) why="exit status $status" ;;
esac
# Console lines may end in CR; printk time prefixes are not used.
clean() { tr -d '\r' <"$log"; }

echo
echo "== summary: $verdict ($why, exit $status) =="
clean | grep -E '^(not )?ok [0-9]+ - ' | sed 's/^/  /'
clean | sed -n 's/^# cpus_online=/  cpus online: /p'
clean | sed -n 's/^# summary: /  /p'
clean | sed -n 's/^# step: /    step: /p'
clean | sed -n 's/^# \(dmatest on .*\)/    \1/p'
clean | grep -E 'dmatest: .*summary' | sed 's/^.*dmatest: /    dmatest (its own line): /'
clean | sed -n 's/^boot-trace: guest agent ready (boot-timer write) after /  boot: agent ready after /p'
clean | sed -n 's/^boot-trace: ran \(.*\); vCPU time outside KVM_RUN: \(.*\)/  run: \1 in all, \2 of vCPU time in godvm/p'
clean | sed -n 's/^boot-trace: exits: /  exits: /p'
clean | sed -n 's/^boot-trace: emulated instructions: /  emulated or pv stores: /p'
clean | sed -n 's/^boot-trace: DSA data path: /  DSA data path: /p'
clean | grep -E '^godvm: ' | sed 's/^/  /'
exit 0
