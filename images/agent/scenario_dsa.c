// SPDX-License-Identifier: GPL-2.0
/*
 * dsa: the stock idxd driver on godvm's software DSA (godvm --dsa).
 *
 * There is no user space, so the agent does what accel-config 3.5.3 does,
 * through the driver's own sysfs attributes and in the same order
 * (dsa-model.md §5.2; accel-config config_attr.c / libaccfg.c):
 *
 *   config-engine dsa0/engine0.0 --group-id=0
 *   config-engine dsa0/engine0.1 --group-id=1
 *   config-wq dsa0/wq0.0 --mode=dedicated --type=kernel --name=dmaengine
 *             --driver-name=dmaengine --wq-size=16 --group-id=0 --priority=10
 *   config-wq dsa0/wq0.1 (same, group 1)
 *   enable-device dsa0         -> bus/dsa/drivers/idxd/bind
 *   enable-wq dsa0/wq0.0       -> bus/dsa/drivers/dmaengine/bind
 *
 * Steps, each reported as "step: <name> ok (<seconds> s)" or
 * "step: <name> FAILED (...)", stopping at the first failure:
 *
 *   1. configure, enable the device and wq0.0;
 *   2. memcpy, fill and a batch through the dmaengine API (fill and batch by
 *      turning a prepared idxd descriptor into MEMFILL/BATCH before
 *      submission; idxd's dmaengine has no native fill or batch);
 *   3. the kernel's dmatest on the WQ's channel, verification on, sized for
 *      an emulated ring 0 (kvm_pvm: every byte dmatest fills and verifies
 *      runs through KVM's instruction emulator, ~20 instructions a byte):
 *      256-byte buffers and 1000 iterations by default (measured on kvm_pvm,
 *      1 vCPU, 2026-11-27: the step took 52 s with 1 KiB buffers, 31 s with
 *      512, 22 s with 256; ~11 s of it is the 1000 submissions and
 *      completion interrupts themselves; 42 s with 512 on a slower kvm_pvm
 *      host), godvm_agent.dmatest_buf=, _iters= and _timeout= (seconds) for
 *      larger runs. Its own "summary N tests, M
 *      failures" line is awaited in the printk buffer (only records that
 *      came after the run started are read), which works with 1 vCPU too;
 *   4. disable and re-enable the WQ;
 *   5. the second WQ (group 1);
 *   6. disable the device (Disable Device + Reset Device);
 *   7. configure and enable it again, and check wq0.0 once more.
 *
 * The last line is a one-line summary with the DSA data path godvm chose
 * (godvm_dsa_path=, images/kernel/patches/0003-x86-godvm-pv64b.patch).
 */
#include <linux/completion.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/jiffies.h>
#include <linux/kmsg_dump.h>
#include <linux/ktime.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>
#include <linux/delay.h>
#include <linux/string.h>
#include <asm/cpufeature.h>
#include <uapi/linux/idxd.h>

/* The agent is built as drivers/misc/godvm-agent; idxd's private header. */
#include "../../dma/idxd/idxd.h"

#include "godvm_agent.h"

/* Parameters are godvm_agent.*, as the agent's own run= (godvm_agent.c). */
#undef MODULE_PARAM_PREFIX
#define MODULE_PARAM_PREFIX "godvm_agent."

#define DSA_DEV		"bus/dsa/devices/dsa0"
#define DMATEST		"module/dmatest/parameters/"
#define DSA_WQ_SIZE	"16"
#define XFER		4096

static unsigned int dmatest_buf = 256;
module_param(dmatest_buf, uint, 0444);
MODULE_PARM_DESC(dmatest_buf, "dmatest test_buf_size in bytes (default 256)");
static unsigned int dmatest_iters = 1000;
module_param(dmatest_iters, uint, 0444);
MODULE_PARM_DESC(dmatest_iters, "dmatest iterations (default 1000)");
static unsigned int dmatest_timeout = 300;
module_param(dmatest_timeout, uint, 0444);
MODULE_PARM_DESC(dmatest_timeout, "seconds to wait for dmatest's summary (default 300)");

