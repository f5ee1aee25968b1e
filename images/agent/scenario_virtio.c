// SPDX-License-Identifier: GPL-2.0
/*
 * virtio scenarios for godvm's virtio-pci devices (devices/virtio):
 *
 *   virtio-pci     every 1af4:104x function is bound to virtio-pci with
 *                  MSI-X enabled and one vector per queue plus config;
 *                  prints "pci=BDF ID vectors=N" per device.
 *   virtio-blk     on the disk whose serial (GET_ID) is "godvm-rw": writes a
 *                  4 KiB pattern at sector 2048 with PREFLUSH|FUA through the
 *                  block layer, flushes, reads it back. The host then finds
 *                  the pattern in the image after power-off.
 *   virtio-blk-ro  on the disk with serial "godvm-ro": the kernel sees it
 *                  read-only and a write bio fails.
 *   virtio-rng     virtio_rng is the current hwrng; 64 bytes are read from
 *                  it through its hwrng ops.
 *
 * The pattern is byte i = (i * 7 + 3) & 0xff after a 16-byte magic
 * "GODVM-BLK-PATTRN"; e2e/virtio_test.go checks the same bytes.
 */
#include <linux/bio.h>
#include <linux/completion.h>
#include <linux/ktime.h>
#include <linux/blkdev.h>
#include <linux/delay.h>
#include <linux/device.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hw_random.h>
#include <linux/jiffies.h>
#include <linux/kdev_t.h>
#include <linux/mm.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/virtio.h>

#include "godvm_agent.h"

#define VIRTIO_VENDOR	0x1af4
#define BLK_SECTOR	2048
#define BLK_MAGIC	"GODVM-BLK-PATTRN"

/* ---- virtio-pci: enumeration and MSI-X ---- */

static int scenario_virtio_pci(void)
{
	struct pci_dev *pdev = NULL;
	int found = 0, bad = 0;

	while ((pdev = pci_get_device(VIRTIO_VENDOR, PCI_ANY_ID, pdev))) {
		int table = pci_msix_vec_count(pdev), used = 0, i;
		const char *drv = pdev->driver ? pdev->driver->name : "none";

		if (pdev->device < 0x1040 || pdev->device > 0x107f)
			continue;
		for (i = 0; table > 0 && i < table; i++)
			if (pci_irq_vector(pdev, i) > 0)
				used++;
		godvm_diag("pci=%s id=%04x:%04x driver=%s msix=%d table=%d vectors=%d",
			   pci_name(pdev), pdev->vendor, pdev->device, drv,
			   pdev->msix_enabled, table, used);
		found++;
		if (strcmp(drv, "virtio-pci") || !pdev->msix_enabled || used < 2)
			bad++;
	}
	godvm_diag("virtio_pci_devices=%d", found);
	if (!found)
		return GODVM_SKIP;
	return bad ? -EINVAL : 0;
}
GODVM_SCENARIO("virtio-pci", scenario_virtio_pci);

/* ---- virtio-blk ---- */

/* Finds vdX whose serial is want; returns its dev_t or 0. */
static dev_t find_disk(const char *want, char *name, size_t len)
{
	char path[64], buf[32];
	unsigned int maj, min;
	char c;

	for (c = 'a'; c <= 'z'; c++) {
		snprintf(path, sizeof(path), "block/vd%c/serial", c);
		if (godvm_sysfs_read(path, buf, sizeof(buf)) < 0)
			continue;
		if (strcmp(buf, want))
			continue;
		snprintf(path, sizeof(path), "block/vd%c/dev", c);
		if (godvm_sysfs_read(path, buf, sizeof(buf)) < 0 ||
		    sscanf(buf, "%u:%u", &maj, &min) != 2)
			return 0;
		snprintf(name, len, "vd%c", c);
		return MKDEV(maj, min);
	}
	return 0;
}

static void fill_pattern(u8 *p)
{
	int i;

	for (i = 0; i < PAGE_SIZE; i++)
		p[i] = (i * 7 + 3) & 0xff;
	memcpy(p, BLK_MAGIC, 16);
}

