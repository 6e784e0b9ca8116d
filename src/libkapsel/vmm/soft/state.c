/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft path's machine state for snapshots and migration (snapshot.c writes and checks the
 * file around it; docs/vm.md, "Snapshot format", lists the sections), and its guest clock.
 *
 * The guest clock. Every time the soft path keeps (the TSC, the local APIC timers, the PIT)
 * is read through kap_soft_now_ns: host CLOCK_MONOTONIC less an offset. A pause records the
 * guest time it stopped at and a resume moves the offset so that the guest time goes on from
 * there, so none of them sees the pause (what KVM_SET_CLOCK and the TSC write do on the KVM
 * path, pause.c). A restore or an incoming migration sets the offset from the time the state
 * was taken at, so the timers and the TSC, saved raw, mean the same as before. One VM per
 * process: the offset is the process's.
 *
 * The vCPU state is taken at a block boundary (the vCPU is parked, pause.c): no instruction
 * is half done, no LOCK'd operation in progress, no exception being delivered. The lazy
 * flags are worked out into RFLAGS. Translated blocks and the TLB are not state: a restored
 * vCPU starts with both empty, as after a flush. Every field the CPU indexes by, shifts by or
 * relies on being consistent is checked on load, and a state the architecture cannot reach
 * (long mode without paging, a 64-bit CS outside long mode, a CPL above 3, reserved MXCSR
 * bits) is refused by name before anything is applied.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "vmm/soft/irq.h"
#include "vmm/soft/soft.h"
#include "vmm/soft/state.h"
#include "vmm/vmm.h"

/* ---- the guest clock ---- */

static _Atomic int64_t clock_offset; /* host - guest, ns */
static uint64_t paused_at;	     /* the guest time a pause stopped at */
static bool clock_paused;

static uint64_t host_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t kap_soft_now_ns(void)
{
	return host_ns() - (uint64_t)atomic_load_explicit(&clock_offset, memory_order_relaxed);
}

uint64_t kap_soft_host_ns(uint64_t guest_ns)
{
	return guest_ns + (uint64_t)atomic_load_explicit(&clock_offset, memory_order_relaxed);
}

void kap_soft_clock_pause(void)
{
	if (clock_paused)
		return;
	paused_at = kap_soft_now_ns();
	clock_paused = true;
}

static void clock_set(uint64_t guest_now)
{
	atomic_store(&clock_offset, (int64_t)(host_ns() - guest_now));
}

void kap_soft_clock_resume(void)
{
	if (!clock_paused)
		return;
	clock_set(paused_at);
	clock_paused = false;
}

/* ---- the sections ---- */

/* A segment register with its descriptor cache. */
struct soft_seg_state {
	uint64_t base;
	uint32_t limit;
	uint16_t sel;
	uint8_t type, dpl, present, s, db, l, g, pad[3];
};
_Static_assert(sizeof(struct soft_seg_state) == 24, "soft segment state layout");

enum {
	ST_HALTED = 1u << 0,
	ST_WAIT_SIPI = 1u << 1,
	ST_NMI_BLOCKED = 1u << 2,
	ST_NMI_PENDING = 1u << 3,
	ST_INT_SHADOW = 1u << 4,
};

/* SEC_SOFT_CPU: one vCPU's registers (RFLAGS with the lazy flags worked out). */
struct soft_cpu_state {
	uint64_t r[16]; /* by encoding: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15 */
	uint64_t rip, rflags;
	struct soft_seg_state seg[6], ldtr, tr; /* ES, CS, SS, DS, FS, GS */
	uint64_t gdt_base, idt_base;
	uint16_t gdt_limit, idt_limit, fcs, fds;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer;
	uint64_t star, lstar, cstar, fmask, kernel_gs_base, sysenter_cs, sysenter_esp, sysenter_eip,
	    pat, apic_base, misc_enable, mtrr_def_type;
	int64_t tsc_offset;
	uint32_t cpl, flags; /* ST_* */
};
_Static_assert(sizeof(struct soft_cpu_state) == 520, "soft vCPU state layout");

static void seg_save(struct soft_seg_state *o, const struct kap_soft_seg *s)
{
	*o = (struct soft_seg_state){.base = s->base,
				     .limit = s->limit,
				     .sel = s->sel,
				     .type = s->type,
				     .dpl = s->dpl,
				     .present = s->present,
				     .s = s->s,
				     .db = s->db,
				     .l = s->l,
				     .g = s->g};
}

static bool seg_ok(const struct soft_seg_state *o)
{
	return o->type < 16 && o->dpl < 4 && o->present < 2 && o->s < 2 && o->db < 2 && o->l < 2 &&
	       o->g < 2;
}