/* From images/kernel/patches/0003-x86-godvm-pv64b.patch. */
extern char godvm_dsa_path[16];

static int wr(const char *path, const char *val)
{
	int ret = godvm_sysfs_write(path, val);

	godvm_diag("%s <- %s%s", path, val, ret < 0 ? " FAILED" : "");
	if (ret < 0)
		godvm_diag("  error %d", ret);
	return ret < 0 ? ret : 0;
}

static int wait_state(const char *path, const char *want)
{
	char buf[32] = "";
	int ret = godvm_sysfs_wait(path, want, 5000);

	if (ret) {
		godvm_sysfs_read(path, buf, sizeof(buf));
		godvm_diag("%s is '%s', want '%s' (%d)", path, buf, want, ret);
		godvm_sysfs_read(DSA_DEV "/cmd_status", buf, sizeof(buf));
		godvm_diag("dsa0/cmd_status %s", buf);
	}
	return ret;
}

#define TRY(x) do { int __r = (x); if (__r) return __r; } while (0)

/* accel-config config-wq: mode, type, name, driver_name, size, group_id, priority. */
static int config_wq(int id, int group, bool partition)
{
	char p[64], v[16];

	snprintf(p, sizeof(p), DSA_DEV "/wq0.%d/mode", id);
	TRY(wr(p, "dedicated"));
	snprintf(p, sizeof(p), DSA_DEV "/wq0.%d/type", id);
	TRY(wr(p, "kernel"));
	snprintf(p, sizeof(p), DSA_DEV "/wq0.%d/name", id);
	TRY(wr(p, "dmaengine"));
	snprintf(p, sizeof(p), DSA_DEV "/wq0.%d/driver_name", id);
	if (godvm_sysfs_exists(p))	/* 6.7+; the dmaengine driver requires it */
		TRY(wr(p, "dmaengine"));
	if (partition) {	/* size and group only while the device is disabled */
		snprintf(p, sizeof(p), DSA_DEV "/wq0.%d/size", id);
		TRY(wr(p, DSA_WQ_SIZE));
		snprintf(p, sizeof(p), DSA_DEV "/wq0.%d/group_id", id);
		snprintf(v, sizeof(v), "%d", group);
		TRY(wr(p, v));
	}
	snprintf(p, sizeof(p), DSA_DEV "/wq0.%d/priority", id);
	return wr(p, "10");
}

static int enable_wq(int id)
{
	char name[16], p[64];

	snprintf(name, sizeof(name), "wq0.%d", id);
	TRY(wr("bus/dsa/drivers/dmaengine/bind", name));
	snprintf(p, sizeof(p), "bus/dsa/devices/%s/state", name);
	return wait_state(p, "enabled");
}

/* Channel of WQ id (the idxd dmaengine channel is private: request it). */
static bool wq_filter(struct dma_chan *chan, void *param)
{
	struct idxd_dma_chan *ic;

	if (!chan->device->dev->driver || strcmp(chan->device->dev->driver->name, "idxd"))
		return false;
	ic = container_of(chan, struct idxd_dma_chan, chan);
	return ic->wq && ic->wq->id == (long)param;
}

static struct dma_chan *wq_chan(int id)
{
	dma_cap_mask_t mask;

	dma_cap_zero(mask);
	dma_cap_set(DMA_MEMCPY, mask);
	return dma_request_channel(mask, wq_filter, (void *)(long)id);
}

struct waiter {
	struct completion done;
	enum dmaengine_tx_result result;
};

static void tx_done(void *arg, const struct dmaengine_result *res)
{
	struct waiter *w = arg;

	w->result = res->result;
	complete(&w->done);
}

/*
 * Prepares a memcpy on chan; edit (if set) rewrites the idxd hardware
 * descriptor before submission. Waits for the completion interrupt.
 */
