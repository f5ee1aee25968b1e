#!/bin/bash
# go-test-nested.sh SECONDS PKG... : go test each package inside the nested
# kvm_amd VM (run-in-nested-kvm.sh, killed after SECONDS). A package whose
# VM itself failed (the script's "timed out", "VM stopped" or "stopped making
# progress" report: the nested stack (QEMU/TCG's SVM, the outer kvm_amd) now
# and then livelocks the outer kernel) is run once more, and that retry is
# announced. A test failure is never retried here (the e2e helpers re-run a
# guest that the nested stack broke once, inside the VM:
# images/nested/README.md).
# Extra go test flags: GO_TEST_FLAGS; extra run-in-nested-kvm.sh options:
# NESTED_ARGS (e.g. "-c 2"). Environment (GODVM_*) passes through.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
limit=$1
shift
GO=${GO:-go}
status=0
for pkg in "$@"; do
	for try in 1 2; do
		log=$(mktemp)
		# shellcheck disable=SC2086
		$GO test -count=1 -timeout 60m ${GO_TEST_FLAGS:-} -exec "$here/run-in-nested-kvm.sh -t $limit ${NESTED_ARGS:-}" "$pkg" 2>&1 | tee "$log"
		rc=${PIPESTATUS[0]}
		vmfail=0
		grep -qE 'run-in-nested-kvm: (timed out after|the VM stopped before|the VM stopped making progress)' "$log" && vmfail=1
		rm -f "$log"
		if [[ $rc -ne 0 && $vmfail -eq 1 && $try -eq 1 ]]; then
			echo "go-test-nested: the nested VM failed under $pkg (not a test verdict): running $pkg once more"
			continue
		fi
		[[ $rc -ne 0 ]] && status=$rc
		break
	done
done
exit $status