static void seg_load(struct kap_soft_seg *s, const struct soft_seg_state *o)
{
	*s = (struct kap_soft_seg){.base = o->base,
				   .limit = o->limit,
				   .sel = o->sel,
				   .type = o->type,
				   .dpl = o->dpl,
				   .present = o->present,
				   .s = o->s,
				   .db = o->db,
				   .l = o->l,
				   .g = o->g};
}

static void cpu_save(struct kap_soft_cpu *cpu, struct soft_cpu_state *o)
{
	*o = (struct soft_cpu_state){0};
	memcpy(o->r, cpu->r, sizeof(o->r));
	o->rip = cpu->rip;
	o->rflags = kap_soft_get_flags(cpu);
	for (int i = 0; i < 6; i++)
		seg_save(&o->seg[i], &cpu->seg[i]);
	seg_save(&o->ldtr, &cpu->ldtr);
	seg_save(&o->tr, &cpu->tr);
	o->gdt_base = cpu->gdt_base;
	o->idt_base = cpu->idt_base;
	o->gdt_limit = cpu->gdt_limit;
	o->idt_limit = cpu->idt_limit;
	o->fcs = cpu->fcs;
	o->fds = cpu->fds;
	o->cr0 = cpu->cr0;
	o->cr2 = cpu->cr2;
	o->cr3 = cpu->cr3;
	o->cr4 = cpu->cr4;
	o->cr8 = cpu->cr8;
	o->efer = cpu->efer;
	o->star = cpu->star;
	o->lstar = cpu->lstar;
	o->cstar = cpu->cstar;
	o->fmask = cpu->fmask;
	o->kernel_gs_base = cpu->kernel_gs_base;
	o->sysenter_cs = cpu->sysenter_cs;
	o->sysenter_esp = cpu->sysenter_esp;
	o->sysenter_eip = cpu->sysenter_eip;
	o->pat = cpu->pat;
	o->apic_base = cpu->apic_base;
	o->misc_enable = cpu->misc_enable;
	o->mtrr_def_type = cpu->mtrr_def_type;
	o->tsc_offset = cpu->tsc_offset;
	o->cpl = cpu->cpl;
	o->flags = (cpu->halted ? ST_HALTED : 0) | (cpu->wait_sipi ? ST_WAIT_SIPI : 0) |
		   (cpu->nmi_blocked ? ST_NMI_BLOCKED : 0) |
		   (cpu->nmi_pending ? ST_NMI_PENDING : 0) | (cpu->int_shadow ? ST_INT_SHADOW : 0);
}

static bool canonical(uint64_t a)
{
	return (uint64_t)((int64_t)(a << 16) >> 16) == a;
}

/* Why o cannot be a vCPU's state, or NULL. */
static const char *cpu_check(const struct soft_cpu_state *o)
{
	for (int i = 0; i < 6; i++)
		if (!seg_ok(&o->seg[i]))
			return "a segment register's descriptor cache is out of range";
	if (!seg_ok(&o->ldtr) || !seg_ok(&o->tr))
		return "LDTR or TR is out of range";
	if (o->cpl > 3)
		return "CPL above 3";
	if (o->flags &
	    ~(uint32_t)(ST_HALTED | ST_WAIT_SIPI | ST_NMI_BLOCKED | ST_NMI_PENDING | ST_INT_SHADOW))
		return "unknown state flags";
	bool pe = o->cr0 & KAP_SOFT_CR0_PE, pg = o->cr0 & KAP_SOFT_CR0_PG;
	bool lma = o->efer & KAP_SOFT_EFER_LMA;
	if ((o->cr0 >> 32) || (pg && !pe))
		return "CR0 is not one a CPU can hold (PG without PE, or bits above 31)";
	if (lma && (!pg || !(o->cr4 & KAP_SOFT_CR4_PAE) || !(o->efer & KAP_SOFT_EFER_LME)))
		return "EFER.LMA without paging, PAE and LME";
	if (o->efer & ~0xd01ULL) /* SCE, LME, LMA, NXE */
		return "EFER has bits the soft CPU does not have";
	if (o->seg[1].l && !lma && pe)
		return "a 64-bit CS outside long mode";
	if (!canonical(o->rip) || ((!lma || !o->seg[1].l) && o->rip >> 32))
		return "RIP out of range for the code size";
	if (o->cr8 > 15)
		return "CR8 above 15";
	return NULL;
}