/* One synchronous single-page bio. */
static int page_io(struct block_device *bdev, struct page *page, blk_opf_t opf)
{
	struct bio *bio = bio_alloc(bdev, 1, opf, GFP_KERNEL);
	int ret;

	bio->bi_iter.bi_sector = BLK_SECTOR;
	__bio_add_page(bio, page, PAGE_SIZE, 0);
	ret = submit_bio_wait(bio);
	bio_put(bio);
	return ret;
}

static struct file *open_disk(const char *serial, blk_mode_t mode, char *name)
{
	dev_t devt = find_disk(serial, name, 8);
	struct file *f;

	if (!devt) {
		godvm_diag("no virtio disk with serial %s", serial);
		return ERR_PTR(-ENODEV);
	}
	f = bdev_file_open_by_dev(devt, mode, NULL, NULL);
	if (IS_ERR(f))
		godvm_diag("open %s: %ld", name, PTR_ERR(f));
	return f;
}

static int scenario_virtio_blk(void)
{
	struct page *wpage, *rpage;
	struct block_device *bdev;
	char name[8] = "";
	struct file *f;
	int ret;

	f = open_disk("godvm-rw", BLK_OPEN_READ | BLK_OPEN_WRITE, name);
	if (IS_ERR(f))
		return PTR_ERR(f);
	bdev = file_bdev(f);
	godvm_diag("blk=%s sectors=%llu ro=%d", name,
		   (unsigned long long)bdev_nr_sectors(bdev), bdev_read_only(bdev));

	wpage = alloc_page(GFP_KERNEL);
	rpage = alloc_page(GFP_KERNEL);
	if (!wpage || !rpage) {
		ret = -ENOMEM;
		goto out;
	}
	fill_pattern(page_address(wpage));
	memset(page_address(rpage), 0, PAGE_SIZE);

	ret = page_io(bdev, wpage, REQ_OP_WRITE | REQ_SYNC | REQ_PREFLUSH | REQ_FUA);
	godvm_diag("write_fua=%d", ret);
	if (ret)
		goto out;
	ret = blkdev_issue_flush(bdev);
	godvm_diag("flush=%d", ret);
	if (ret)
		goto out;
	ret = page_io(bdev, rpage, REQ_OP_READ);
	godvm_diag("read=%d", ret);
	if (ret)
		goto out;
	if (memcmp(page_address(wpage), page_address(rpage), PAGE_SIZE)) {
		godvm_diag("read-back differs from the pattern");
		ret = -EIO;
	}
out:
	if (wpage)
		__free_page(wpage);
	if (rpage)
		__free_page(rpage);
	fput(f);
	return ret;
}
GODVM_SCENARIO("virtio-blk", scenario_virtio_blk);

static int scenario_virtio_blk_ro(void)
{
	struct block_device *bdev;
	char name[8] = "";
	struct page *page;
	struct file *f;
	int ret;

	f = open_disk("godvm-ro", BLK_OPEN_READ, name);
	if (IS_ERR(f))
		return PTR_ERR(f);
	bdev = file_bdev(f);
	godvm_diag("blk=%s ro=%d", name, bdev_read_only(bdev));
	page = alloc_page(GFP_KERNEL);
	if (!page) {
		fput(f);
		return -ENOMEM;
	}
	fill_pattern(page_address(page));
	ret = page_io(bdev, page, REQ_OP_WRITE | REQ_SYNC);
	godvm_diag("write_to_ro=%d", ret);
	__free_page(page);
	fput(f);
	if (!bdev_read_only(bdev))
		return -EINVAL;
	return ret ? 0 : -EINVAL;	/* the write must fail */
}
GODVM_SCENARIO("virtio-blk-ro", scenario_virtio_blk_ro);

/* ---- virtio-rng ---- */

static int is_virtio_rng(struct device *dev, void *data)
{
	struct virtio_device **out = data;

	if (dev->driver && !strcmp(dev->driver->name, "virtio_rng")) {
		*out = dev_to_virtio(dev);
		return 1;
	}
	return 0;
}

