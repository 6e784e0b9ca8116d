/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PCI host bridge's configuration ports and BAR window (vmm/devices/pci-host.c) and the
 * virtio-pci function behind them (vmm/virtio/pci.c: configuration space, common/ISR/device/
 * notify structures, MSI-X table and PBA), with a blk (memfd) or rng device, driven by a random
 * sequence of port and MMIO accesses. The guest RAM comes from the input too; a notification
 * runs the queue inline. No KVM: the transport's vm is NULL, so routes and ioeventfds are
 * skipped. Nothing may crash, leak or touch memory outside the device and RAM.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmm/virtio/transport.h"

#define RAM 0x4000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 + RAM / 16)
		return 0;
	uint8_t *ram = calloc(1, RAM);
	if (!ram)
		return 0;
	memcpy(ram, data + 1, RAM / 16);
	struct kap_guest_mem mem = {.host = ram, .size = RAM, .low_size = RAM, .fd = -1};
	struct kap_virtio_dev d;
	struct kapsel_error *err = NULL;
	int mfd = -1, r;
	if (data[0] & 1) {
		char path[64];
		mfd = memfd_create("fuzz-disk", MFD_CLOEXEC);
		if (mfd < 0 || ftruncate(mfd, 64 * 1024) < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
		struct kapsel_vm_disk disk = {.id = "disk0", .path = path, .ro = data[0] & 2};
		r = kap_virtio_blk_new(&d, &disk, &mem, &err);
	} else {
		r = kap_virtio_rng_new(&d, &mem, &err);
	}
	if (r < 0)
		abort();
	struct kap_pci_host host;
	struct kap_pci_transport t;
	kap_pci_host_init(&host);
	if (kap_virtio_pci_init(&t, &d, 1, KAP_PCI_MMIO_BASE, &err) < 0)
		abort();
	host.slot[1] = &t.func;
	const uint8_t *p = data + 1 + RAM / 16, *end = data + size;
	/* Each step: op (1 byte), address (2), value (4). */
	while (end - p >= 7) {
		uint8_t op = p[0];
		uint32_t a = (uint32_t)(p[1] | (p[2] << 8));
		uint32_t v;
		memcpy(&v, p + 3, 4);
		p += 7;
		unsigned int len = 1u << (op >> 6);
		uint8_t buf[8] = {0};
		bool write = op & 1;
		memcpy(buf, &v, 4);
		if (op & 2) {
			/* Ports 0xCF8-0xCFF; CONFIG_ADDRESS mostly aimed at slot 0 or 1. */
			uint64_t off = a & 7;
			if (len > 4 || off + len > 8)
				continue;
			if (off == 0 && len == 4 && write && (op & 4))
				v = 0x80000000u | (v & 0x8fc);
			memcpy(buf, &v, 4);
			if (write)
				kap_pci_host_cfg_ops.write(&host, off, buf, len);
			else
				kap_pci_host_cfg_ops.read(&host, off, buf, len);
		} else {
			/* The BAR window: BAR 0 at its boot address, or wherever the script put it.
			 */
			uint64_t off = (uint64_t)a % KAP_VPCI_BAR_SIZE;
			if (op & 4)
				off = (off & 0x70ff) | ((uint64_t)(a >> 8) & 7) << 12;
			if (op & 8 && write)
				v %= RAM; /* queue addresses land in RAM more often than not */
			memcpy(buf, &v, 4);
			if (write)
				kap_pci_host_mmio_ops.write(&host, off, buf, len);
			else
				kap_pci_host_mmio_ops.read(&host, off, buf, len);
			uint64_t nq = (off - KAP_VPCI_NOTIFY_OFF) / KAP_VPCI_NOTIFY_MULT;
			if (write && off >= KAP_VPCI_NOTIFY_OFF && nq < d.ops->nqueues)
				d.ops->process(&d, (unsigned int)nq);
		}
	}
	kap_virtio_destroy(&d);
	kap_virtio_pci_destroy(&t);
	kap_pci_host_destroy(&host);
	kapsel_error_free(err);
	if (mfd >= 0)
		close(mfd);
	free(ram);
	return 0;
}
