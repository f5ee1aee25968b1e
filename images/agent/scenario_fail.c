// SPDX-License-Identifier: GPL-2.0
/* fail: a deliberate failure, to test that failures are reported. */
#include "godvm_agent.h"

static int scenario_fail(void)
{
	godvm_diag("failing on purpose");
	return -1;
}
GODVM_SCENARIO("fail", scenario_fail);
