/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft path's local APIC (SDM vol. 3 ch. 11), xAPIC mode at 0xFEE00000, one per vCPU and
 * reached only by its own vCPU (cpu.c sends that vCPU's accesses to the APIC page here, the
 * APIC base MSR's page, rather than through the shared MMIO bus). What is here: the ID,
 * version, TPR/PPR, EOI, SVR, the ISR/TMR/IRR banks, ESR, the LVT registers, the timer in
 * one-shot and periodic mode counted from CLOCK_MONOTONIC with a 1 GHz bus clock (KVM's, so a
 * guest times the same on both paths), and interprocessor interrupts through the ICR. LINT0 in
 * ExtINT mode passes the 8259's requests through (the virtual-wire mode the BSP resets into, as
 * KVM's LAPIC does). Interrupts from the I/O APIC and MSI messages arrive through
 * kap_soft_apic_send as IPIs do; an EOI for a level-triggered one (its TMR bit set) is
 * broadcast to the I/O APIC (§11.8.5), which is what lets a level line (virtio INTx, a
 * virtio-mmio GSI) be resampled.
 *
 * IPIs (§11.6): fixed, lowest priority, NMI, INIT and STARTUP; the destination shorthands
 * self, all and all-but-self; physical destinations (an APIC ID, 0xFF for all) and logical
 * ones in the flat and cluster models (DFR, LDR). They are delivered when the ICR is written,
 * so its delivery status always reads idle. NMI, INIT and STARTUP become events the target
 * vCPU takes at a block boundary (cpu.c): only its own thread changes its registers.
 * A STARTUP reaches only a vCPU waiting for one; a destination no APIC has is dropped, as on
 * a bus where no APIC answers. SMI and ExtINT messages are dropped with a debug line.
 *
 * Lock order: the I/O APIC's lock, then one local APIC's. A sender delivers after dropping its
 * own lock and holds one target's lock at a time, so two vCPUs sending to each other cannot
 * deadlock. Not here yet: x2APIC, the TSC-deadline mode.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/soft/irq.h"
#include "vmm/soft/soft.h"
#include "vmm/vmm.h"

enum { LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR, LVT_N };
#define LVT_MASKED (1u << 16)

struct kap_soft_lapic {
	pthread_mutex_t lock;
	struct kap_vm *vm;
	unsigned int index; /* the vCPU's: vm->vcpus[index] */
	uint32_t id, tpr, svr, ldr, dfr, esr, icr_lo, icr_hi, tmict, tdcr;
	uint32_t lvt[LVT_N];
	uint32_t irr[8], isr[8], tmr[8];
	uint64_t timer_start_ns, period_ns;
	_Atomic uint64_t timer_next_ns;			/* 0: not armed */
	atomic_bool pending;				/* IRR may hold a deliverable vector */
	atomic_uint events;				/* KAP_SOFT_EV_*: for the vCPU to take */
	atomic_uint sipi_vector;			/* the last STARTUP's */
	void (*eoi)(void *opaque, unsigned int vector); /* the level EOI broadcast, or NULL */
	void *eoi_opaque;
};

/* The highest vector set in a 256-bit bank, or -1. */
static int highest(const uint32_t *bank)
{
	for (int i = 7; i >= 0; i--)
		if (bank[i])
			return i * 32 + 31 - __builtin_clz(bank[i]);
	return -1;
}

static uint32_t ppr(const struct kap_soft_lapic *l)
{
	int isrv = highest(l->isr);
	uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
	return (l->tpr & 0xf0) >= isr_class ? l->tpr : isr_class;
}

/* Lock held. */
static void update(struct kap_soft_lapic *l)
{
	int v = highest(l->irr);
	atomic_store(&l->pending, v >= 0 && ((uint32_t)v & 0xf0) > (ppr(l) & 0xf0));
}

static void set_irr(struct kap_soft_lapic *l, unsigned int vec)
{
	if (vec < 16) {
		l->esr |= 1u << 6; /* received an illegal vector */
		return;
	}
	l->irr[vec >> 5] |= 1u << (vec & 31);
	update(l);
}

static uint32_t divisor(const struct kap_soft_lapic *l)
{
	uint32_t v = (l->tdcr & 3) | ((l->tdcr & 8) >> 1);
	return v == 7 ? 1 : 2u << v;
}

/* Lock held. */
static uint32_t current_count(const struct kap_soft_lapic *l, uint64_t now)
{
	if (!atomic_load(&l->timer_next_ns) || !l->tmict)
		return 0;
	uint64_t elapsed = (now - l->timer_start_ns) / divisor(l);
	if ((l->lvt[LVT_TIMER] >> 17) & 1)
		return (uint32_t)(l->tmict - elapsed % l->tmict);
	return elapsed >= l->tmict ? 0 : (uint32_t)(l->tmict - elapsed);
}

static void arm(struct kap_soft_lapic *l)
{
	if (!l->tmict) {
		atomic_store(&l->timer_next_ns, 0);
		return;
	}
	l->timer_start_ns = kap_soft_now_ns();
	l->period_ns = (uint64_t)l->tmict * divisor(l);
	atomic_store(&l->timer_next_ns, l->timer_start_ns + l->period_ns);
}

uint64_t kap_soft_lapic_poll(struct kap_soft_lapic *l, uint64_t now)
{
	uint64_t next = atomic_load_explicit(&l->timer_next_ns, memory_order_relaxed);
	if (!next || now < next)
		return next;
	pthread_mutex_lock(&l->lock);
	next = atomic_load(&l->timer_next_ns);
	if (next && now >= next) {
		uint32_t lvt = l->lvt[LVT_TIMER];
		if (!(lvt & LVT_MASKED) && (l->svr & 0x100))
			set_irr(l, lvt & 0xff);
		if ((lvt >> 17) & 1) { /* periodic; missed periods are dropped */
			next += l->period_ns;
			if (next <= now)
				next = now + l->period_ns;
		} else {
			next = 0;
		}
		atomic_store(&l->timer_next_ns, next);
	}
	pthread_mutex_unlock(&l->lock);
	return next;
}

bool kap_soft_lapic_pending(struct kap_soft_lapic *l)
{
	return atomic_load_explicit(&l->pending, memory_order_relaxed);
}

int kap_soft_lapic_ack(struct kap_soft_lapic *l)
{
	pthread_mutex_lock(&l->lock);
	int v = highest(l->irr);
	if (v >= 0 && ((uint32_t)v & 0xf0) > (ppr(l) & 0xf0)) {
		l->irr[v >> 5] &= ~(1u << (v & 31));
		l->isr[v >> 5] |= 1u << (v & 31);
	} else {
		v = -1;
	}
	update(l);
	pthread_mutex_unlock(&l->lock);
	return v;
}

void kap_soft_lapic_deliver(struct kap_soft_lapic *l, unsigned int vector, bool level)
{
	pthread_mutex_lock(&l->lock);
	/* A software-disabled APIC accepts nothing but NMI, INIT and SIPI (§11.4.7.2). */
	if (l->svr & 0x100) {
		if (level)
			l->tmr[vector >> 5] |= 1u << (vector & 31);
		else
			l->tmr[vector >> 5] &= ~(1u << (vector & 31));
		set_irr(l, vector);
	}
	pthread_mutex_unlock(&l->lock);
}

void kap_soft_lapic_set_eoi(struct kap_soft_lapic *l, void (*eoi)(void *, unsigned int),
			    void *opaque)
{
	pthread_mutex_lock(&l->lock);
	l->eoi = eoi;
	l->eoi_opaque = opaque;
	pthread_mutex_unlock(&l->lock);
}

bool kap_soft_lapic_accepts_pic(struct kap_soft_lapic *l, uint64_t apic_base)
{
	if (!(apic_base & (1u << 11)))
		return true; /* the APIC is off: the PIC's INTR goes straight to the CPU */
	uint32_t lint0 = l->lvt[LVT_LINT0];
	return !(lint0 & LVT_MASKED) && ((lint0 >> 8) & 7) == 7;
}

/* The power-up and INIT state (§11.4.7.1), the ID aside; the BSP's LINT0 in ExtINT and LINT1
 * as NMI (KVM's reset). Lock held, or not yet shared. */
static void reset(struct kap_soft_lapic *l)
{
	l->tpr = l->ldr = l->esr = l->icr_lo = l->icr_hi = l->tmict = l->tdcr = 0;
	l->svr = 0xff;
	l->dfr = 0xffffffffu;
	memset(l->irr, 0, sizeof(l->irr));
	memset(l->isr, 0, sizeof(l->isr));
	memset(l->tmr, 0, sizeof(l->tmr));
	for (int i = 0; i < LVT_N; i++)
		l->lvt[i] = LVT_MASKED;
	if (l->index == 0) {
		l->lvt[LVT_LINT0] = 7u << 8;
		l->lvt[LVT_LINT1] = LVT_MASKED | (4u << 8);
	}
	atomic_store(&l->timer_next_ns, 0);
	update(l);
}

void kap_soft_lapic_init_reset(struct kap_soft_lapic *l)
{
	pthread_mutex_lock(&l->lock);
	reset(l);
	pthread_mutex_unlock(&l->lock);
}

unsigned int kap_soft_lapic_take_events(struct kap_soft_lapic *l, unsigned int *sipi_vector)
{
	if (!atomic_load_explicit(&l->events, memory_order_relaxed))
		return 0;
	unsigned int ev = atomic_exchange(&l->events, 0);
	*sipi_vector = atomic_load(&l->sipi_vector);
	return ev;
}

unsigned int kap_soft_lapic_has_events(struct kap_soft_lapic *l)
{
	return atomic_load_explicit(&l->events, memory_order_relaxed);
}

bool kap_soft_lapic_drop_events(struct kap_soft_lapic *l, unsigned int seen)
{
	return atomic_compare_exchange_strong(&l->events, &seen, 0);
}

/*
 * Whether l accepts a message to dest (§11.6.2): physical, its APIC ID or 0xFF; logical, in the
 * flat model (DFR[31:28] = 1111b) a bit shared with LDR[31:24], in the cluster model (0000b)
 * the same cluster (bits 7:4) and a shared bit of the low four, or 0xFF in either.
 */
static bool accepts(struct kap_soft_lapic *l, unsigned int dest, bool logical, uint32_t *tpr)
{
	pthread_mutex_lock(&l->lock);
	uint32_t id = l->id, ldr = l->ldr >> 24, model = l->dfr >> 28;
	*tpr = l->tpr;
	pthread_mutex_unlock(&l->lock);
	if (dest == 0xff)
		return true;
	if (!logical)
		return dest == id;
	if (model == 0xf)
		return (dest & ldr) != 0;
	return (dest >> 4) == (ldr >> 4) && (dest & ldr & 0xf) != 0;
}

static struct kap_soft_lapic *lapic_of(struct kap_vm *vm, unsigned int i)
{
	struct kap_soft_cpu *cpu = vm->vcpus[i].soft;
	return cpu ? cpu->lapic : NULL;
}

/* One message to one local APIC, then its vCPU is woken. */
static void accept(struct kap_vm *vm, unsigned int i, unsigned int mode, unsigned int vector,
		   bool level)
{
	struct kap_soft_lapic *t = lapic_of(vm, i);
	switch (mode) {
	case 0: /* fixed */
	case 1: /* lowest priority: the arbitration picked this one */
		kap_soft_lapic_deliver(t, vector, level);
		break;
	case 4: /* NMI */
		atomic_fetch_or(&t->events, KAP_SOFT_EV_NMI);
		break;
	case 5: /* INIT */
		atomic_fetch_or(&t->events, KAP_SOFT_EV_INIT);
		break;
	case 6: /* STARTUP */
		atomic_store(&t->sipi_vector, vector);
		atomic_fetch_or(&t->events, KAP_SOFT_EV_SIPI);
		break;
	}
	kap_soft_kick(vm, i);
}

void kap_soft_apic_send(struct kap_vm *vm, int from, unsigned int shorthand, unsigned int dest,
			bool logical, unsigned int mode, unsigned int vector, bool level)
{
	if (mode == 2 || mode == 3 || mode == 7) {
		kap_debug("vm: soft APIC message, delivery mode %u (vector 0x%x), dropped", mode,
			  vector);
		return;
	}
	/* Lowest priority: the accepting APIC with the lowest TPR (§11.6.2.4), first on a tie. */
	int lowest = -1;
	uint32_t lowest_tpr = 0;
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct kap_soft_lapic *t = lapic_of(vm, i);
		uint32_t tpr = 0;
		if (!t)
			continue;
		bool hit;
		switch (shorthand) {
		case 1: /* self */
			hit = (int)i == from;
			break;
		case 2: /* all including self */
			hit = true;
			break;
		case 3: /* all excluding self */
			hit = (int)i != from;
			break;
		default:
			hit = accepts(t, dest, logical, &tpr);
		}
		if (!hit)
			continue;
		if (mode == 1 && shorthand == 0) {
			if (lowest < 0 || (tpr & 0xf0) < (lowest_tpr & 0xf0)) {
				lowest = (int)i;
				lowest_tpr = tpr;
			}
			continue;
		}
		accept(vm, i, mode, vector, level);
	}
	if (lowest >= 0)
		accept(vm, (unsigned int)lowest, mode, vector, level);
}

