/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PCI host bridge: bus 0 only, configuration mechanism #1 (PCI 3.0 §3.2.2.3.2): a dword
 * written to 0xCF8 selects bus/device/function/register, and 0xCFC-0xCFF read or write that
 * register's bytes. 00:00.0 is the bridge itself (class 0x0600, which Linux's
 * pci_sanity_check looks for before it trusts mechanism #1); the virtio functions sit in the
 * slots above it. Absent functions read as all ones, so enumeration stops there.
 *
 * Under firmware (--firmware, kap_pci_host_i440fx) the bridge calls itself QEMU's i440FX
 * (8086:1237 revision 2, subsystem 1af4:1100), which is what firmware looks for: SeaBIOS's
 * qemu_detect (src/fw/paravirt.c) checks the subsystem ids, and make_bios_writable
 * (src/fw/shadow.c) the device id before it sets the PAM registers (0x59-0x5f, Intel 440FX
 * datasheet §3.2.18) to make 0xC0000-0xFFFFF read/write. That region is RAM in kapsel
 * (x86/boot-firmware.c), so the PAM bytes are only stored and read back.
 *
 * The bridge also owns the BAR window (KAP_PCI_MMIO_BASE, one bus range registered before
 * the vCPUs start) and sends each access to the function whose BAR decodes it now, so a
 * guest that moves a BAR needs no change to the buses.
 */
#include <linux/pci_regs.h>
#include <string.h>

#include "vmm/virtio/pci.h"

#define CONFIG_ENABLE 0x80000000u
/* i440FX PAM0-PAM6: two 2-bit fields (read enable, write enable) per byte. */
#define PAM_FIRST 0x59
#define PAM_LAST  0x5f

void kap_pci_host_init(struct kap_pci_host *h)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->lock, NULL);
	/* Vendor 0x8086 device 0x0d57: any id works; class and header type are what matter. */
	uint16_t ids[2] = {0x8086, 0x0d57};
	memcpy(h->self, ids, sizeof(ids));
	h->self[PCI_CLASS_DEVICE] = 0x00;
	h->self[PCI_CLASS_DEVICE + 1] = 0x06; /* host bridge */
	h->self[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;
}

void kap_pci_host_i440fx(struct kap_pci_host *h)
{
	uint16_t ids[2] = {0x8086, 0x1237}, sub[2] = {0x1af4, 0x1100};
	memcpy(h->self, ids, sizeof(ids));
	memcpy(h->self + PCI_SUBSYSTEM_VENDOR_ID, sub, sizeof(sub));
	h->self[PCI_REVISION_ID] = 0x02;
	h->pam = true;
}

void kap_pci_host_destroy(struct kap_pci_host *h)
{
	pthread_mutex_destroy(&h->lock);
}

/* The function the latched address selects, NULL when absent. *self for 00:00.0. */
static struct kap_pci_func *selected(struct kap_pci_host *h, bool *self)
{
	uint32_t a = h->config_address;
	unsigned int bus = (a >> 16) & 0xff, dev = (a >> 11) & 0x1f, fn = (a >> 8) & 7;
	*self = false;
	if (!(a & CONFIG_ENABLE) || bus != 0 || fn != 0)
		return NULL;
	if (dev == 0)
		*self = true;
	return h->slot[dev];
}

static void cfg_port_read(void *opaque, uint64_t off, void *data, unsigned int len)
{
	struct kap_pci_host *h = opaque;
	pthread_mutex_lock(&h->lock);
	if (off == 0) {
		/* Only a dword access at 0xCF8 is CONFIG_ADDRESS. */
		if (len == 4)
			memcpy(data, &h->config_address, 4);
		else
			memset(data, 0xff, len);
	} else if (off >= 4 && len <= 8 - off) {
		bool self;
		struct kap_pci_func *f = selected(h, &self);
		uint32_t reg = (h->config_address & 0xfc) + (uint32_t)(off - 4);
		if (self) {
			memset(data, 0, len);
			if (reg + len <= sizeof(h->self))
				memcpy(data, h->self + reg, len);
		} else if (f) {
			f->cfg_read(f->opaque, reg, data, len);
		} else {
			memset(data, 0xff, len);
		}
	} else {
		memset(data, 0xff, len);
	}
	pthread_mutex_unlock(&h->lock);
}