static int run_tx(struct dma_chan *chan, dma_addr_t dst, dma_addr_t src, size_t len,
		  void (*edit)(struct dsa_hw_desc *hw, void *ctx), void *ctx, const char *what)
{
	struct dma_async_tx_descriptor *tx;
	struct waiter w;
	dma_cookie_t cookie;

	init_completion(&w.done);
	w.result = DMA_TRANS_NOERROR;
	tx = dmaengine_prep_dma_memcpy(chan, dst, src, len, DMA_PREP_INTERRUPT | DMA_CTRL_ACK);
	if (!tx) {
		godvm_diag("%s: prep failed", what);
		return -ENOMEM;
	}
	if (edit)
		edit(container_of(tx, struct idxd_desc, txd)->hw, ctx);
	tx->callback_result = tx_done;
	tx->callback_param = &w;
	cookie = dmaengine_submit(tx);
	if (dma_submit_error(cookie)) {
		godvm_diag("%s: submit failed %d", what, cookie);
		return -EIO;
	}
	dma_async_issue_pending(chan);
	if (!wait_for_completion_timeout(&w.done, msecs_to_jiffies(5000))) {
		godvm_diag("%s: no completion interrupt within 5 s", what);
		return -ETIMEDOUT;
	}
	if (w.result != DMA_TRANS_NOERROR) {
		godvm_diag("%s: completion result %d", what, w.result);
		return -EIO;
	}
	return 0;
}

struct bufs {
	struct device *dev;
	u8 *cpu;
	dma_addr_t dma;
	size_t size;
};

/* 64-byte aligned layout: [0, 3*64) batch list, [256, 352) member CRs, then 4 buffers. */
#define B_LIST	0
#define B_CR	256
#define B_SRC	4096
#define B_DST0	(B_SRC + XFER)
#define B_DST1	(B_DST0 + XFER)
#define B_DST2	(B_DST1 + XFER)
#define B_SIZE	(B_DST2 + XFER)

static const u64 fill_pattern = 0x0123456789abcdefULL;

static void to_fill(struct dsa_hw_desc *hw, void *ctx)
{
	struct bufs *b = ctx;

	hw->opcode = DSA_OPCODE_MEMFILL;
	hw->pattern = fill_pattern;
	hw->dst_addr = b->dma + B_DST1;
	hw->xfer_size = XFER;
}

static void member(struct dsa_hw_desc *d, u8 op, u32 flags, u64 a, u64 b, u32 n, u64 cr)
{
	memset(d, 0, sizeof(*d));
	d->opcode = op;
	d->flags = IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR | flags;
	d->src_addr = a;
	d->dst_addr = b;
	d->xfer_size = n;
	d->completion_addr = cr;
}

static void to_batch(struct dsa_hw_desc *hw, void *ctx)
{
	struct bufs *b = ctx;
	struct dsa_hw_desc *list = (struct dsa_hw_desc *)(b->cpu + B_LIST);

	/* copy, fill, then (fenced) compare the copy with its source */
	member(&list[0], DSA_OPCODE_MEMMOVE, 0, b->dma + B_SRC, b->dma + B_DST2, XFER, b->dma + B_CR);
	member(&list[1], DSA_OPCODE_MEMFILL, 0, ~fill_pattern, b->dma + B_DST1, XFER, b->dma + B_CR + 32);
	member(&list[2], DSA_OPCODE_COMPARE, IDXD_OP_FLAG_FENCE, b->dma + B_SRC, b->dma + B_DST2, XFER,
	       b->dma + B_CR + 64);
	memset(b->cpu + B_CR, 0, 96);
	wmb();
	hw->opcode = DSA_OPCODE_BATCH;
	hw->desc_list_addr = b->dma + B_LIST;
	hw->dst_addr = 0;
	hw->desc_count = 3;
}

static bool filled(const u8 *p, u64 pattern)
{
	int i;

	for (i = 0; i < XFER; i++)
		if (p[i] != (u8)(pattern >> (8 * (i % 8))))
			return false;
	return true;
}