/* The ICR was written (lo: its low half, the command; dest: ICR[63:56]). No lock held. */
static void send_ipi(struct kap_soft_lapic *l, uint32_t lo, unsigned int dest)
{
	unsigned int mode = (lo >> 8) & 7, shorthand = (lo >> 18) & 3, vector = lo & 0xff;
	/* INIT level de-assert (level 0, trigger level) only resynchronises arbitration IDs. */
	if (mode == 5 && !(lo & (1u << 14)) && (lo & (1u << 15)))
		return;
	if ((mode == 0 || mode == 1) && vector < 16) {
		pthread_mutex_lock(&l->lock);
		l->esr |= 1u << 5; /* send illegal vector */
		pthread_mutex_unlock(&l->lock);
		return;
	}
	/* Lowest priority with a shorthand other than all-excluding-self is reserved: fixed. */
	if (mode == 1 && shorthand != 0)
		mode = 0;
	kap_soft_apic_send(l->vm, (int)l->index, shorthand, dest, lo & (1u << 11), mode, vector,
			   false);
}

static void lapic_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_soft_lapic *l = dev;
	uint32_t v = 0;
	unsigned int reg = (unsigned int)off & 0xff0;
	pthread_mutex_lock(&l->lock);
	switch (reg) {
	case 0x20:
		v = l->id << 24;
		break;
	case 0x30:
		v = 0x00050014; /* version 0x14, six LVT entries */
		break;
	case 0x80:
		v = l->tpr;
		break;
	case 0xa0:
		v = ppr(l);
		break;
	case 0xd0:
		v = l->ldr;
		break;
	case 0xe0:
		v = l->dfr;
		break;
	case 0xf0:
		v = l->svr;
		break;
	case 0x280:
		v = l->esr;
		break;
	case 0x300:
		v = l->icr_lo;
		break;
	case 0x310:
		v = l->icr_hi;
		break;
	case 0x380:
		v = l->tmict;
		break;
	case 0x390:
		v = current_count(l, kap_soft_now_ns());
		break;
	case 0x3e0:
		v = l->tdcr;
		break;
	default:
		if (reg >= 0x100 && reg < 0x180)
			v = l->isr[(reg - 0x100) >> 4];
		else if (reg >= 0x180 && reg < 0x200)
			v = l->tmr[(reg - 0x180) >> 4];
		else if (reg >= 0x200 && reg < 0x280)
			v = l->irr[(reg - 0x200) >> 4];
		else if (reg >= 0x320 && reg < 0x380)
			v = l->lvt[(reg - 0x320) >> 4];
	}
	pthread_mutex_unlock(&l->lock);
	memset(data, 0, len);
	/* Only aligned 32-bit reads mean anything (SDM vol. 3 §11.4.1); the rest read a part. */
	unsigned int sh = (unsigned int)(off & 3) * 8;
	v >>= sh;
	memcpy(data, &v, len < 4 ? len : 4);
}

