/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft path's I/O APIC (82093AA datasheet; the version KVM's in-kernel one reports, 0x11,
 * with 24 pins), at 0xFEC00000 on the MMIO bus: IOREGSEL at 0x00, IOWIN at 0x10. Each pin's
 * redirection entry sends its message (fixed, lowest priority, NMI, INIT) to the local APICs it
 * names, physically or logically (lapic.c, kap_soft_apic_send).
 *
 * Edge pins deliver on a rising level. Level pins deliver while the line is high and Remote
 * IRR is clear; delivering sets Remote IRR, and only the local APIC's EOI for that vector
 * clears it (§3.2.4), after which a line still high is delivered again. That EOI is also
 * when a resampling irqfd lowers its line and tells the device (irqfd.c), as KVM's does, so a
 * virtio device re-asserts only while its ISR is still set.
 *
 * Lock order: the I/O APIC's lock, then a local APIC's. The EOI comes in with no lock held.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/soft/irq.h"
#include "vmm/soft/soft.h"
#include "vmm/vmm.h"

#define PINS 24

#define RTE_MASKED  (1ULL << 16)
#define RTE_LEVEL   (1ULL << 15)
#define RTE_RIRR    (1ULL << 14)
#define RTE_LOGICAL (1ULL << 11)
#define RTE_RO	    (RTE_RIRR | (1ULL << 12)) /* Remote IRR, delivery status */

struct kap_soft_ioapic {
	pthread_mutex_t lock;
	struct kap_vm *vm;
	uint32_t id, sel;
	uint32_t level; /* one bit per pin: the line is high */
	uint64_t rte[PINS];
	void (*notify)(void *opaque, unsigned int pin);
	void *notify_opaque;
};

/* The message to the local APICs dest names (lapic.c: physical or logical, every mode but
 * SMI and ExtINT; the 8259 reaches the CPU through LINT0 instead). */
static void deliver(struct kap_vm *vm, unsigned int dest, bool logical, unsigned int mode,
		    unsigned int vector, bool level)
{
	kap_soft_apic_send(vm, -1, 0, dest, logical, mode, vector, level);
}

/* Pin's line or entry changed: deliver what is due. Lock held. */
static void service(struct kap_soft_ioapic *io, unsigned int pin, bool rising)
{
	uint64_t e = io->rte[pin];
	if (e & RTE_MASKED)
		return;
	if (e & RTE_LEVEL) {
		if (!(io->level & (1u << pin)) || (e & RTE_RIRR))
			return;
		io->rte[pin] |= RTE_RIRR;
	} else if (!rising) {
		return;
	}
	deliver(io->vm, (unsigned int)(e >> 56), e & RTE_LOGICAL, (unsigned int)(e >> 8) & 7,
		(unsigned int)e & 0xff, e & RTE_LEVEL);
}

void kap_soft_ioapic_set_irq(struct kap_soft_ioapic *io, unsigned int pin, int level)
{
	if (!io || pin >= PINS)
		return;
	pthread_mutex_lock(&io->lock);
	bool was = io->level & (1u << pin);
	if (level)
		io->level |= 1u << pin;
	else
		io->level &= ~(1u << pin);
	if (level)
		service(io, pin, !was);
	pthread_mutex_unlock(&io->lock);
}

void kap_soft_ioapic_eoi(void *opaque, unsigned int vector)
{
	struct kap_soft_ioapic *io = opaque;
	for (unsigned int pin = 0; pin < PINS; pin++) {
		pthread_mutex_lock(&io->lock);
		uint64_t e = io->rte[pin];
		bool hit = (e & RTE_RIRR) && (e & 0xff) == vector;
		if (hit)
			io->rte[pin] &= ~RTE_RIRR;
		void (*notify)(void *, unsigned int) = io->notify;
		void *nop = io->notify_opaque;
		pthread_mutex_unlock(&io->lock);
		if (!hit)
			continue;
		/* The resampler lowers the line first (and the device raises it again if its
		 * cause remains); what is then still high is delivered again. */
		if (notify)
			notify(nop, pin);
		pthread_mutex_lock(&io->lock);
		service(io, pin, false);
		pthread_mutex_unlock(&io->lock);
	}
}

void kap_soft_ioapic_set_notify(struct kap_soft_ioapic *io,
				void (*notify)(void *opaque, unsigned int pin), void *opaque)
{
	pthread_mutex_lock(&io->lock);
	io->notify = notify;
	io->notify_opaque = opaque;
	pthread_mutex_unlock(&io->lock);
}

