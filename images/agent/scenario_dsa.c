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
 * then checks memcpy, fill and a batch through the dmaengine API (fill and
 * batch by turning a prepared idxd descriptor into MEMFILL/BATCH before
 * submission; idxd's dmaengine has no native fill or batch), runs the
 * kernel's dmatest on the WQ's channel (>= 1000 iterations, its own
 * "summary N tests, 0 failures" line is checked in the printk buffer),
 * disables and re-enables the WQ, enables the second WQ (group 1) and
 * finally unbinds the device (Disable Device + Reset Device).
 */
#include <linux/completion.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/jiffies.h>
#include <linux/kmsg_dump.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <asm/cpufeature.h>
#include <uapi/linux/idxd.h>

/* The agent is built as drivers/misc/godvm-agent; idxd's private header. */
#include "../../dma/idxd/idxd.h"

#include "godvm_agent.h"

#define DSA_DEV		"bus/dsa/devices/dsa0"
#define DMATEST		"module/dmatest/parameters/"
#define DSA_WQ_SIZE	"16"
#define DMATEST_ITERS	1000
#define XFER		4096

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

/* Finds dmatest's "<thread>: summary N tests, M failures" for chan. */
static int dmatest_summary(const char *chan, unsigned int *tests, unsigned int *failures)
{
	static char line[512];
	struct kmsg_dump_iter iter;
	char key[64];
	size_t len;
	int found = -ENOENT;

	snprintf(key, sizeof(key), "%s-copy0: summary ", chan);
	kmsg_dump_rewind(&iter);
	while (kmsg_dump_get_line(&iter, false, line, sizeof(line) - 1, &len)) {
		char *p;

		line[len] = 0;
		p = strstr(line, key);
		if (p && sscanf(p + strlen(key), "%u tests, %u failures", tests, failures) == 2)
			found = 0;
	}
	return found;
}

static int run_dmatest(int id)
{
	struct dma_chan *chan = wq_chan(id);
	char name[32], buf[16];
	unsigned int tests = 0, failures = 0;
	int ret;

	if (!chan) {
		godvm_diag("no dmaengine channel for wq0.%d", id);
		return -ENODEV;
	}
	strscpy(name, dma_chan_name(chan), sizeof(name));
	dma_release_channel(chan);

	snprintf(buf, sizeof(buf), "%d", DMATEST_ITERS);
	TRY(wr(DMATEST "iterations", buf));
	TRY(wr(DMATEST "threads_per_chan", "1"));
	TRY(wr(DMATEST "timeout", "5000"));
	TRY(wr(DMATEST "channel", name));	/* the channel goes last */
	TRY(wr(DMATEST "run", "1"));
	ret = godvm_sysfs_read(DMATEST "wait", buf, sizeof(buf));	/* blocks until done */
	if (ret < 0) {
		godvm_diag("reading dmatest wait: %d", ret);
		return ret;
	}
	wr(DMATEST "run", "0");	/* releases the channel */
	ret = dmatest_summary(name, &tests, &failures);
	if (ret) {
		godvm_diag("no dmatest summary line for %s", name);
		return ret;
	}
	godvm_diag("dmatest on %s: %u tests, %u failures", name, tests, failures);
	if (failures || tests < DMATEST_ITERS)
		return -EIO;
	return 0;
}

static int scenario_dsa(void)
{
	char buf[64];
	int ret;

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
	wr(DSA_DEV "/cmd_status", "1");	/* accel-config clears it first */

	/* Configuration (accel-config config-engine / config-wq). */
	TRY(wr(DSA_DEV "/engine0.0/group_id", "0"));
	TRY(wr(DSA_DEV "/engine0.1/group_id", "1"));
	TRY(config_wq(0, 0, true));
	TRY(config_wq(1, 1, true));

	/* enable-device, enable-wq */
	TRY(wr("bus/dsa/drivers/idxd/bind", "dsa0"));
	TRY(wait_state(DSA_DEV "/state", "enabled"));
	TRY(enable_wq(0));
	godvm_diag("step: device and wq0.0 enabled");

	TRY(check_wq(0));
	TRY(run_dmatest(0));
	godvm_diag("step: dmatest ok");

	/* disable-wq, reconfigure (the driver clears mode/name/priority), enable-wq */
	TRY(wr("bus/dsa/drivers/dmaengine/unbind", "wq0.0"));
	TRY(wait_state("bus/dsa/devices/wq0.0/state", "disabled"));
	TRY(config_wq(0, 0, false));
	TRY(enable_wq(0));
	TRY(check_wq(0));
	godvm_diag("step: wq0.0 disabled and re-enabled");

	/* the second WQ, in group 1 with engine 1 */
	TRY(enable_wq(1));
	if (godvm_sysfs_read("bus/dsa/devices/wq0.1/group_id", buf, sizeof(buf)) <= 0 || strcmp(buf, "1")) {
		godvm_diag("wq0.1 group_id '%s'", buf);
		return -EINVAL;
	}
	TRY(check_wq(1));
	TRY(check_wq(0));
	godvm_diag("step: wq0.1 (group 1) ok");

	/* disable-device: unbinds the WQs, Disable Device, Reset Device */
	TRY(wr("bus/dsa/drivers/idxd/unbind", "dsa0"));
	TRY(wait_state(DSA_DEV "/state", "disabled"));
	if (godvm_sysfs_read(DSA_DEV "/errors", buf, sizeof(buf)) > 0)
		godvm_diag("dsa0 errors %s", buf);
	godvm_diag("step: device disabled");
	ret = 0;
	return ret;
}
GODVM_SCENARIO("dsa", scenario_dsa);