static void lapic_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_soft_lapic *l = dev;
	uint32_t v = 0;
	int level_eoi = -1; /* a level-triggered vector EOI'd: broadcast after the lock */
	bool ipi = false;   /* the ICR was written: sent after the lock */
	if (off & 3)
		return;
	memcpy(&v, data, len < 4 ? len : 4);
	unsigned int reg = (unsigned int)off & 0xff0;
	pthread_mutex_lock(&l->lock);
	switch (reg) {
	case 0x20:
		l->id = v >> 24;
		break;
	case 0x80:
		l->tpr = v & 0xff;
		break;
	case 0xb0: { /* EOI: the highest in service */
		int i = highest(l->isr);
		if (i >= 0) {
			l->isr[i >> 5] &= ~(1u << (i & 31));
			if (l->tmr[i >> 5] & (1u << (i & 31)))
				level_eoi = i;
		}
		break;
	}
	case 0xd0:
		l->ldr = v & 0xff000000u;
		break;
	case 0xe0:
		l->dfr = v | 0x0fffffffu;
		break;
	case 0xf0:
		l->svr = v & 0x13ff;
		if (!(v & 0x100)) /* software-disabled: every LVT masked (§11.4.7.2) */
			for (int i = 0; i < LVT_N; i++)
				l->lvt[i] |= LVT_MASKED;
		break;
	case 0x280:
		l->esr = 0;
		break;
	case 0x300:
		l->icr_lo = v & ~(1u << 12); /* delivered at once: delivery status stays idle */
		ipi = true;
		break;
	case 0x310:
		l->icr_hi = v & 0xff000000u;
		break;
	case 0x380:
		l->tmict = v;
		arm(l);
		break;
	case 0x3e0:
		l->tdcr = v & 0xb;
		break;
	default:
		if (reg >= 0x320 && reg < 0x380) {
			if (!(l->svr & 0x100))
				v |= LVT_MASKED;
			l->lvt[(reg - 0x320) >> 4] = v & 0x7ffff;
		}
	}
	update(l);
	void (*eoi)(void *, unsigned int) = l->eoi;
	void *eoi_opaque = l->eoi_opaque;
	pthread_mutex_unlock(&l->lock);
	/* Outside the lock: the I/O APIC may deliver the still-asserted line straight back. */
	if (level_eoi >= 0 && eoi)
		eoi(eoi_opaque, (unsigned int)level_eoi);
	if (ipi)
		send_ipi(l, v, l->icr_hi >> 24);
}

