/* SPDX-License-Identifier: GPL-2.0 */
/*
 * godvm in-kernel test agent: the interface for scenario files.
 *
 * A scenario is one file, images/agent/scenario_<name>.c, that defines a
 * function and registers it:
 *
 *	#include "godvm_agent.h"
 *
 *	static int my_run(void)
 *	{
 *		godvm_diag("answer=%d", 42);
 *		return 0;		// 0 = ok, GODVM_SKIP = skipped, else not ok
 *	}
 *	GODVM_SCENARIO("my-name", my_run);
 *
 * The agent runs the scenarios named in godvm_agent.run=a,b,c (in that
 * order) after every other initcall, from the init task (process context,
 * may sleep), and prints KTAP. Scenarios must not be marked __init.
 */
#ifndef GODVM_AGENT_H
#define GODVM_AGENT_H

#include <linux/init.h>
#include <linux/list.h>
#include <linux/types.h>

/* Guest <-> godvm I/O ports (fixed protocol, see /tmp/team.md). */
#define GODVM_PORT_DEBUG_EXIT	0xf4	/* outl: 0 pass, other = failure code */
#define GODVM_PORT_BOOT_TIMER	0xf5	/* first write: guest ready */
#define GODVM_PORT_PVPANIC	0x505	/* outb 1: guest panicked */

/* Return value of a scenario's run() that reports "ok N - name # SKIP". */
#define GODVM_SKIP	1000

struct godvm_scenario {
	const char *name;
	int (*run)(void);
	struct list_head node;		/* private to the agent */
};

/* Adds a scenario; called by GODVM_SCENARIO() from a core_initcall. */
void godvm_register_scenario(struct godvm_scenario *s);

#define GODVM_SCENARIO(_name, _fn)					\
	static struct godvm_scenario __godvm_scenario_##_fn = {	\
		.name = (_name),					\
		.run = (_fn),						\
	};								\
	static int __init __godvm_register_##_fn(void)			\
	{								\
		godvm_register_scenario(&__godvm_scenario_##_fn);	\
		return 0;						\
	}								\
	core_initcall(__godvm_register_##_fn)

/* Prints one KTAP diagnostic line: "# <formatted text>". */
__printf(1, 2) void godvm_diag(const char *fmt, ...);

/*
 * sysfs access from kernel code. There is no user space and nothing mounts
 * /sys, so the agent keeps a private internal sysfs mount (kern_mount; it
 * is not visible in any mount namespace) and opens files below it.
 * path is relative to the sysfs root; a leading "/sys/" or "/" is accepted
 * and skipped, so "/sys/bus/dsa/drivers/idxd/bind" and
 * "bus/dsa/drivers/idxd/bind" are the same file.
 * All return 0 (or a byte count) on success and a negative errno on failure;
 * a store method's error (e.g. -EINVAL, -ENXIO) is returned as is.
 */

/* Writes the string val (no newline is added) with one write at offset 0. */
int godvm_sysfs_write(const char *path, const char *val);

/* printf-style variant of godvm_sysfs_write(). */
__printf(2, 3) int godvm_sysfs_printf(const char *path, const char *fmt, ...);

/*
 * Reads up to len-1 bytes into buf, NUL-terminates it and strips trailing
 * newlines/spaces. Returns the resulting string length.
 */
int godvm_sysfs_read(const char *path, char *buf, size_t len);

/* Reads a decimal or 0x-prefixed hexadecimal number. */
int godvm_sysfs_read_u64(const char *path, u64 *val);

/* True when path exists below the sysfs root. */
bool godvm_sysfs_exists(const char *path);

/*
 * Polls path every 10 ms until its content equals want (after stripping
 * trailing whitespace) or timeout_ms passes. Returns 0 or -ETIMEDOUT (or
 * the read error of the last attempt when the file never became readable).
 */
int godvm_sysfs_wait(const char *path, const char *want, unsigned int timeout_ms);

#endif /* GODVM_AGENT_H */
