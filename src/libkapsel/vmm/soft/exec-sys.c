/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's system instructions (SDM vol. 2 and vol. 3): HLT, the descriptor-table and
 * control-register instructions, MSRs, SYSCALL/SYSRET, CPUID, RDTSC and the cache and fence
 * instructions. Each checks the privilege it needs; what is missing raises #UD (exec.c's
 * dispatch table names these handlers).
 */
#include "vmm/soft/exec.h"
#include "vmm/vmm.h"

static void need_cpl0(struct kap_soft_cpu *cpu)
{
	if (cpu->cpl != 0)
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
}

void kap_soft_sys_hlt(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	(void)d;
	need_cpl0(cpu);
	cpu->halted = true;
	cpu->stop_block = true;
}

/* 0F 00: SLDT STR LLDT LTR VERR VERW. */
void kap_soft_sys_grp6(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int op = d->reg & 7;
	if (!(cpu->cr0 & KAP_SOFT_CR0_PE))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	switch (op) {
	case 0:
		set_rm(cpu, d, d->mod == 3 ? d->osize : 2, cpu->ldtr.sel);
		return;
	case 1:
		set_rm(cpu, d, d->mod == 3 ? d->osize : 2, cpu->tr.sel);
		return;
	case 2:
	case 3: {
		need_cpl0(cpu);
		uint16_t sel = (uint16_t)get_rm(cpu, d, 2);
		struct kap_soft_seg *s = op == 2 ? &cpu->ldtr : &cpu->tr;
		if ((sel & ~3u) == 0 && op == 2) {
			*s = (struct kap_soft_seg){.sel = sel};
			return;
		}
		if ((sel & 4) || (uint64_t)(sel & ~7u) + 7 > cpu->gdt_limit)
			kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true);
		uint64_t a = cpu->gdt_base + (sel & ~7u);
		uint64_t lo = kap_soft_read_lin(cpu, a, 8);
		unsigned int type = (lo >> 40) & 0xf;
		if ((lo >> 44) & 1 || (op == 2 ? type != 2 : (type != 9 && type != 1)))
			kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true);
		if (!((lo >> 47) & 1))
			kap_soft_raise(cpu, KAP_SOFT_XNP, sel & 0xfffc, true);
		uint32_t limit = (uint32_t)((lo & 0xffff) | ((lo >> 32) & 0xf0000));
		s->sel = sel;
		s->base = ((lo >> 16) & 0xffffff) | (((lo >> 56) & 0xff) << 24);
		if (cpu->efer & KAP_SOFT_EFER_LMA)
			s->base |= (kap_soft_read_lin(cpu, a + 8, 8) & 0xffffffffULL) << 32;
		s->g = (lo >> 55) & 1;
		s->limit = s->g ? (limit << 12) | 0xfff : limit;
		s->present = true;
		s->type = (uint8_t)type;
		if (op == 3) {
			s->type |= 2; /* busy */
			kap_soft_write_lin(cpu, a + 5, 1, ((lo >> 40) & 0xff) | 2);
		}
		return;
	}
	case 4:
	case 5: {
		/*
		 * VERR, VERW: ZF when the selector names a segment readable (writable) at this CPL
		 * and RPL (SDM vol. 2, VERR/VERW). Linux runs VERW on every return to user mode
		 * to clear CPU buffers (MDS).
		 */
		uint16_t sel = (uint16_t)get_rm(cpu, d, 2);
		bool ok = false;
		uint64_t base = (sel & 4) ? cpu->ldtr.base : cpu->gdt_base;
		uint64_t limit = (sel & 4) ? cpu->ldtr.limit : cpu->gdt_limit;
		if ((sel & ~3u) && (uint64_t)(sel & ~7u) + 7 <= limit) {
			uint64_t lo = kap_soft_read_lin(cpu, base + (sel & ~7u), 8);
			unsigned int type = (lo >> 40) & 0xf, dpl = (lo >> 45) & 3;
			bool s = (lo >> 44) & 1, code = type & 8, conforming = code && (type & 4);
			unsigned int need = cpu->cpl > (sel & 3u) ? cpu->cpl : (sel & 3u);
			bool priv = conforming || dpl >= need;
			if (s && priv)
				ok = op == 4 ? (!code || (type & 2)) : (!code && (type & 2));
		}
		uint64_t f = kap_soft_get_flags(cpu);
		kap_soft_set_flags(cpu, ok ? f | KAP_SOFT_ZF : f & ~KAP_SOFT_ZF);
		return;
	}
	default:
		kap_soft_unimplemented(cpu, d);
	}
}