void kap_soft_lapic_mmio(struct kap_soft_lapic *l, uint64_t off, void *data, unsigned int len,
			 bool write)
{
	if (write)
		lapic_write(l, off, data, len);
	else
		lapic_read(l, off, data, len);
}

int kap_soft_lapic_create(struct kap_vm *vm, unsigned int id, struct kap_soft_lapic **out,
			  struct kapsel_error **err)
{
	struct kap_soft_lapic *l = calloc(1, sizeof(*l));
	if (!l)
		return kap_error(err, ENOMEM, "soft local APIC");
	pthread_mutex_init(&l->lock, NULL);
	l->vm = vm;
	l->index = id;
	l->id = id;
	reset(l);
	*out = l;
	return 0;
}

void kap_soft_lapic_free(struct kap_soft_lapic *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->lock);
	free(l);
}

void kap_soft_lapic_save(struct kap_soft_lapic *l, struct kap_soft_lapic_state *s)
{
	*s = (struct kap_soft_lapic_state){0};
	pthread_mutex_lock(&l->lock);
	s->id = l->id;
	s->tpr = l->tpr;
	s->svr = l->svr;
	s->ldr = l->ldr;
	s->dfr = l->dfr;
	s->esr = l->esr;
	s->icr_lo = l->icr_lo;
	s->icr_hi = l->icr_hi;
	s->tmict = l->tmict;
	s->tdcr = l->tdcr;
	memcpy(s->lvt, l->lvt, sizeof(s->lvt));
	memcpy(s->irr, l->irr, sizeof(s->irr));
	memcpy(s->isr, l->isr, sizeof(s->isr));
	memcpy(s->tmr, l->tmr, sizeof(s->tmr));
	s->events = atomic_load(&l->events);
	s->sipi_vector = atomic_load(&l->sipi_vector);
	s->timer_start_ns = l->timer_start_ns;
	s->period_ns = l->period_ns;
	s->timer_next_ns = atomic_load(&l->timer_next_ns);
	pthread_mutex_unlock(&l->lock);
}

