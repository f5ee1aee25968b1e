// SPDX-License-Identifier: GPL-2.0
/* boot: the guest came up; report what it sees. Always passes. */
#include <linux/cpumask.h>
#include <linux/init.h>
#include <linux/mm.h>
#include <asm/cpufeature.h>

#include "godvm_agent.h"

static int scenario_boot(void)
{
	struct sysinfo si;

	si_meminfo(&si);
	godvm_diag("cpus_online=%u", num_online_cpus());
	godvm_diag("mem_total_kb=%lu", si.totalram << (PAGE_SHIFT - 10));
	godvm_diag("movdir64b=%d", boot_cpu_has(X86_FEATURE_MOVDIR64B));
	godvm_diag("cmdline=%s", saved_command_line);
	return 0;
}
GODVM_SCENARIO("boot", scenario_boot);