/* 0F 01: SGDT SIDT LGDT LIDT SMSW LMSW INVLPG; mod 3: XGETBV, SWAPGS... */
void kap_soft_sys_grp7(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int op = d->reg & 7;
	if (d->mod == 3) {
		unsigned int sub = (op << 3) | (d->rm & 7);
		if (sub == 0x38 && cpu->mode == 8) { /* 0F 01 F8 SWAPGS */
			need_cpl0(cpu);
			uint64_t t = cpu->seg[KAP_SOFT_GS].base;
			cpu->seg[KAP_SOFT_GS].base = cpu->kernel_gs_base;
			cpu->kernel_gs_base = t;
			return;
		}
		if (op == 4) { /* SMSW to a register */
			set_reg(cpu, d, d->rm, d->osize, cpu->cr0 & mask_of(d->osize));
			return;
		}
		if (op == 6) { /* LMSW from a register */
			need_cpl0(cpu);
			uint64_t v = get_reg(cpu, d, d->rm, 2);
			cpu->cr0 = (cpu->cr0 & ~0xeULL) | (v & 0xf) | (cpu->cr0 & 1);
			kap_soft_update_mode(cpu);
			return;
		}
		/*
		 * XGETBV (0F 01 D0) with CR4.OSXSAVE clear is #UD on every CPU (SDM vol. 2,
		 * XGETBV), and the soft CPU has no XSAVE: the same answer, not an omission.
		 */
		if (sub == 0x10)
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		kap_soft_unimplemented(cpu, d);
	}
	unsigned int seg = ea_seg(d);
	uint64_t off = ea(cpu, d);
	unsigned int bn = cpu->mode == 8 ? 8 : 4;
	switch (op) {
	case 0:
	case 1:
		kap_soft_write(cpu, seg, off, 2, op == 0 ? cpu->gdt_limit : cpu->idt_limit);
		kap_soft_write(cpu, seg, off + 2, bn, op == 0 ? cpu->gdt_base : cpu->idt_base);
		return;
	case 2:
	case 3: {
		need_cpl0(cpu);
		uint16_t limit = (uint16_t)kap_soft_read(cpu, seg, off, 2);
		uint64_t base = kap_soft_read(cpu, seg, off + 2, bn);
		if (cpu->mode != 8 && d->osize == 2)
			base &= 0xffffff;
		if (op == 2) {
			cpu->gdt_limit = limit;
			cpu->gdt_base = base;
		} else {
			cpu->idt_limit = limit;
			cpu->idt_base = base;
		}
		return;
	}
	case 4:
		kap_soft_write(cpu, seg, off, 2, cpu->cr0 & 0xffff);
		return;
	case 6: {
		need_cpl0(cpu);
		uint64_t v = kap_soft_read(cpu, seg, off, 2);
		cpu->cr0 = (cpu->cr0 & ~0xeULL) | (v & 0xf) | (cpu->cr0 & 1);
		kap_soft_update_mode(cpu);
		return;
	}
	case 7:
		need_cpl0(cpu);
		kap_soft_invlpg(cpu, seg, off);
		return;
	default:
		kap_soft_unimplemented(cpu, d);
	}
}