static int scenario_virtio_rng(void)
{
	struct virtio_device *vdev = NULL;
	struct pci_dev *pdev = NULL;
	u8 buf[64] = {};
	struct hwrng *rng;
	char cur[32] = "";
	int got = 0, zero = 0, i, ret;
	unsigned long end;

	godvm_sysfs_wait("class/misc/hw_random/rng_current", "virtio_rng.0", 2000);
	godvm_sysfs_read("class/misc/hw_random/rng_current", cur, sizeof(cur));
	godvm_diag("rng_current=%s", cur);
	if (strncmp(cur, "virtio_rng", 10))
		return -ENODEV;

	while (!vdev && (pdev = pci_get_device(VIRTIO_VENDOR, 0x1044, pdev)))
		device_for_each_child(&pdev->dev, &vdev, is_virtio_rng);
	pci_dev_put(pdev);
	if (!vdev || !vdev->priv)
		return -ENODEV;
	/*
	 * Stop the hwrng core's fill thread (quality 0) so this is the only
	 * reader, then read through the device's own hwrng ops. virtio-rng's
	 * private struct virtrng_info starts with its struct hwrng (6.12).
	 */
	ret = godvm_sysfs_write("class/misc/hw_random/rng_quality", "0\n");
	godvm_diag("rng_quality_0=%d", ret);
	rng = vdev->priv;
	end = jiffies + 5 * HZ;
	while (got < sizeof(buf) && time_before(jiffies, end)) {
		ret = rng->read(rng, buf + got, sizeof(buf) - got, true);
		if (ret < 0) {
			godvm_diag("hwrng read: %d", ret);
			return ret;
		}
		got += ret;
	}
	for (i = 0; i < sizeof(buf); i++)
		zero += !buf[i];
	godvm_diag("rng_bytes=%d zero_bytes=%d first=%*phN", got, zero, 8, buf);
	return got == sizeof(buf) && zero < 16 ? 0 : -EIO;
}
GODVM_SCENARIO("virtio-rng", scenario_virtio_rng);

/* ---- virtio-net ---- */

/*
 * The kernel configured eth0 from ip= (IP autoconfiguration runs before the
 * agent). Keep the guest up until the host has pinged it: wait for at
 * least 3 packets each way on eth0 (the host's ARP and echo requests, the
 * kernel's replies), at most 90 s.
 */
static int scenario_virtio_net(void)
{
	char buf[32] = "";
	u64 rx = 0, tx = 0;
	unsigned long end = jiffies + 90 * HZ;

	if (godvm_sysfs_read("class/net/eth0/address", buf, sizeof(buf)) < 0) {
		godvm_diag("no eth0");
		return -ENODEV;
	}
	godvm_diag("net=eth0 mac=%s", buf);
	godvm_sysfs_read("class/net/eth0/operstate", buf, sizeof(buf));
	godvm_diag("operstate=%s", buf);
	while (time_before(jiffies, end)) {
		godvm_sysfs_read_u64("class/net/eth0/statistics/rx_packets", &rx);
		godvm_sysfs_read_u64("class/net/eth0/statistics/tx_packets", &tx);
		if (rx >= 3 && tx >= 3)
			break;
		msleep(100);
	}
	godvm_diag("rx_packets=%llu tx_packets=%llu", rx, tx);
	return rx >= 3 && tx >= 3 ? 0 : -ETIMEDOUT;
}
GODVM_SCENARIO("virtio-net", scenario_virtio_net);

/* ---- virtio-blk-bench: sequential throughput seen by the guest ---- */

#define BENCH_BIO_PAGES	256			/* 1 MiB per bio */
#define BENCH_BYTES	(64ULL << 20)		/* 64 MiB each way */

static void bench_end_io(struct bio *bio)
{
	complete(bio->bi_private);
}