static void cfg_port_write(void *opaque, uint64_t off, const void *data, unsigned int len)
{
	struct kap_pci_host *h = opaque;
	pthread_mutex_lock(&h->lock);
	if (off == 0 && len == 4) {
		/* Reserved bits 30:24 and the type bits 1:0 read back as zero. */
		uint32_t v;
		memcpy(&v, data, 4);
		h->config_address = v & 0x80fffffcu;
	} else if (off >= 4 && len <= 8 - off) {
		bool self;
		struct kap_pci_func *f = selected(h, &self);
		uint32_t reg = (h->config_address & 0xfc) + (uint32_t)(off - 4);
		/* The bridge's own header is read-only but for the PAM registers. */
		if (f && !self)
			f->cfg_write(f->opaque, reg, data, len);
		for (unsigned int i = 0; self && h->pam && i < len; i++)
			if (reg + i >= PAM_FIRST && reg + i <= PAM_LAST)
				h->self[reg + i] = ((const uint8_t *)data)[i] & 0x33;
	}
	pthread_mutex_unlock(&h->lock);
}

const struct kap_dev_ops kap_pci_host_cfg_ops = {
    .name = "pci-host",
    .read = cfg_port_read,
    .write = cfg_port_write,
};

/* The function whose BAR holds [addr, addr + len), with the offset into it. */
static struct kap_pci_func *decoder(struct kap_pci_host *h, uint64_t addr, unsigned int len,
				    uint64_t *off)
{
	for (unsigned int s = 1; s < KAP_PCI_MAX_SLOTS; s++) {
		struct kap_pci_func *f = h->slot[s];
		uint64_t base, size;
		if (!f)
			continue;
		f->bar_window(f->opaque, &base, &size);
		if (size && addr >= base && addr - base < size && len <= size - (addr - base)) {
			*off = addr - base;
			return f;
		}
	}
	return NULL;
}

static void mmio_read(void *opaque, uint64_t off, void *data, unsigned int len)
{
	struct kap_pci_host *h = opaque;
	uint64_t boff;
	pthread_mutex_lock(&h->lock);
	struct kap_pci_func *f = decoder(h, KAP_PCI_MMIO_BASE + off, len, &boff);
	if (f)
		f->bar_read(f->opaque, boff, data, len);
	else
		memset(data, 0xff, len); /* master abort */
	pthread_mutex_unlock(&h->lock);
}

static void mmio_write(void *opaque, uint64_t off, const void *data, unsigned int len)
{
	struct kap_pci_host *h = opaque;
	uint64_t boff;
	pthread_mutex_lock(&h->lock);
	struct kap_pci_func *f = decoder(h, KAP_PCI_MMIO_BASE + off, len, &boff);
	if (f)
		f->bar_write(f->opaque, boff, data, len);
	pthread_mutex_unlock(&h->lock);
}

const struct kap_dev_ops kap_pci_host_mmio_ops = {
    .name = "pci-bars",
    .read = mmio_read,
    .write = mmio_write,
};

int kap_pci_host_attach(struct kap_pci_host *h, struct kap_vm *vm, struct kapsel_error **err)
{
	int r =
	    kap_bus_register(&vm->pio, KAP_PCI_CONFIG_ADDRESS, 8, &kap_pci_host_cfg_ops, h, err);
	if (r < 0)
		return r;
	return kap_bus_register(&vm->mmio, KAP_PCI_MMIO_BASE, KAP_PCI_MMIO_SIZE,
				&kap_pci_host_mmio_ops, h, err);
}