int kap_soft_lapic_load(struct kap_soft_lapic *l, const struct kap_soft_lapic_state *s,
			const char **why)
{
	_Static_assert(LVT_N == 6, "the state's LVT count");
	/* A periodic timer with no period would never move its deadline (kap_soft_lapic_poll). */
	if (s->events & ~(unsigned)(KAP_SOFT_EV_NMI | KAP_SOFT_EV_INIT | KAP_SOFT_EV_SIPI) ||
	    s->sipi_vector > 0xff || (s->timer_next_ns && !s->period_ns)) {
		*why = "soft local APIC state out of range (events, STARTUP vector or timer)";
		return -1;
	}
	pthread_mutex_lock(&l->lock);
	l->id = s->id;
	l->tpr = s->tpr;
	l->svr = s->svr;
	l->ldr = s->ldr;
	l->dfr = s->dfr;
	l->esr = s->esr;
	l->icr_lo = s->icr_lo;
	l->icr_hi = s->icr_hi;
	l->tmict = s->tmict;
	l->tdcr = s->tdcr;
	memcpy(l->lvt, s->lvt, sizeof(l->lvt));
	memcpy(l->irr, s->irr, sizeof(l->irr));
	memcpy(l->isr, s->isr, sizeof(l->isr));
	memcpy(l->tmr, s->tmr, sizeof(l->tmr));
	atomic_store(&l->events, s->events);
	atomic_store(&l->sipi_vector, s->sipi_vector);
	l->timer_start_ns = s->timer_start_ns;
	l->period_ns = s->period_ns;
	atomic_store(&l->timer_next_ns, s->timer_next_ns);
	update(l);
	pthread_mutex_unlock(&l->lock);
	return 0;
}