/* 0F 20/22 MOV from/to CR0, CR2, CR3, CR4, CR8; 0F 21/23 debug registers (kept, no effect). */
void kap_soft_sys_mov_cr(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	need_cpl0(cpu);
	unsigned int n = cpu->mode == 8 ? 8 : 4, cr = d->reg;
	if ((d->op & 0xff) == 0x21 || (d->op & 0xff) == 0x23) {
		if ((d->op & 0xff) == 0x21)
			set_reg(cpu, d, d->rm, n, cr == 6 ? 0xffff0ff0 : cr == 7 ? 0x400 : 0);
		return;
	}
	if ((d->op & 0xff) == 0x20) {
		uint64_t v;
		switch (cr) {
		case 0:
			v = cpu->cr0;
			break;
		case 2:
			v = cpu->cr2;
			break;
		case 3:
			v = cpu->cr3;
			break;
		case 4:
			v = cpu->cr4;
			break;
		case 8:
			v = cpu->cr8;
			break;
		default:
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		}
		set_reg(cpu, d, d->rm, n, v);
		return;
	}
	uint64_t v = get_reg(cpu, d, d->rm, n);
	switch (cr) {
	case 0: {
		/* PG without PE, or NW without CD: #GP (SDM vol. 3 §2.5). */
		if (((v & KAP_SOFT_CR0_PG) && !(v & KAP_SOFT_CR0_PE)) ||
		    ((v & (1ULL << 29)) && !(v & (1ULL << 30))) || (v >> 32))
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
		bool pg_on = (v & KAP_SOFT_CR0_PG) && !(cpu->cr0 & KAP_SOFT_CR0_PG);
		bool pg_off = !(v & KAP_SOFT_CR0_PG) && (cpu->cr0 & KAP_SOFT_CR0_PG);
		if (pg_on && (cpu->efer & KAP_SOFT_EFER_LME)) {
			if (!(cpu->cr4 & KAP_SOFT_CR4_PAE))
				kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
			cpu->efer |= KAP_SOFT_EFER_LMA; /* IA-32e mode activates (§9.8.5) */
		}
		if (pg_off) {
			if (cpu->mode == 8)
				kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
			cpu->efer &= ~KAP_SOFT_EFER_LMA;
		}
		cpu->cr0 = v | 0x10; /* ET is fixed to 1 */
		kap_soft_update_mode(cpu);
		kap_soft_flush_tlb(cpu);
		cpu->stop_block = true;
		return;
	}
	case 2:
		cpu->cr2 = v;
		return;
	case 3:
		cpu->cr3 = v;
		kap_soft_flush_tlb_cr3(cpu);
		cpu->stop_block = true;
		return;
	case 4:
		/* What the soft CPU has: VME..PGE, OSFXSR, OSXMMEXCPT; PAE can't drop in long mode.
		 */
		if ((v & ~0x1ffULL & ~(1ULL << 9) & ~(1ULL << 10)) ||
		    ((cpu->efer & KAP_SOFT_EFER_LMA) && !(v & KAP_SOFT_CR4_PAE)))
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
		cpu->cr4 = v;
		kap_soft_flush_tlb(cpu);
		cpu->stop_block = true;
		return;
	case 8:
		cpu->cr8 = v & 0xf;
		return;
	default:
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	}
}

/* A flat 64-bit code or data segment as SYSCALL/SYSRET load them (SDM vol. 2, SYSCALL). */
static struct kap_soft_seg flat(uint16_t sel, bool code, unsigned int dpl, bool l)
{
	return (struct kap_soft_seg){.sel = sel,
				     .limit = 0xffffffff,
				     .type = code ? 0xb : 0x3,
				     .dpl = (uint8_t)dpl,
				     .present = true,
				     .s = true,
				     .db = !l,
				     .l = l,
				     .g = true};
}