static int check_ops(struct dma_chan *chan, const char *tag)
{
	struct bufs b = { .dev = chan->device->dev, .size = B_SIZE };
	struct dsa_completion_record *cr;
	int i, ret;

	b.cpu = dma_alloc_coherent(b.dev, b.size, &b.dma, GFP_KERNEL);
	if (!b.cpu)
		return -ENOMEM;
	for (i = 0; i < XFER; i++)
		b.cpu[B_SRC + i] = (u8)(i * 7 + 3);
	memset(b.cpu + B_DST0, 0, 3 * XFER);

	ret = run_tx(chan, b.dma + B_DST0, b.dma + B_SRC, XFER, NULL, NULL, "memcpy");
	if (!ret && memcmp(b.cpu + B_DST0, b.cpu + B_SRC, XFER)) {
		godvm_diag("%s memcpy: data mismatch", tag);
		ret = -EIO;
	}
	if (ret)
		goto out;
	godvm_diag("%s memcpy %d bytes ok", tag, XFER);

	ret = run_tx(chan, b.dma + B_DST1, b.dma + B_SRC, XFER, to_fill, &b, "fill");
	if (!ret && !filled(b.cpu + B_DST1, fill_pattern)) {
		godvm_diag("%s fill: pattern mismatch", tag);
		ret = -EIO;
	}
	if (ret)
		goto out;
	godvm_diag("%s fill %d bytes ok", tag, XFER);

	ret = run_tx(chan, b.dma + B_DST0, b.dma + B_SRC, XFER, to_batch, &b, "batch");
	if (ret)
		goto out;
	cr = (struct dsa_completion_record *)(b.cpu + B_CR);
	for (i = 0; i < 3; i++) {
		if (cr[i].status != DSA_COMP_SUCCESS) {
			godvm_diag("%s batch member %d status %#x", tag, i, cr[i].status);
			ret = -EIO;
		}
	}
	if (!ret && (cr[2].result != 0 || memcmp(b.cpu + B_DST2, b.cpu + B_SRC, XFER) ||
		     !filled(b.cpu + B_DST1, ~fill_pattern))) {
		godvm_diag("%s batch: wrong data (compare result %u)", tag, cr[2].result);
		ret = -EIO;
	}
	if (!ret)
		godvm_diag("%s batch of 3 (memmove, fill, fenced compare) ok", tag);
out:
	dma_free_coherent(b.dev, b.size, b.cpu, b.dma);
	return ret;
}

static int check_wq(int id)
{
	struct dma_chan *chan = wq_chan(id);
	char tag[16];
	int ret;

	if (!chan) {
		godvm_diag("no dmaengine channel for wq0.%d", id);
		return -ENODEV;
	}
	snprintf(tag, sizeof(tag), "wq0.%d", id);
	ret = check_ops(chan, tag);
	dma_release_channel(chan);
	return ret;
}

struct dmatest_result {
	char chan[32];
	unsigned int tests, failures, iops, iops_frac;
};

/*
 * Reads the printk records after iter (and advances it) looking for
 * dmatest's "<chan>-copy0: summary N tests, M failures X.YY iops ..." line.
 * Only new records are read: formatting the whole log at emulated ring-0
 * speed takes minutes on kvm_pvm.
 */
static bool dmatest_summary(struct kmsg_dump_iter *iter, struct dmatest_result *r)
{
	static char line[512];
	char key[64];
	size_t len;

	snprintf(key, sizeof(key), "%s-copy0: summary ", r->chan);
	while (kmsg_dump_get_line(iter, false, line, sizeof(line) - 1, &len)) {
		char *p;

		line[len] = 0;
		p = strstr(line, key);
		if (p && sscanf(p + strlen(key), "%u tests, %u failures %u.%u iops", &r->tests,
				&r->failures, &r->iops, &r->iops_frac) >= 2)
			return true;
	}
	return false;
}