static void cpu_load(struct kap_soft_cpu *cpu, const struct soft_cpu_state *o)
{
	memcpy(cpu->r, o->r, sizeof(cpu->r));
	cpu->rip = cpu->next_rip = o->rip;
	kap_soft_set_flags(cpu, o->rflags);
	for (int i = 0; i < 6; i++)
		seg_load(&cpu->seg[i], &o->seg[i]);
	seg_load(&cpu->ldtr, &o->ldtr);
	seg_load(&cpu->tr, &o->tr);
	cpu->gdt_base = o->gdt_base;
	cpu->idt_base = o->idt_base;
	cpu->gdt_limit = o->gdt_limit;
	cpu->idt_limit = o->idt_limit;
	cpu->fcs = o->fcs;
	cpu->fds = o->fds;
	cpu->cr0 = o->cr0;
	cpu->cr2 = o->cr2;
	cpu->cr3 = o->cr3;
	cpu->cr4 = o->cr4;
	cpu->cr8 = o->cr8;
	cpu->efer = o->efer;
	cpu->star = o->star;
	cpu->lstar = o->lstar;
	cpu->cstar = o->cstar;
	cpu->fmask = o->fmask;
	cpu->kernel_gs_base = o->kernel_gs_base;
	cpu->sysenter_cs = o->sysenter_cs;
	cpu->sysenter_esp = o->sysenter_esp;
	cpu->sysenter_eip = o->sysenter_eip;
	cpu->pat = o->pat;
	cpu->apic_base = o->apic_base;
	cpu->misc_enable = o->misc_enable;
	cpu->mtrr_def_type = o->mtrr_def_type;
	cpu->tsc_offset = o->tsc_offset;
	cpu->halted = o->flags & ST_HALTED;
	cpu->wait_sipi = o->flags & ST_WAIT_SIPI;
	cpu->nmi_blocked = o->flags & ST_NMI_BLOCKED;
	cpu->nmi_pending = o->flags & ST_NMI_PENDING;
	cpu->int_shadow = o->flags & ST_INT_SHADOW;
	cpu->delivering = -1;
	cpu->lk.state = KAP_SOFT_LK_OFF;
	kap_soft_update_mode(cpu);
	cpu->cpl = o->cpl; /* as saved: a CPL the selector's RPL does not say (after SYSRET) */
	kap_soft_flush_tlb(cpu);
}

int kap_soft_state_save(struct kap_vm *vm, kap_soft_put_fn put, void *ctx,
			struct kapsel_error **err)
{
	(void)err;
	uint64_t now = clock_paused ? paused_at : kap_soft_now_ns();
	put(ctx, KAP_SOFT_SEC_CLOCK, 0, &now, sizeof(now));
	struct kap_soft_pic_state pic;
	struct kap_soft_ioapic_state io;
	kap_soft_pic_save(vm->soft_pic, &pic);
	kap_soft_ioapic_save(vm->soft_ioapic, &io);
	put(ctx, KAP_SOFT_SEC_PIC, 0, &pic, sizeof(pic));
	put(ctx, KAP_SOFT_SEC_IOAPIC, 0, &io, sizeof(io));
	if (vm->soft_pit) {
		struct kap_soft_pit_state pit;
		kap_soft_pit_save(vm->soft_pit, &pit);
		put(ctx, KAP_SOFT_SEC_PIT, 0, &pit, sizeof(pit));
	}
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct kap_soft_cpu *cpu = vm->vcpus[i].soft;
		struct soft_cpu_state cs;
		struct kap_soft_lapic_state ls;
		cpu_save(cpu, &cs);
		kap_soft_lapic_save(cpu->lapic, &ls);
		put(ctx, KAP_SOFT_SEC_CPU, i, &cs, sizeof(cs));
		put(ctx, KAP_SOFT_SEC_FXSAVE, i, &cpu->fpu, sizeof(cpu->fpu));
		put(ctx, KAP_SOFT_SEC_LAPIC, i, &ls, sizeof(ls));
	}
	return 0;
}

/* Copies section (type, index) of exactly len bytes into out, or says which is wrong. */
static int need(kap_soft_get_fn get, const void *ctx, const char *what, uint32_t type,
		const char *name, uint32_t index, void *out, size_t len, struct kapsel_error **err)
{
	uint64_t l;
	const void *p = get(ctx, type, index, &l);
	if (!p || l != len)
		return kap_error_plain(
		    err, EINVAL, "%s: soft section %s %u %s (%" PRIu64 " bytes, expected %zu)",
		    what, name, index, p ? "of the wrong size" : "missing", p ? l : 0, len);
	memcpy(out, p, len);
	return 0;
}