/* 0F 05 SYSCALL and 0F 07 SYSRET, in 64-bit mode with EFER.SCE (Intel's rules). */
void kap_soft_sys_syscall(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (cpu->mode != 8 || !(cpu->efer & 1))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	uint64_t f = kap_soft_get_flags(cpu);
	if (d->op == OP0F(0x05)) {
		uint16_t cs = (uint16_t)((cpu->star >> 32) & 0xfffc);
		cpu->r[1] = cpu->next_rip;
		cpu->r[11] = f & ~(1ULL << 16); /* RF reads as 0 */
		cpu->seg[KAP_SOFT_CS] = flat(cs, true, 0, true);
		cpu->seg[KAP_SOFT_SS] = flat((uint16_t)(cs + 8), false, 0, false);
		cpu->cpl = 0;
		kap_soft_set_flags(cpu, f & ~cpu->fmask & ~(1ULL << 16));
		cpu->next_rip = cpu->lstar;
	} else {
		if (cpu->cpl != 0)
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
		bool to64 = d->rex & 8;
		uint64_t rip = to64 ? cpu->r[1] : cpu->r[1] & 0xffffffffULL;
		if ((uint64_t)((int64_t)(rip << 16) >> 16) != rip)
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true); /* non-canonical RCX */
		uint16_t base = (uint16_t)(cpu->star >> 48);
		uint16_t cs = (uint16_t)((to64 ? base + 16 : base) | 3);
		cpu->seg[KAP_SOFT_CS] = flat(cs, true, 3, to64);
		cpu->seg[KAP_SOFT_SS] = flat((uint16_t)((base + 8) | 3), false, 3, false);
		cpu->cpl = 3;
		kap_soft_set_flags(cpu, (cpu->r[11] & 0x3c7fd7) | 2);
		cpu->next_rip = rip;
	}
	kap_soft_update_mode(cpu);
	cpu->stop_block = true;
}

void kap_soft_sys_msr(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	need_cpl0(cpu);
	uint32_t idx = (uint32_t)cpu->r[1];
	if (d->op == OP0F(0x32)) {
		uint64_t v;
		if (!kap_soft_rdmsr(cpu, idx, &v))
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
		set_reg(cpu, d, 0, 4, v);
		set_reg(cpu, d, 2, 4, v >> 32);
		return;
	}
	uint64_t v = (cpu->r[0] & 0xffffffffULL) | (cpu->r[2] << 32);
	if (!kap_soft_wrmsr(cpu, idx, v))
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
	kap_soft_update_mode(cpu);
}

void kap_soft_sys_rdtsc(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if ((cpu->cr4 & (1ULL << 2)) && cpu->cpl != 0) /* CR4.TSD */
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
	uint64_t t = kap_soft_rdtsc(cpu);
	set_reg(cpu, d, 0, 4, t);
	set_reg(cpu, d, 2, 4, t >> 32);
}

void kap_soft_sys_cpuid(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	uint32_t out[4];
	kap_soft_cpuid(cpu, (uint32_t)cpu->r[0], (uint32_t)cpu->r[1], out);
	set_reg(cpu, d, 0, 4, out[0]);
	set_reg(cpu, d, 3, 4, out[1]);
	set_reg(cpu, d, 1, 4, out[2]);
	set_reg(cpu, d, 2, 4, out[3]);
}

void kap_soft_sys_clts(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	(void)d;
	need_cpl0(cpu);
	cpu->cr0 &= ~(1ULL << 3);
}

void kap_soft_sys_cache(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	(void)d;
	need_cpl0(cpu); /* INVD, WBINVD: nothing is cached */
}

/*
 * 0F AE: the fences (mod 3, /5 /6 /7), FXSAVE FXRSTOR LDMXCSR STMXCSR (exec-sse.c) and
 * CLFLUSH (/7: nothing is cached). XSAVE and friends (/4 /5 /6) are not in the baseline.
 */
void kap_soft_sys_grp15(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	bool pfx = d->pfx & (KAP_SOFT_PFX_REP | KAP_SOFT_PFX_REPNE | KAP_SOFT_PFX_OPSIZE);
	if (d->mod == 3 && (d->reg & 7) >= 5 && !pfx) {
		/* LFENCE, MFENCE, SFENCE: the host is TSO like the guest, so only MFENCE (a store
		 * then a load) needs a host fence; the others order against the compiler. */
		if ((d->reg & 7) == 6)
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
		else
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
		return;
	}
	if (d->mod != 3 && (d->reg & 7) < 4) {
		kap_soft_fxsave_grp(cpu, d);
		return;
	}
	if (d->mod != 3 && (d->reg & 7) == 7 && !pfx)
		return;
	kap_soft_unimplemented(cpu, d);
}

/*
 * 0F 02 LAR, 0F 03 LSL (SDM vol. 2, LAR, LSL): the access rights or the limit of the
 * descriptor a selector names, with ZF set; ZF clear and the destination untouched when the
 * selector is null, beyond its table, of a system type the instruction does not take, or not
 * visible at max(CPL, RPL) (conforming code always is). #UD outside protected mode.
 */
