// SPDX-License-Identifier: GPL-2.0
/*
 * iobar: a PCI function whose BAR0 is in I/O space, used through port I/O.
 * The device is godvm's vfio-user test device testdev.IOBar (1b36:0005,
 * class 0xff), which e2e/iobar_test.go serves and attaches with
 * --vfio-user; no driver binds it. The scenario finds it, checks that BAR0
 * is an I/O resource godvm placed, requests the region and then:
 *
 *   inl  magic (0x00)          -> 0x76646f67 (the bytes "godv")
 *   outl 0x11223344 to scratch (0x04), outb 0x36 to 0x04, outb 0x1b to
 *        0x05, outw 0xc0de to 0x06  -> scratch 0xc0de1b36
 *   inl  scratch, inl invert (0x08: ~scratch), inl writes (0x0c: >= 4)
 *
 * and prints "iobar pci=BDF port=0x... len=N", iobar_magic=, iobar_scratch=,
 * iobar_invert= and iobar_writes=. Skipped when the device is absent.
 */
#include <linux/errno.h>
#include <linux/io.h>
#include <linux/ioport.h>
#include <linux/pci.h>

#include "godvm_agent.h"

#define IOBAR_VENDOR	0x1b36
#define IOBAR_DEVICE	0x0005
#define IOBAR_MAGIC	0x76646f67
#define IOBAR_MAGIC_REG	0x00
#define IOBAR_SCRATCH	0x04
#define IOBAR_INVERT	0x08
#define IOBAR_WRITES	0x0c
#define IOBAR_VALUE	0xc0de1b36u

static int scenario_iobar(void)
{
	struct pci_dev *pdev;
	unsigned long port;
	u32 magic, scratch, invert, writes;
	int ret;

	pdev = pci_get_device(IOBAR_VENDOR, IOBAR_DEVICE, NULL);
	if (!pdev) {
		godvm_diag("iobar: no %04x:%04x device", IOBAR_VENDOR, IOBAR_DEVICE);
		return GODVM_SKIP;
	}
	if (!(pci_resource_flags(pdev, 0) & IORESOURCE_IO) || pci_resource_len(pdev, 0) < 16) {
		godvm_diag("iobar: %s BAR0 is not an I/O BAR of 16 ports or more (flags %#lx, %pR)",
			   pci_name(pdev), pci_resource_flags(pdev, 0), &pdev->resource[0]);
		ret = -EINVAL;
		goto put;
	}
	ret = pci_enable_device(pdev);
	if (ret) {
		godvm_diag("iobar: pci_enable_device(%s) = %d", pci_name(pdev), ret);
		goto put;
	}
	ret = pci_request_region(pdev, 0, "godvm-iobar");
	if (ret) {
		godvm_diag("iobar: pci_request_region(%s, 0) = %d", pci_name(pdev), ret);
		goto disable;
	}
	port = pci_resource_start(pdev, 0);
	godvm_diag("iobar pci=%s port=%#lx len=%llu", pci_name(pdev), port,
		   (unsigned long long)pci_resource_len(pdev, 0));

	magic = inl(port + IOBAR_MAGIC_REG);
	outl(0x11223344, port + IOBAR_SCRATCH);
	outb(IOBAR_VALUE & 0xff, port + IOBAR_SCRATCH);
	outb((IOBAR_VALUE >> 8) & 0xff, port + IOBAR_SCRATCH + 1);
	outw(IOBAR_VALUE >> 16, port + IOBAR_SCRATCH + 2);
	scratch = inl(port + IOBAR_SCRATCH);
	invert = inl(port + IOBAR_INVERT);
	writes = inl(port + IOBAR_WRITES);

	godvm_diag("iobar_magic=%#x", magic);
	godvm_diag("iobar_scratch=%#x", scratch);
	godvm_diag("iobar_invert=%#x", invert);
	godvm_diag("iobar_writes=%u", writes);
	if (magic != IOBAR_MAGIC || scratch != IOBAR_VALUE || invert != ~IOBAR_VALUE || writes < 4)
		ret = -EIO;

	pci_release_region(pdev, 0);
disable:
	pci_disable_device(pdev);
put:
	pci_dev_put(pdev);
	return ret;
}
GODVM_SCENARIO("iobar", scenario_iobar);