int kap_soft_state_load(struct kap_vm *vm, kap_soft_get_fn get, const void *ctx, const char *what,
			struct kapsel_error **err)
{
	unsigned int n = vm->ncpus;
	uint64_t now;
	struct kap_soft_pic_state pic;
	struct kap_soft_ioapic_state io;
	struct kap_soft_pit_state pit;
	struct soft_cpu_state *cs = calloc(n, sizeof(*cs));
	struct kap_soft_fxsave *fx = aligned_alloc(16, n * sizeof(*fx));
	struct kap_soft_lapic_state *ls = calloc(n, sizeof(*ls));
	int r = 0;
	const char *why = NULL;
	uint64_t l;
	if (!cs || !fx || !ls) {
		r = kap_error(err, ENOMEM, "%s: soft state", what);
		goto out;
	}
	/* Everything is read and checked before any of it is applied. */
	if ((r = need(get, ctx, what, KAP_SOFT_SEC_CLOCK, "CLOCK", 0, &now, sizeof(now), err)) <
		0 ||
	    (r = need(get, ctx, what, KAP_SOFT_SEC_PIC, "PIC", 0, &pic, sizeof(pic), err)) < 0 ||
	    (r = need(get, ctx, what, KAP_SOFT_SEC_IOAPIC, "IOAPIC", 0, &io, sizeof(io), err)) < 0)
		goto out;
	if (vm->soft_pit &&
	    (r = need(get, ctx, what, KAP_SOFT_SEC_PIT, "PIT", 0, &pit, sizeof(pit), err)) < 0)
		goto out;
	if (!vm->soft_pit && get(ctx, KAP_SOFT_SEC_PIT, 0, &l)) {
		r = kap_error_plain(err, EINVAL, "%s: a PIT section, but this VM has --no-pit",
				    what);
		goto out;
	}
	if (get(ctx, KAP_SOFT_SEC_CPU, n, &l)) {
		r = kap_error_plain(err, EINVAL, "%s: more soft vCPU sections than vCPUs (%u)",
				    what, n);
		goto out;
	}
	for (unsigned int i = 0; i < n; i++) {
		if ((r = need(get, ctx, what, KAP_SOFT_SEC_CPU, "CPU", i, &cs[i], sizeof(cs[i]),
			      err)) < 0 ||
		    (r = need(get, ctx, what, KAP_SOFT_SEC_FXSAVE, "FXSAVE", i, &fx[i],
			      sizeof(fx[i]), err)) < 0 ||
		    (r = need(get, ctx, what, KAP_SOFT_SEC_LAPIC, "LAPIC", i, &ls[i], sizeof(ls[i]),
			      err)) < 0)
			goto out;
		if ((why = cpu_check(&cs[i]))) {
			r = kap_error_plain(err, EINVAL, "%s: soft section CPU %u: %s", what, i,
					    why);
			goto out;
		}
		/* LDMXCSR and FXRSTOR #GP on these: a CPU cannot hold them. */
		if (fx[i].mxcsr & ~0xffffu) {
			r = kap_error_plain(err, EINVAL,
					    "%s: soft section FXSAVE %u: reserved MXCSR bits set",
					    what, i);
			goto out;
		}
	}
	/* The controllers check their own fields; a refusal changes none of them. */
	struct kap_soft_pic_state pic0;
	struct kap_soft_ioapic_state io0;
	kap_soft_pic_save(vm->soft_pic, &pic0);
	kap_soft_ioapic_save(vm->soft_ioapic, &io0);
	if (kap_soft_pic_load(vm->soft_pic, &pic, &why) < 0 ||
	    kap_soft_ioapic_load(vm->soft_ioapic, &io, &why) < 0 ||
	    (vm->soft_pit && kap_soft_pit_load(vm->soft_pit, &pit, &why) < 0)) {
		kap_soft_pic_load(vm->soft_pic, &pic0, &why);
		kap_soft_ioapic_load(vm->soft_ioapic, &io0, &why);
		r = kap_error_plain(err, EINVAL, "%s: %s", what, why);
		goto out;
	}
	for (unsigned int i = 0; i < n; i++) {
		if (kap_soft_lapic_load(vm->vcpus[i].soft->lapic, &ls[i], &why) < 0) {
			r = kap_error_plain(err, EINVAL, "%s: vCPU %u: %s", what, i, why);
			goto out;
		}
	}
	for (unsigned int i = 0; i < n; i++) {
		struct kap_soft_cpu *cpu = vm->vcpus[i].soft;
		cpu_load(cpu, &cs[i]);
		cpu->fpu = fx[i];
	}
	/* The timers and the TSC go on from the time the state was taken at. */
	clock_set(now);
	clock_paused = false;
out:
	free(cs);
	free(fx);
	free(ls);
	return r;
}