static int run_dmatest(int id, struct dmatest_result *r)
{
	struct dma_chan *chan = wq_chan(id);
	struct kmsg_dump_iter iter;
	unsigned long deadline;
	char buf[16];

	if (!chan) {
		godvm_diag("no dmaengine channel for wq0.%d", id);
		return -ENODEV;
	}
	strscpy(r->chan, dma_chan_name(chan), sizeof(r->chan));
	dma_release_channel(chan);

	snprintf(buf, sizeof(buf), "%u", dmatest_buf);
	TRY(wr(DMATEST "test_buf_size", buf));
	snprintf(buf, sizeof(buf), "%u", dmatest_iters);
	TRY(wr(DMATEST "iterations", buf));
	TRY(wr(DMATEST "threads_per_chan", "1"));
	TRY(wr(DMATEST "noverify", "0"));
	TRY(wr(DMATEST "timeout", "5000"));
	TRY(wr(DMATEST "channel", r->chan));	/* the channel goes last */

	/* Only what is logged from here on. */
	kmsg_dump_rewind(&iter);
	iter.cur_seq = iter.next_seq;
	TRY(wr(DMATEST "run", "1"));
	deadline = jiffies + dmatest_timeout * HZ;
	while (!dmatest_summary(&iter, r)) {
		if (time_after(jiffies, deadline)) {
			godvm_diag("dmatest on %s: no summary line within %u s (godvm_agent.dmatest_timeout=)",
				   r->chan, dmatest_timeout);
			wr(DMATEST "run", "0");
			return -ETIMEDOUT;
		}
		msleep(200);
	}
	wr(DMATEST "run", "0");	/* releases the channel */
	godvm_diag("dmatest on %s: %u tests, %u failures, %u.%02u iops, %u-byte buffers", r->chan,
		   r->tests, r->failures, r->iops, r->iops_frac, dmatest_buf);
	if (r->failures || r->tests < dmatest_iters)
		return -EIO;
	return 0;
}

/* accel-config's configuration (config-engine, config-wq) of the whole device. */
static int configure(void)
{
	wr(DSA_DEV "/cmd_status", "1");	/* accel-config clears it first */
	TRY(wr(DSA_DEV "/engine0.0/group_id", "0"));
	TRY(wr(DSA_DEV "/engine0.1/group_id", "1"));
	TRY(config_wq(0, 0, true));
	return config_wq(1, 1, true);
}

/* enable-device, enable-wq wq0.0 */
static int enable_device(void)
{
	TRY(wr("bus/dsa/drivers/idxd/bind", "dsa0"));
	TRY(wait_state(DSA_DEV "/state", "enabled"));
	return enable_wq(0);
}

static struct dmatest_result dmatest_res;

static int step_enable(void)
{
	TRY(configure());
	return enable_device();
}

static int step_ops(void)
{
	return check_wq(0);
}

static int step_dmatest(void)
{
	return run_dmatest(0, &dmatest_res);
}

/* disable-wq, reconfigure (the driver clears mode/name/priority), enable-wq */
static int step_wq_reenable(void)
{
	TRY(wr("bus/dsa/drivers/dmaengine/unbind", "wq0.0"));
	TRY(wait_state("bus/dsa/devices/wq0.0/state", "disabled"));
	TRY(config_wq(0, 0, false));
	TRY(enable_wq(0));
	return check_wq(0);
}

/* the second WQ, in group 1 with engine 1 */
static int step_second_wq(void)
{
	char buf[16] = "";

	TRY(enable_wq(1));
	if (godvm_sysfs_read("bus/dsa/devices/wq0.1/group_id", buf, sizeof(buf)) <= 0 || strcmp(buf, "1")) {
		godvm_diag("wq0.1 group_id '%s'", buf);
		return -EINVAL;
	}
	TRY(check_wq(1));
	return check_wq(0);
}