void kap_soft_msi(struct kap_vm *vm, uint64_t addr, uint32_t data)
{
	/* SDM vol. 3 §11.11.1-2: 0xFEExxxxx, destination ID in bits 19:12, DM in bit 2; the
	 * vector in data bits 7:0, delivery mode 10:8, trigger mode 15. */
	if ((addr >> 20) != 0xfee) {
		kap_debug("vm: soft MSI to 0x%llx (not the local APIC) dropped",
			  (unsigned long long)addr);
		return;
	}
	deliver(vm, (unsigned int)(addr >> 12) & 0xff, addr & 4, (data >> 8) & 7, data & 0xff,
		false);
}

static uint32_t reg_read(struct kap_soft_ioapic *io)
{
	uint32_t s = io->sel & 0xff;
	if (s == 0)
		return io->id << 24;
	if (s == 1)
		return 0x11 | ((PINS - 1) << 16);
	if (s == 2)
		return io->id << 24; /* arbitration ID */
	if (s >= 0x10 && s < 0x10 + 2 * PINS) {
		uint64_t e = io->rte[(s - 0x10) / 2];
		return (s & 1) ? (uint32_t)(e >> 32) : (uint32_t)e;
	}
	return 0;
}

static void reg_write(struct kap_soft_ioapic *io, uint32_t v)
{
	uint32_t s = io->sel & 0xff;
	if (s == 0) {
		io->id = (v >> 24) & 0xf;
		return;
	}
	if (s < 0x10 || s >= 0x10 + 2 * PINS)
		return;
	unsigned int pin = (s - 0x10) / 2;
	uint64_t e = io->rte[pin];
	if (s & 1)
		e = (e & 0xffffffffULL) | ((uint64_t)v << 32);
	else
		e = (e & (0xffffffff00000000ULL | RTE_RO)) | (v & ~(uint32_t)RTE_RO);
	/* An edge pin has no Remote IRR (§3.2.4: it is undefined there; KVM clears it). */
	if (!(e & RTE_LEVEL))
		e &= ~RTE_RIRR;
	io->rte[pin] = e;
	service(io, pin, false); /* unmasking a high level line delivers it */
}

static void ioapic_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_soft_ioapic *io = dev;
	uint32_t v = 0;
	pthread_mutex_lock(&io->lock);
	if (off == 0x00)
		v = io->sel;
	else if (off == 0x10)
		v = reg_read(io);
	pthread_mutex_unlock(&io->lock);
	memset(data, 0, len);
	memcpy(data, &v, len < 4 ? len : 4);
}

static void ioapic_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_soft_ioapic *io = dev;
	uint32_t v = 0;
	memcpy(&v, data, len < 4 ? len : 4);
	pthread_mutex_lock(&io->lock);
	if (off == 0x00)
		io->sel = v & 0xff;
	else if (off == 0x10)
		reg_write(io, v);
	pthread_mutex_unlock(&io->lock);
}

static const struct kap_dev_ops ioapic_ops = {
    .name = "I/O APIC (soft)",
    .read = ioapic_read,
    .write = ioapic_write,
};

int kap_soft_ioapic_create(struct kap_vm *vm, struct kap_soft_ioapic **out,
			   struct kapsel_error **err)
{
	struct kap_soft_ioapic *io = calloc(1, sizeof(*io));
	if (!io)
		return kap_error(err, ENOMEM, "soft I/O APIC");
	pthread_mutex_init(&io->lock, NULL);
	io->vm = vm;
	for (unsigned int i = 0; i < PINS; i++)
		io->rte[i] = RTE_MASKED; /* the reset state: every pin masked */
	int r = kap_bus_register(&vm->mmio, KAP_IOAPIC_ADDR, 0x1000, &ioapic_ops, io, err);
	if (r < 0) {
		kap_soft_ioapic_free(io);
		return r;
	}
	*out = io;
	return 0;
}

void kap_soft_ioapic_free(struct kap_soft_ioapic *io)
{
	if (!io)
		return;
	pthread_mutex_destroy(&io->lock);
	free(io);
}

void kap_soft_ioapic_save(struct kap_soft_ioapic *io, struct kap_soft_ioapic_state *s)
{
	*s = (struct kap_soft_ioapic_state){0};
	pthread_mutex_lock(&io->lock);
	s->id = io->id;
	s->sel = io->sel;
	s->level = io->level;
	memcpy(s->rte, io->rte, sizeof(s->rte));
	pthread_mutex_unlock(&io->lock);
}

int kap_soft_ioapic_load(struct kap_soft_ioapic *io, const struct kap_soft_ioapic_state *s,
			 const char **why)
{
	if (s->sel > 0xff || s->level >> PINS) {
		*why = "soft I/O APIC state out of range (IOREGSEL or a pin above 23)";
		return -1;
	}
	pthread_mutex_lock(&io->lock);
	io->id = s->id;
	io->sel = s->sel;
	io->level = s->level;
	memcpy(io->rte, s->rte, sizeof(io->rte));
	pthread_mutex_unlock(&io->lock);
	return 0;
}