void kap_soft_sys_lar_lsl(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (!(cpu->cr0 & KAP_SOFT_CR0_PE) || (cpu->flags & (1ULL << 17)))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	bool lsl = (d->op & 0xff) == 0x03, ia32e = cpu->efer & KAP_SOFT_EFER_LMA;
	uint16_t sel = (uint16_t)get_rm(cpu, d, 2);
	uint64_t base = (sel & 4) ? cpu->ldtr.base : cpu->gdt_base;
	uint64_t limit = (sel & 4) ? cpu->ldtr.limit : cpu->gdt_limit;
	uint64_t f = kap_soft_get_flags(cpu) & ~KAP_SOFT_ZF;
	bool ok = false;
	uint64_t lo = 0;
	if ((sel & ~3u) && (uint64_t)(sel & ~7u) + 7 <= limit) {
		lo = kap_soft_read_lin(cpu, base + (sel & ~7u), 8);
		unsigned int type = (lo >> 40) & 0xf, dpl = (lo >> 45) & 3;
		bool s = (lo >> 44) & 1;
		if (s) {
			ok = true;
		} else if (ia32e) {
			/* LDT, 64-bit TSS (available, busy) and, for LAR, a 64-bit call gate; the
			 * descriptor is 16 bytes, its upper half with a zero type field. */
			ok = type == 2 || type == 9 || type == 0xb || (!lsl && type == 0xc);
			if (ok && (uint64_t)(sel & ~7u) + 15 > limit)
				ok = false;
			if (ok &&
			    ((kap_soft_read_lin(cpu, base + (sel & ~7u) + 8, 8) >> 40) & 0x1f))
				ok = false;
		} else {
			/* TSSs and the LDT; for LAR also call and task gates. */
			ok = type == 1 || type == 2 || type == 3 || type == 9 || type == 0xb ||
			     (!lsl && (type == 4 || type == 5 || type == 0xc));
		}
		bool conforming = s && (type & 0xc) == 0xc;
		if (ok && !conforming && (cpu->cpl > dpl || (sel & 3u) > dpl))
			ok = false;
	}
	if (ok) {
		uint64_t v;
		if (lsl) {
			v = (lo & 0xffff) | ((lo >> 32) & 0xf0000);
			if ((lo >> 55) & 1)
				v = (v << 12) | 0xfff;
		} else {
			v = (lo >> 32) & (d->osize == 2 ? 0xff00 : 0x00f0ff00);
		}
		set_reg(cpu, d, d->reg, d->osize, v & mask_of(d->osize));
		f |= KAP_SOFT_ZF;
	}
	kap_soft_set_flags(cpu, f);
}

/*
 * C4 LES, C5 LDS, 0F B2 LSS, 0F B4 LFS, 0F B5 LGS: a far pointer from memory, the offset (of
 * the operand size: m16:16, m16:32, with REX.W m16:64 as Intel's CPUs take it) then the
 * selector. The segment is loaded (and checked) before the register is written, so a fault
 * leaves both as they were. A register operand is #UD.
 */
void kap_soft_sys_lfp(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (d->mod == 3)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	unsigned int s;
	switch (d->op & 0xff) {
	case 0xc4:
		s = KAP_SOFT_ES;
		break;
	case 0xc5:
		s = KAP_SOFT_DS;
		break;
	case 0xb2:
		s = KAP_SOFT_SS;
		break;
	case 0xb4:
		s = KAP_SOFT_FS;
		break;
	default:
		s = KAP_SOFT_GS;
		break;
	}
	unsigned int n = d->osize, seg = ea_seg(d);
	uint64_t off = ea(cpu, d);
	uint64_t v = kap_soft_read(cpu, seg, off, n);
	uint16_t sel = (uint16_t)kap_soft_read(cpu, seg, (off + n) & mask_of(d->asize), 2);
	kap_soft_load_seg(cpu, s, sel);
	set_reg(cpu, d, d->reg, n, v);
}
