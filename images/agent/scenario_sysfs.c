// SPDX-License-Identifier: GPL-2.0
/* sysfs: self-test of the agent's sysfs helpers (godvm_sysfs.c). */
#include <linux/errno.h>

#include "godvm_agent.h"

static int scenario_sysfs(void)
{
	char buf[64];
	u64 n;
	int ret;

	ret = godvm_sysfs_read("/sys/devices/system/cpu/online", buf, sizeof(buf));
	godvm_diag("read devices/system/cpu/online ret=%d value=%s", ret, ret >= 0 ? buf : "");
	if (ret <= 0)
		return -EIO;

	ret = godvm_sysfs_read_u64("devices/system/cpu/kernel_max", &n);
	godvm_diag("read_u64 devices/system/cpu/kernel_max ret=%d value=%llu", ret, n);
	if (ret)
		return ret;

	if (!godvm_sysfs_exists("/sys/devices/system/cpu/cpu0") ||
	    godvm_sysfs_exists("devices/system/cpu/no-such-file")) {
		godvm_diag("exists() gave a wrong answer");
		return -EINVAL;
	}

	/* Write a writable attribute back with the value it already has. */
	ret = godvm_sysfs_read("module/printk/parameters/ignore_loglevel", buf, sizeof(buf));
	if (ret <= 0) {
		godvm_diag("read ignore_loglevel ret=%d", ret);
		return ret ? ret : -EIO;
	}
	ret = godvm_sysfs_write("module/printk/parameters/ignore_loglevel", buf);
	godvm_diag("write ignore_loglevel=%s ret=%d", buf, ret);
	if (ret)
		return ret;
	ret = godvm_sysfs_wait("module/printk/parameters/ignore_loglevel", buf, 100);
	godvm_diag("wait ignore_loglevel==%s ret=%d", buf, ret);
	if (ret)
		return ret;

	/* A store into a read-only attribute must fail with an errno. */
	ret = godvm_sysfs_write("devices/system/cpu/online", "0");
	godvm_diag("write to read-only devices/system/cpu/online ret=%d", ret);
	if (ret >= 0)
		return -EINVAL;
	return 0;
}
GODVM_SCENARIO("sysfs", scenario_sysfs);
