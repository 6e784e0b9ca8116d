/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft path's interrupt controllers and sources (pic.c, pit.c, lapic.c, ioapic.c) and
 * its irqfds (irqfd.c): what KVM's in-kernel 8259 pair, 8254, local APIC, I/O APIC, irqfds
 * and MSI routes are on the KVM path. Devices reach them through kap_vm_set_irq and the
 * kap_vm_irqfd* calls, the vCPU takes its requests at block boundaries (cpu.c).
 */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <kapsel/error.h>

struct kap_bus;
struct kap_dev_ops;

struct kap_soft_pic;
int kap_soft_pic_create(struct kap_bus *pio, struct kap_soft_pic **out, struct kapsel_error **err);
void kap_soft_pic_free(struct kap_soft_pic *p);
/* An ISA line (0-15) goes to level; any thread. */
void kap_soft_pic_set_irq(struct kap_soft_pic *p, unsigned int irq, int level);
/* Whether a request may be deliverable (cheap; the vCPU then acknowledges it). */
bool kap_soft_pic_pending(struct kap_soft_pic *p);
/* The interrupt acknowledge cycle: the vector, or -1 when nothing is deliverable after all. */
int kap_soft_pic_ack(struct kap_soft_pic *p);
extern const struct kap_dev_ops kap_soft_pic_slave_ops;

struct kap_soft_pit;
int kap_soft_pit_create(struct kap_bus *pio, struct kap_soft_pic *pic, struct kap_soft_pit **out,
			struct kapsel_error **err);
void kap_soft_pit_free(struct kap_soft_pit *p);
/*
 * Raises IRQ 0 when channel 0's time has come (now: kap_soft_now_ns); returns when the next
 * one is due, 0 when none is scheduled.
 */
uint64_t kap_soft_pit_poll(struct kap_soft_pit *p, uint64_t now);
uint64_t kap_soft_now_ns(void);

struct kap_soft_lapic;
struct kap_vm;
/* vCPU id's local APIC: its vCPU reaches it through kap_soft_lapic_mmio (cpu.c). */
int kap_soft_lapic_create(struct kap_vm *vm, unsigned int id, struct kap_soft_lapic **out,
			  struct kapsel_error **err);
void kap_soft_lapic_free(struct kap_soft_lapic *l);
void kap_soft_lapic_mmio(struct kap_soft_lapic *l, uint64_t off, void *data, unsigned int len,
			 bool write);
/* Events an APIC message leaves for its vCPU, which takes them at a block boundary. */
enum { KAP_SOFT_EV_NMI = 1u << 0, KAP_SOFT_EV_INIT = 1u << 1, KAP_SOFT_EV_SIPI = 1u << 2 };
unsigned int kap_soft_lapic_has_events(struct kap_soft_lapic *l); /* the bits, not taken */
/* Clears the events if they are still exactly seen (false: something came meanwhile). */
bool kap_soft_lapic_drop_events(struct kap_soft_lapic *l, unsigned int seen);
/* Takes (and clears) the events; *sipi_vector is the last STARTUP's vector. */
unsigned int kap_soft_lapic_take_events(struct kap_soft_lapic *l, unsigned int *sipi_vector);
/* INIT: the registers go back to their power-up state, the APIC ID aside (§11.4.7.3). */
void kap_soft_lapic_init_reset(struct kap_soft_lapic *l);
/*
 * An APIC message (an IPI, an I/O APIC redirection entry, an MSI) to the local APICs it names
 * (SDM vol. 3 §11.6): from is the sending vCPU (-1 for none), shorthand ICR[19:18], dest the
 * 8-bit destination, logical its mode, mode the delivery mode, level the trigger mode (a fixed
 * interrupt then sets TMR). Wakes the vCPUs it reaches. Any thread; no local APIC lock held.
 */
void kap_soft_apic_send(struct kap_vm *vm, int from, unsigned int shorthand, unsigned int dest,
			bool logical, unsigned int mode, unsigned int vector, bool level);
/* Fires the timer when due; returns when it is next due, 0 when not armed. */
uint64_t kap_soft_lapic_poll(struct kap_soft_lapic *l, uint64_t now);
bool kap_soft_lapic_pending(struct kap_soft_lapic *l);
/* Moves the highest deliverable vector from IRR to ISR and returns it, or -1. */
int kap_soft_lapic_ack(struct kap_soft_lapic *l);
/* Whether the 8259's INTR reaches the CPU: APIC off, or LINT0 unmasked in ExtINT mode. */
bool kap_soft_lapic_accepts_pic(struct kap_soft_lapic *l, uint64_t apic_base);
/* Delivers a fixed interrupt (from the I/O APIC or an MSI); level: set its TMR bit. */
void kap_soft_lapic_deliver(struct kap_soft_lapic *l, unsigned int vector, bool level);
/* Called (no lock held) when the guest EOIs a level-triggered vector: the I/O APIC's hook. */
void kap_soft_lapic_set_eoi(struct kap_soft_lapic *l, void (*eoi)(void *opaque, unsigned int vec),
			    void *opaque);