/* disable-device: unbinds the WQs, Disable Device, Reset Device */
static int step_device_disable(void)
{
	char buf[32];

	TRY(wr("bus/dsa/drivers/idxd/unbind", "dsa0"));
	TRY(wait_state(DSA_DEV "/state", "disabled"));
	if (godvm_sysfs_read(DSA_DEV "/errors", buf, sizeof(buf)) > 0)
		godvm_diag("dsa0 errors %s", buf);
	return 0;
}

/* The reset cleared the configuration: configure and enable again. */
static int step_device_reenable(void)
{
	TRY(step_enable());
	return check_wq(0);
}

static const struct {
	const char *name;
	int (*run)(void);
} dsa_steps[] = {
	{ "device and wq0.0 enabled", step_enable },
	{ "wq0.0 memcpy, fill and batch", step_ops },
	{ "dmatest", step_dmatest },
	{ "wq0.0 disabled and re-enabled", step_wq_reenable },
	{ "wq0.1 (group 1)", step_second_wq },
	{ "device disabled", step_device_disable },
	{ "device re-enabled", step_device_reenable },
};

static void secs(u64 ns, unsigned int *s, unsigned int *cs)
{
	*s = div_u64(ns, NSEC_PER_SEC);
	*cs = div_u64(ns - (u64)*s * NSEC_PER_SEC, 10 * NSEC_PER_MSEC);
}

static int scenario_dsa(void)
{
	const char *path = godvm_dsa_path[0] ? godvm_dsa_path : "unknown (no godvm_dsa_path=)";
	unsigned int i, ok = 0, s, cs;
	u64 begin = ktime_get_ns();
	char buf[64];
	int ret = 0;

	godvm_diag("dsa_path=%s", path);
	if (godvm_sysfs_wait(DSA_DEV "/state", "disabled", 5000)) {
		godvm_diag("dsa0 did not appear (idxd needs MOVDIR64B: cpu has it=%d)",
			   boot_cpu_has(X86_FEATURE_MOVDIR64B));
		return -ENODEV;
	}
	if (godvm_sysfs_read(DSA_DEV "/version", buf, sizeof(buf)) > 0)
		godvm_diag("dsa0 version %s", buf);
	if (godvm_sysfs_read(DSA_DEV "/max_work_queues", buf, sizeof(buf)) > 0)
		godvm_diag("dsa0 max_work_queues %s", buf);
	if (godvm_sysfs_read(DSA_DEV "/max_engines", buf, sizeof(buf)) > 0)
		godvm_diag("dsa0 max_engines %s", buf);
	if (godvm_sysfs_read(DSA_DEV "/op_cap", buf, sizeof(buf)) > 0)
		godvm_diag("dsa0 op_cap %s", buf);

	for (i = 0; i < ARRAY_SIZE(dsa_steps); i++) {
		u64 t = ktime_get_ns();

		ret = dsa_steps[i].run();
		secs(ktime_get_ns() - t, &s, &cs);
		if (ret) {
			godvm_diag("step: %s FAILED (error %d, after %u.%02u s)", dsa_steps[i].name, ret, s, cs);
			break;
		}
		godvm_diag("step: %s ok (%u.%02u s)", dsa_steps[i].name, s, cs);
		ok++;
	}
	secs(ktime_get_ns() - begin, &s, &cs);
	if (dmatest_res.tests)
		godvm_diag("summary: dsa %s: %u of %zu steps ok in %u.%02u s; path %s; dmatest %u tests, %u failures, %u.%02u iops",
			   ret ? "FAILED" : "ok", ok, ARRAY_SIZE(dsa_steps), s, cs, path, dmatest_res.tests,
			   dmatest_res.failures, dmatest_res.iops, dmatest_res.iops_frac);
	else
		godvm_diag("summary: dsa %s: %u of %zu steps ok in %u.%02u s; path %s; dmatest did not run",
			   ret ? "FAILED" : "ok", ok, ARRAY_SIZE(dsa_steps), s, cs, path);
	return ret;
}
GODVM_SCENARIO("dsa", scenario_dsa);
