// SPDX-License-Identifier: GPL-2.0
/*
 * godvm in-kernel test agent.
 *
 * On hosts where guest user space cannot run (kvm_pvm), everything a test
 * does inside the guest has to be kernel code. This agent runs after all
 * other initcalls (late_initcall_sync), writes the boot-timer port, runs the
 * scenarios listed in godvm_agent.run=, prints KTAP on the console, reports
 * the result on the debug-exit port and powers the machine off. Without
 * godvm_agent.run= it only writes the boot-timer port and the boot goes on.
 *
 * A panic notifier writes 1 to the pvpanic port so that godvm sees every
 * guest panic, with or without the pvpanic driver.
 */
#include <linux/async.h>
#include <linux/console.h>
#include <linux/device/driver.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/panic_notifier.h>
#include <linux/printk.h>
#include <linux/reboot.h>
#include <linux/string.h>

#include "godvm_agent.h"

#define RUN_MAX 256

static char godvm_run[RUN_MAX];
module_param_string(run, godvm_run, sizeof(godvm_run), 0444);
MODULE_PARM_DESC(run, "comma-separated scenario names to run, in order");

static LIST_HEAD(godvm_scenarios);

void godvm_register_scenario(struct godvm_scenario *s)
{
	list_add_tail(&s->node, &godvm_scenarios);
}

void godvm_diag(const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	printk(KERN_INFO "# %pV\n", &vaf);
	va_end(args);
}

static struct godvm_scenario *godvm_find(const char *name)
{
	struct godvm_scenario *s;

	list_for_each_entry(s, &godvm_scenarios, node)
		if (!strcmp(s->name, name))
			return s;
	return NULL;
}

static int godvm_panic_notify(struct notifier_block *nb, unsigned long code,
			      void *unused)
{
	/*
	 * godvm (and QEMU with -action panic=exit-failure) ends the VM on
	 * this write; print the panic message and backtrace first. Other
	 * CPUs are stopped by now, as for panic()'s own flush.
	 */
	console_flush_on_panic(CONSOLE_FLUSH_PENDING);
	outb(1, GODVM_PORT_PVPANIC);
	return NOTIFY_DONE;
}

static struct notifier_block godvm_panic_nb = {
	.notifier_call = godvm_panic_notify,
	.priority = INT_MAX,	/* before anything that might hang */
};

static int __init godvm_agent_early(void)
{
	atomic_notifier_chain_register(&panic_notifier_list, &godvm_panic_nb);
	return 0;
}
early_initcall(godvm_agent_early);

/* Counts the non-empty entries of a comma-separated list. */
static unsigned int godvm_count(const char *list)
{
	unsigned int n = 0;
	bool in_word = false;

	for (; *list; list++) {
		if (*list == ',') {
			in_word = false;
		} else if (!in_word) {
			in_word = true;
			n++;
		}
	}
	return n;
}

static int __init godvm_agent_main(void)
{
	static char list[RUN_MAX];
	char *cursor = list, *name;
	unsigned int n, i = 0, failed = 0;

	outb(1, GODVM_PORT_BOOT_TIMER);

	n = godvm_count(godvm_run);
	if (!n)
		return 0;

	/* Let asynchronous initcalls and probes finish first. */
	async_synchronize_full();
	wait_for_device_probe();

	/* "quiet" keeps the boot silent; the test output must be seen. */
	if (console_loglevel < CONSOLE_LOGLEVEL_DEFAULT)
		console_loglevel = CONSOLE_LOGLEVEL_DEFAULT;

	strscpy(list, godvm_run, sizeof(list));
	printk(KERN_INFO "KTAP version 1\n");
	printk(KERN_INFO "1..%u\n", n);

	while ((name = strsep(&cursor, ",")) != NULL) {
		struct godvm_scenario *s;
		int ret;

		if (!*name)
			continue;
		i++;
		s = godvm_find(name);
		if (!s) {
			godvm_diag("unknown scenario %s", name);
			printk(KERN_INFO "not ok %u - %s\n", i, name);
			failed++;
			continue;
		}
		ret = s->run();
		if (ret == GODVM_SKIP) {
			printk(KERN_INFO "ok %u - %s # SKIP\n", i, name);
		} else if (ret) {
			godvm_diag("%s returned %d", name, ret);
			printk(KERN_INFO "not ok %u - %s\n", i, name);
			failed++;
		} else {
			printk(KERN_INFO "ok %u - %s\n", i, name);
		}
	}

	godvm_diag("godvm_agent: %u of %u failed", failed, n);
	/*
	 * The VMM ends the VM on the debug-exit write: let the consoles print
	 * everything first (another CPU may own the console and be printing).
	 */
	pr_flush(5000, true);
	/* 0 = pass; otherwise the number of failed scenarios. */
	outl(failed, GODVM_PORT_DEBUG_EXIT);

	kernel_power_off();
	pr_emerg("godvm_agent: power-off failed, halting\n");
	kernel_halt();
	return 0;
}
late_initcall_sync(godvm_agent_main);