struct kap_soft_ioapic;
/* The I/O APIC at 0xFEC00000 (ioapic.c): 24 pins, delivering to the vCPUs' local APICs. */
int kap_soft_ioapic_create(struct kap_vm *vm, struct kap_soft_ioapic **out,
			   struct kapsel_error **err);
void kap_soft_ioapic_free(struct kap_soft_ioapic *io);
/* Pin (0-23) goes to level; any thread. */
void kap_soft_ioapic_set_irq(struct kap_soft_ioapic *io, unsigned int pin, int level);
/* The local APICs' EOI broadcast (kap_soft_lapic_set_eoi's hook): opaque is the I/O APIC. */
void kap_soft_ioapic_eoi(void *opaque, unsigned int vector);
/* Called (no lock held) when the guest EOIs a level-triggered pin: the irqfd resampler. */
void kap_soft_ioapic_set_notify(struct kap_soft_ioapic *io,
				void (*notify)(void *opaque, unsigned int pin), void *opaque);
/* An MSI message (PCI 3.0 §6.8; SDM vol. 3 §11.11) to the local APIC it addresses. */
void kap_soft_msi(struct kap_vm *vm, uint64_t addr, uint32_t data);

struct kap_soft_irqfds;
/* KVM's irqfds and MSI routes in userspace (irqfd.c): one thread waits on the eventfds. */
int kap_soft_irqfds_create(struct kap_vm *vm, struct kap_soft_irqfds **out,
			   struct kapsel_error **err);
/* resample_fd -1: edge (an MSI route's GSI); else level, resampled on the pin's EOI. */
int kap_soft_irqfd_add(struct kap_soft_irqfds *x, unsigned int gsi, int fd, int resample_fd,
		       struct kapsel_error **err);
int kap_soft_irqfd_msi_route(struct kap_soft_irqfds *x, unsigned int gsi, uint64_t addr,
			     uint32_t data, struct kapsel_error **err);
/* Starts the thread (once the local APICs exist); stop and free join it. */
int kap_soft_irqfds_start(struct kap_soft_irqfds *x, struct kapsel_error **err);
void kap_soft_irqfds_free(struct kap_soft_irqfds *x);

/*
 * Snapshot state (state.c, docs/vm.md "Snapshot format"): each controller's registers in a
 * fixed little-endian layout. Times are in the soft guest clock (kap_soft_now_ns). The load
 * functions check every field a later access indexes or divides by, and return -1 with *why
 * naming the field when the state is out of range (nothing is changed then).
 */
struct kap_soft_pic_state {
	struct {
		uint8_t irr, isr, imr, last_level, base, icw_step, icw4, auto_eoi, read_isr, elcr;
		uint8_t pad[6];
	} c[2];
};
_Static_assert(sizeof(struct kap_soft_pic_state) == 32, "soft PIC state layout");
void kap_soft_pic_save(struct kap_soft_pic *p, struct kap_soft_pic_state *s);
int kap_soft_pic_load(struct kap_soft_pic *p, const struct kap_soft_pic_state *s, const char **why);

struct kap_soft_pit_state {
	struct {
		uint64_t start_ns;
		uint32_t reload;
		uint16_t latch;
		uint8_t mode, rw, write_hi, read_hi, latched, lo, armed, pad[3];
	} ch[3];
	uint64_t next_irq_ns;
};
_Static_assert(sizeof(struct kap_soft_pit_state) == 80, "soft PIT state layout");
void kap_soft_pit_save(struct kap_soft_pit *p, struct kap_soft_pit_state *s);
int kap_soft_pit_load(struct kap_soft_pit *p, const struct kap_soft_pit_state *s, const char **why);

struct kap_soft_lapic_state {
	uint32_t id, tpr, svr, ldr, dfr, esr, icr_lo, icr_hi, tmict, tdcr;
	uint32_t lvt[6], irr[8], isr[8], tmr[8];
	uint32_t events, sipi_vector;
	uint64_t timer_start_ns, period_ns, timer_next_ns;
};
_Static_assert(sizeof(struct kap_soft_lapic_state) == 192, "soft LAPIC state layout");
void kap_soft_lapic_save(struct kap_soft_lapic *l, struct kap_soft_lapic_state *s);
int kap_soft_lapic_load(struct kap_soft_lapic *l, const struct kap_soft_lapic_state *s,
			const char **why);

struct kap_soft_ioapic_state {
	uint32_t id, sel, level, pad;
	uint64_t rte[24];
};
_Static_assert(sizeof(struct kap_soft_ioapic_state) == 208, "soft I/O APIC state layout");
void kap_soft_ioapic_save(struct kap_soft_ioapic *io, struct kap_soft_ioapic_state *s);
int kap_soft_ioapic_load(struct kap_soft_ioapic *io, const struct kap_soft_ioapic_state *s,
			 const char **why);