/* Writes or reads BENCH_BYTES from sector 0 with up to 8 bios in flight. */
static int bench_pass(struct block_device *bdev, struct page **pages, bool write, u64 *ns)
{
	const int depth = 8;
	struct completion done[8];
	struct bio *bios[8] = {};
	u64 off = 0, t0 = ktime_get_ns();
	int i, slot = 0, ret = 0;

	for (i = 0; i < depth; i++)
		init_completion(&done[i]);
	while (off < BENCH_BYTES) {
		struct bio *bio;

		if (bios[slot]) {
			wait_for_completion(&done[slot]);
			ret = ret ?: blk_status_to_errno(bios[slot]->bi_status);
			bio_put(bios[slot]);
			reinit_completion(&done[slot]);
		}
		bio = bio_alloc(bdev, BENCH_BIO_PAGES, write ? REQ_OP_WRITE : REQ_OP_READ, GFP_KERNEL);
		bio->bi_iter.bi_sector = off >> SECTOR_SHIFT;
		for (i = 0; i < BENCH_BIO_PAGES; i++)
			__bio_add_page(bio, pages[i], PAGE_SIZE, 0);
		bio->bi_private = &done[slot];
		bio->bi_end_io = bench_end_io;
		bios[slot] = bio;
		submit_bio(bio);
		off += BENCH_BIO_PAGES * PAGE_SIZE;
		slot = (slot + 1) % depth;
	}
	for (i = 0; i < depth; i++) {
		if (!bios[i])
			continue;
		wait_for_completion(&done[i]);
		ret = ret ?: blk_status_to_errno(bios[i]->bi_status);
		bio_put(bios[i]);
	}
	if (write && !ret)
		ret = blkdev_issue_flush(bdev);
	*ns = ktime_get_ns() - t0;
	return ret;
}

static int scenario_virtio_blk_bench(void)
{
	struct page **pages;
	char name[8] = "";
	u64 wns = 0, rns = 0;
	struct file *f;
	int i, ret = 0;

	f = open_disk("godvm-bench", BLK_OPEN_READ | BLK_OPEN_WRITE, name);
	if (IS_ERR(f))
		return PTR_ERR(f);
	if (bdev_nr_sectors(file_bdev(f)) < (BENCH_BYTES >> SECTOR_SHIFT)) {
		godvm_diag("%s is smaller than %llu MiB", name, BENCH_BYTES >> 20);
		fput(f);
		return -ENOSPC;
	}
	pages = kcalloc(BENCH_BIO_PAGES, sizeof(*pages), GFP_KERNEL);
	for (i = 0; pages && i < BENCH_BIO_PAGES; i++) {
		pages[i] = alloc_page(GFP_KERNEL);
		if (!pages[i])
			ret = -ENOMEM;
		else
			fill_pattern(page_address(pages[i]));
	}
	if (!pages)
		ret = -ENOMEM;
	if (!ret)
		ret = bench_pass(file_bdev(f), pages, true, &wns);
	if (!ret)
		ret = bench_pass(file_bdev(f), pages, false, &rns);
	if (!ret && wns && rns)
		godvm_diag("blk_seq_write_MBps=%llu blk_seq_read_MBps=%llu bytes=%llu",
			   BENCH_BYTES * 1000 / wns, BENCH_BYTES * 1000 / rns, BENCH_BYTES);
	for (i = 0; pages && i < BENCH_BIO_PAGES; i++)
		if (pages[i])
			__free_page(pages[i]);
	kfree(pages);
	fput(f);
	return ret;
}
GODVM_SCENARIO("virtio-blk-bench", scenario_virtio_blk_bench);

/* ---- virtio-blk-hold: a write left to godvm's exit ---- */

/*
 * On the disk with serial "godvm-rw": writes the pattern at sector 2048 with
 * a plain write (no PREFLUSH, no FUA, no flush after it), prints
 * "# blk_hold_written=1", then keeps the guest running (disk still open) for
 * up to 60 s so that the host can stop godvm with a signal and find the
 * pattern in the image (e2e/signal_test.go). Returns 0 if nothing stopped it.
 */
static int scenario_virtio_blk_hold(void)
{
	struct page *page;
	char name[8] = "";
	unsigned long end;
	struct file *f;
	int ret;

	f = open_disk("godvm-rw", BLK_OPEN_READ | BLK_OPEN_WRITE, name);
	if (IS_ERR(f))
		return PTR_ERR(f);
	page = alloc_page(GFP_KERNEL);
	if (!page) {
		fput(f);
		return -ENOMEM;
	}
	fill_pattern(page_address(page));
	ret = page_io(file_bdev(f), page, REQ_OP_WRITE);
	__free_page(page);
	godvm_diag("blk_hold_written=%d blk=%s", ret ? 0 : 1, name);
	if (!ret) {
		end = jiffies + 60 * HZ;
		while (time_before(jiffies, end))
			msleep(100);
	}
	fput(f);
	return ret;
}
GODVM_SCENARIO("virtio-blk-hold", scenario_virtio_blk_hold);
