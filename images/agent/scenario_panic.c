// SPDX-License-Identifier: GPL-2.0
/* panic: a deliberate kernel panic, to test pvpanic reporting. */
#include <linux/panic.h>

#include "godvm_agent.h"

static int scenario_panic(void)
{
	panic("godvm_agent: deliberate panic");
	return 0;
}
GODVM_SCENARIO("panic", scenario_panic);
