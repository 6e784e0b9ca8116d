/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the soft CPU's instructions do (Intel SDM vol. 2): one handler per group of opcodes,
 * chosen once when a block is decoded (kap_soft_exec_lookup) and called through the block's
 * pointer ever after. An opcode with no handler raises #UD in the guest, as a CPU without the
 * instruction would (docs/vm.md lists what the soft CPU has).
 *
 * Flags are lazy: an arithmetic instruction records its operation, operands and result
 * (set_lazy), and CF/PF/AF/ZF/SF/OF are worked out only when something reads them
 * (kap_soft_get_flags, cond); the conditional branches that follow a CMP or TEST, by far the
 * commonest readers, look only at the one or two flags they need.
 */
#include <string.h>

#include "vmm/soft/soft.h"
#include "vmm/vmm.h"

#include "vmm/soft/exec.h"
#include "vmm/soft/jit.h"

/* ---- the stack ---- */

static unsigned int stack_size(struct kap_soft_cpu *cpu)
{
	return cpu->mode == 8 ? 8 : cpu->seg[KAP_SOFT_SS].db ? 4 : 2;
}

static uint64_t sp_get(struct kap_soft_cpu *cpu)
{
	return cpu->r[4] & mask_of(stack_size(cpu));
}

static void sp_set(struct kap_soft_cpu *cpu, uint64_t v)
{
	unsigned int s = stack_size(cpu);
	if (s == 2)
		cpu->r[4] = (cpu->r[4] & ~0xffffULL) | (v & 0xffff);
	else
		cpu->r[4] = v & mask_of(s);
}

static void push(struct kap_soft_cpu *cpu, unsigned int n, uint64_t v)
{
	uint64_t sp = (sp_get(cpu) - n) & mask_of(stack_size(cpu));
	kap_soft_write(cpu, KAP_SOFT_SS, sp, n, v & mask_of(n));
	sp_set(cpu, sp);
}

static uint64_t pop(struct kap_soft_cpu *cpu, unsigned int n)
{
	uint64_t sp = sp_get(cpu);
	uint64_t v = kap_soft_read(cpu, KAP_SOFT_SS, sp, n);
	sp_set(cpu, sp + n);
	return v;
}

/* Stack operations default to 64 bits in 64-bit mode (66 makes them 16). */
static unsigned int stack_osize(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (cpu->mode == 8)
		return d->osize == 2 ? 2 : 8;
	return d->osize;
}

/* ---- flags ---- */

static bool parity(uint64_t v)
{
	return !__builtin_parity((unsigned int)(v & 0xff));
}

static void set_lazy(struct kap_soft_cpu *cpu, enum kap_soft_lf op, unsigned int n, uint64_t a,
		     uint64_t b, uint64_t res)
{
	cpu->lf_op = (uint8_t)op;
	cpu->lf_size = (uint8_t)n;
	cpu->lf_a = a;
	cpu->lf_b = b;
	cpu->lf_res = res;
}

static bool lazy_cf(const struct kap_soft_cpu *cpu)
{
	uint64_t m = mask_of(cpu->lf_size);
	uint64_t a = cpu->lf_a & m, b = cpu->lf_b & m, r = cpu->lf_res & m;
	switch (cpu->lf_op) {
	case KAP_SOFT_LF_ADD:
		return r < a;
	case KAP_SOFT_LF_ADC:
		return cpu->lf_cf ? r <= a : r < a;
	case KAP_SOFT_LF_SUB:
		return a < b;
	case KAP_SOFT_LF_SBB:
		return cpu->lf_cf ? a <= b : a < b;
	case KAP_SOFT_LF_INC:
	case KAP_SOFT_LF_DEC:
		return cpu->lf_cf;
	default:
		return false;
	}
}

static bool lazy_of(const struct kap_soft_cpu *cpu)
{
	uint64_t sb = 1ULL << (8 * cpu->lf_size - 1);
	uint64_t a = cpu->lf_a, b = cpu->lf_b, r = cpu->lf_res;
	switch (cpu->lf_op) {
	case KAP_SOFT_LF_ADD:
	case KAP_SOFT_LF_ADC:
	case KAP_SOFT_LF_INC:
		return ((a ^ r) & (b ^ r) & sb) != 0;
	case KAP_SOFT_LF_SUB:
	case KAP_SOFT_LF_SBB:
	case KAP_SOFT_LF_DEC:
		return ((a ^ b) & (a ^ r) & sb) != 0;
	default:
		return false;
	}
}

uint64_t kap_soft_get_flags(struct kap_soft_cpu *cpu)
{
	if (cpu->lf_op == KAP_SOFT_LF_NONE)
		return cpu->flags;
	if (cpu->lf_op == KAP_SOFT_LF_HOST) {
		cpu->flags = (cpu->flags & ~KAP_SOFT_ARITH) | (cpu->lf_res & KAP_SOFT_ARITH);
		cpu->lf_op = KAP_SOFT_LF_NONE;
		return cpu->flags;
	}
	uint64_t m = mask_of(cpu->lf_size), r = cpu->lf_res & m;
	uint64_t f = cpu->flags & ~KAP_SOFT_ARITH;
	if (lazy_cf(cpu))
		f |= KAP_SOFT_CF;
	if (lazy_of(cpu))
		f |= KAP_SOFT_OF;
	if (parity(r))
		f |= KAP_SOFT_PF;
	if (r == 0)
		f |= KAP_SOFT_ZF;
	if (r >> (8 * cpu->lf_size - 1))
		f |= KAP_SOFT_SF;
	if (cpu->lf_op != KAP_SOFT_LF_LOGIC && ((cpu->lf_a ^ cpu->lf_b ^ cpu->lf_res) & 0x10))
		f |= KAP_SOFT_AF;
	cpu->flags = f;
	cpu->lf_op = KAP_SOFT_LF_NONE;
	return f;
}

void kap_soft_set_flags(struct kap_soft_cpu *cpu, uint64_t flags)
{
	cpu->flags = flags | 2;
	cpu->lf_op = KAP_SOFT_LF_NONE;
}

static bool get_cf(struct kap_soft_cpu *cpu)
{
	if (cpu->lf_op == KAP_SOFT_LF_NONE)
		return cpu->flags & KAP_SOFT_CF;
	if (cpu->lf_op == KAP_SOFT_LF_HOST)
		return cpu->lf_res & KAP_SOFT_CF;
	return lazy_cf(cpu);
}

/* Sets the flags in bits to the values in vals, the others as they are. */
static void put_flags(struct kap_soft_cpu *cpu, uint64_t bits, uint64_t vals)
{
	uint64_t f = kap_soft_get_flags(cpu);
	cpu->flags = (f & ~bits) | (vals & bits);
}

/* The SZP flags of a result, for instructions that set them eagerly (shifts, MUL...). */
static uint64_t szp(uint64_t r, unsigned int n)
{
	r &= mask_of(n);
	return (r == 0 ? KAP_SOFT_ZF : 0) | ((r >> (8 * n - 1)) ? KAP_SOFT_SF : 0) |
	       (parity(r) ? KAP_SOFT_PF : 0);
}

/* Condition code cc (SDM vol. 2 appendix B.1.4.7): the low nibble of Jcc/SETcc/CMOVcc. */
static bool cond(struct kap_soft_cpu *cpu, unsigned int cc)
{
	bool r;
	if (cpu->lf_op == KAP_SOFT_LF_SUB && (cc >> 1) != 5 && (cc >> 1) != 0) {
		/* After CMP/SUB: compare the operands directly. */
		uint64_t m = mask_of(cpu->lf_size);
		uint64_t a = cpu->lf_a & m, b = cpu->lf_b & m;
		int64_t sa = (int64_t)sext(a, cpu->lf_size), sb = (int64_t)sext(b, cpu->lf_size);
		switch (cc >> 1) {
		case 1:
			r = a < b; /* B */
			break;
		case 2:
			r = a == b; /* E */
			break;
		case 3:
			r = a <= b; /* BE */
			break;
		case 4:
			r = ((cpu->lf_res & m) >> (8 * cpu->lf_size - 1)) != 0; /* S */
			break;
		case 6:
			r = sa < sb; /* L */
			break;
		default:
			r = sa <= sb; /* LE */
			break;
		}
		return (cc & 1) ? !r : r;
	}
	if (cpu->lf_op != KAP_SOFT_LF_NONE && cpu->lf_op != KAP_SOFT_LF_HOST &&
	    ((cc >> 1) == 2 || (cc >> 1) == 4)) {
		/* ZF and SF come from the result alone, whatever the operation. */
		uint64_t res = cpu->lf_res & mask_of(cpu->lf_size);
		r = (cc >> 1) == 2 ? res == 0 : (res >> (8 * cpu->lf_size - 1)) != 0;
		return (cc & 1) ? !r : r;
	}
	uint64_t f = kap_soft_get_flags(cpu);
	bool cf = f & KAP_SOFT_CF, zf = f & KAP_SOFT_ZF, sf = f & KAP_SOFT_SF, of = f & KAP_SOFT_OF,
	     pf = f & KAP_SOFT_PF;
	switch (cc >> 1) {
	case 0:
		r = of;
		break;
	case 1:
		r = cf;
		break;
	case 2:
		r = zf;
		break;
	case 3:
		r = cf || zf;
		break;
	case 4:
		r = sf;
		break;
	case 5:
		r = pf;
		break;
	case 6:
		r = sf != of;
		break;
	default:
		r = zf || sf != of;
		break;
	}
	return (cc & 1) ? !r : r;
}

bool kap_soft_cond(struct kap_soft_cpu *cpu, unsigned int cc)
{
	return cond(cpu, cc);
}

/* ---- ALU ---- */

/* ADD OR ADC SBB AND SUB XOR CMP (the /reg order of 80-83). Returns the result. */
static uint64_t alu(struct kap_soft_cpu *cpu, unsigned int op, unsigned int n, uint64_t a,
		    uint64_t b)
{
	uint64_t m = mask_of(n), r;
	a &= m;
	b &= m;
	bool c;
	switch (op) {
	case 0:
		r = (a + b) & m;
		set_lazy(cpu, KAP_SOFT_LF_ADD, n, a, b, r);
		break;
	case 1:
		r = a | b;
		set_lazy(cpu, KAP_SOFT_LF_LOGIC, n, a, b, r);
		break;
	case 2:
		c = get_cf(cpu);
		r = (a + b + c) & m;
		set_lazy(cpu, KAP_SOFT_LF_ADC, n, a, b, r);
		cpu->lf_cf = c;
		break;
	case 3:
		c = get_cf(cpu);
		r = (a - b - c) & m;
		set_lazy(cpu, KAP_SOFT_LF_SBB, n, a, b, r);
		cpu->lf_cf = c;
		break;
	case 4:
		r = a & b;
		set_lazy(cpu, KAP_SOFT_LF_LOGIC, n, a, b, r);
		break;
	case 5:
	case 7:
		r = (a - b) & m;
		set_lazy(cpu, KAP_SOFT_LF_SUB, n, a, b, r);
		break;
	default:
		r = a ^ b;
		set_lazy(cpu, KAP_SOFT_LF_LOGIC, n, a, b, r);
		break;
	}
	return r;
}

/* 00-3D: op Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev / AL,Ib / eAX,Iz. */
static void x_alu(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int op = (d->op >> 3) & 7, form = d->op & 7, n = opsz(d);
	uint64_t r;
	switch (form) {
	case 0:
	case 1:
		r = alu(cpu, op, n, get_rm(cpu, d, n), get_reg(cpu, d, d->reg, n));
		if (op != 7)
			set_rm(cpu, d, n, r);
		break;
	case 2:
	case 3:
		r = alu(cpu, op, n, get_reg(cpu, d, d->reg, n), get_rm(cpu, d, n));
		if (op != 7)
			set_reg(cpu, d, d->reg, n, r);
		break;
	case 4:
		r = alu(cpu, op, 1, cpu->r[0], d->imm);
		if (op != 7)
			set_reg(cpu, d, 0, 1, r);
		break;
	default:
		r = alu(cpu, op, d->osize, cpu->r[0], imm_z(d));
		if (op != 7)
			set_reg(cpu, d, 0, d->osize, r);
		break;
	}
}

/* 80-83: group 1, op Eb/Ev with an immediate. */
static void x_grp1(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = opsz(d), op = d->reg & 7;
	uint64_t imm = d->op == 0x81 ? imm_z(d) : sext(d->imm, 1);
	uint64_t r = alu(cpu, op, n, get_rm(cpu, d, n), imm);
	if (op != 7)
		set_rm(cpu, d, n, r);
}

static void incdec(struct kap_soft_cpu *cpu, unsigned int n, uint64_t a, bool dec, uint64_t *r)
{
	bool c = get_cf(cpu);
	*r = (dec ? a - 1 : a + 1) & mask_of(n);
	set_lazy(cpu, dec ? KAP_SOFT_LF_DEC : KAP_SOFT_LF_INC, n, a, 1, *r);
	cpu->lf_cf = c;
}

/* 40-4F outside 64-bit mode. */
static void x_incdec_reg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int r = d->op & 7;
	uint64_t v;
	incdec(cpu, d->osize, get_reg(cpu, d, r, d->osize), d->op & 8, &v);
	set_reg(cpu, d, r, d->osize, v);
}

/* 84/85 TEST, A8/A9 TEST. */
static void x_test(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = opsz(d);
	uint64_t a, b;
	if (d->op == 0xa8 || d->op == 0xa9) {
		a = get_reg(cpu, d, 0, n);
		b = n == 1 ? d->imm : imm_z(d);
	} else {
		a = get_rm(cpu, d, n);
		b = get_reg(cpu, d, d->reg, n);
	}
	alu(cpu, 4, n, a, b);
}

/* ---- moves ---- */

static void x_mov(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = opsz(d);
	switch (d->op) {
	case 0x88:
	case 0x89:
		set_rm(cpu, d, n, get_reg(cpu, d, d->reg, n));
		break;
	case 0x8a:
	case 0x8b:
		set_reg(cpu, d, d->reg, n, get_rm(cpu, d, n));
		break;
	case 0xc6:
		set_rm(cpu, d, 1, d->imm);
		break;
	case 0xc7:
		set_rm(cpu, d, d->osize, imm_z(d));
		break;
	}
}

/* B0-BF: MOV reg, imm. */
static void x_mov_imm(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int r = (d->op & 7) | ((d->rex & 1) << 3);
	set_reg(cpu, d, r, d->op < 0xb8 ? 1 : d->osize, d->imm);
}

/* A0-A3: MOV AL/eAX to and from moffs. */
static void x_mov_moffs(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = opsz(d);
	unsigned int seg = d->seg == KAP_SOFT_SEG_NONE ? KAP_SOFT_DS : d->seg;
	if (d->op < 0xa2)
		set_reg(cpu, d, 0, n, kap_soft_read(cpu, seg, d->imm, n));
	else
		kap_soft_write(cpu, seg, d->imm, n, get_reg(cpu, d, 0, n));
}

static void x_lea(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (d->mod == 3)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	set_reg(cpu, d, d->reg, d->osize, ea(cpu, d));
}

/* 86/87, 90-97: XCHG. */
static void x_xchg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (d->op >= 0x90) {
		unsigned int r = (d->op & 7) | ((d->rex & 1) << 3);
		if (r == 0)
			return; /* NOP, PAUSE (F3 90) */
		uint64_t a = get_reg(cpu, d, 0, d->osize), b = get_reg(cpu, d, r, d->osize);
		set_reg(cpu, d, 0, d->osize, b);
		set_reg(cpu, d, r, d->osize, a);
		return;
	}
	unsigned int n = opsz(d);
	uint64_t a = get_rm(cpu, d, n), b = get_reg(cpu, d, d->reg, n);
	set_rm(cpu, d, n, b);
	set_reg(cpu, d, d->reg, n, a);
}

/* 0F B6/B7 MOVZX, 0F BE/BF MOVSX, 63 MOVSXD (64-bit mode). */
static void x_movx(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int src = (d->op & 0xff) == 0x63 ? 4 : (d->op & 1) ? 2 : 1;
	uint64_t v = get_rm(cpu, d, src);
	if ((d->op & 0xff) != 0xb6 && (d->op & 0xff) != 0xb7)
		v = sext(v, src);
	set_reg(cpu, d, d->reg, d->osize, v);
}

/* 8C: MOV Ev, Sreg; 8E: MOV Sreg, Ew. */
static void x_mov_sreg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int s = d->reg & 7;
	if (s > 5 || (d->op == 0x8e && s == KAP_SOFT_CS))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	if (d->op == 0x8c) {
		set_rm(cpu, d, d->mod == 3 ? d->osize : 2, cpu->seg[s].sel);
		return;
	}
	kap_soft_load_seg(cpu, s, (uint16_t)get_rm(cpu, d, 2));
}

/* 98 CBW/CWDE/CDQE, 99 CWD/CDQ/CQO. */
static void x_conv(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize;
	if (d->op == 0x98) {
		set_reg(cpu, d, 0, n, sext(cpu->r[0], n / 2));
		return;
	}
	uint64_t a = get_reg(cpu, d, 0, n);
	set_reg(cpu, d, 2, n, (a >> (8 * n - 1)) ? ~0ULL : 0);
}

/* ---- stack instructions ---- */

static void x_push_reg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int r = (d->op & 7) | ((d->rex & 1) << 3), n = stack_osize(cpu, d);
	push(cpu, n, get_reg(cpu, d, r, n));
}

static void x_pop_reg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int r = (d->op & 7) | ((d->rex & 1) << 3), n = stack_osize(cpu, d);
	uint64_t v = pop(cpu, n);
	set_reg(cpu, d, r, n, v);
}

static void x_push_imm(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = stack_osize(cpu, d);
	push(cpu, n, d->op == 0x6a ? sext(d->imm, 1) : imm_z(d));
}

/* 8F /0: POP Ev (the address is computed after RSP moves: SDM vol. 2, POP). */
static void x_pop_rm(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = stack_osize(cpu, d);
	if ((d->reg & 7) != 0)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	uint64_t sp = sp_get(cpu);
	uint64_t v = kap_soft_read(cpu, KAP_SOFT_SS, sp, n);
	sp_set(cpu, sp + n);
	set_rm(cpu, d, n, v);
}

/* PUSH/POP ES CS SS DS FS GS. */
static void x_push_pop_seg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int s, n = stack_osize(cpu, d);
	bool is_pop;
	switch (d->op) {
	case OP0F(0xa0):
	case OP0F(0xa1):
		s = KAP_SOFT_FS;
		is_pop = d->op & 1;
		break;
	case OP0F(0xa8):
	case OP0F(0xa9):
		s = KAP_SOFT_GS;
		is_pop = d->op & 1;
		break;
	default:
		s = (d->op >> 3) & 3;
		is_pop = d->op & 1;
	}
	if (!is_pop) {
		push(cpu, n, cpu->seg[s].sel);
		return;
	}
	uint64_t sp = sp_get(cpu);
	uint16_t sel = (uint16_t)kap_soft_read(cpu, KAP_SOFT_SS, sp, n);
	kap_soft_load_seg(cpu, s, sel);
	sp_set(cpu, sp + n);
}

static void x_pusha(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize;
	uint64_t sp = cpu->r[4];
	if (d->op == 0x60) {
		for (unsigned int r = 0; r < 8; r++)
			push(cpu, n, r == 4 ? sp : cpu->r[r]);
		return;
	}
	for (int r = 7; r >= 0; r--) {
		uint64_t v = pop(cpu, n);
		if (r != 4)
			set_reg(cpu, d, (unsigned int)r, n, v);
	}
}

static void x_enter_leave(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = stack_osize(cpu, d), ss = stack_size(cpu);
	if (d->op == 0xc9) {
		sp_set(cpu, cpu->r[5]);
		set_reg(cpu, d, 5, n, pop(cpu, n));
		return;
	}
	unsigned int level = d->imm2 & 31;
	push(cpu, n, cpu->r[5]);
	uint64_t frame = sp_get(cpu);
	for (unsigned int i = 1; i < level; i++) {
		uint64_t bp = (cpu->r[5] - i * n) & mask_of(ss);
		push(cpu, n, kap_soft_read(cpu, KAP_SOFT_SS, bp, n));
	}
	if (level)
		push(cpu, n, frame);
	set_reg(cpu, d, 5, n, frame);
	sp_set(cpu, sp_get(cpu) - d->imm);
}

/* 9C PUSHF, 9D POPF (SDM vol. 2, POPF: which bits CPL and IOPL let change). */
static void x_pushf_popf(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = stack_osize(cpu, d);
	if (d->op == 0x9c) {
		push(cpu, n, kap_soft_get_flags(cpu) & 0xfcffff); /* VM and RF read as 0 */
		return;
	}
	uint64_t v = pop(cpu, n);
	uint64_t f = kap_soft_get_flags(cpu);
	uint64_t mask = KAP_SOFT_ARITH | KAP_SOFT_TF | KAP_SOFT_DIRF | (1ULL << 14) | (1ULL << 18) |
			(1ULL << 21);
	unsigned int iopl = (f >> 12) & 3;
	if (cpu->cpl == 0)
		mask |= 3ULL << 12;
	if (cpu->cpl <= iopl)
		mask |= KAP_SOFT_IF;
	if (n == 2)
		mask &= 0xffff;
	kap_soft_set_flags(cpu, (f & ~mask) | (v & mask));
}

static void x_sahf_lahf(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	uint64_t f = kap_soft_get_flags(cpu);
	if (d->op == 0x9f) {
		set_reg(cpu, d, 4, 1, (f & 0xd5) | 2); /* AH */
		return;
	}
	uint64_t ah = (cpu->r[0] >> 8) & 0xd5;
	kap_soft_set_flags(cpu, (f & ~0xd5ULL) | ah);
}

/* ---- branches ---- */

static void jump(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, uint64_t target)
{
	if (cpu->mode == 8)
		cpu->next_rip = target;
	else
		cpu->next_rip = target & (d->osize == 2 ? 0xffff : 0xffffffffULL);
}

static void x_jcc(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (cond(cpu, d->op & 0xf))
		jump(cpu, d, cpu->next_rip + d->imm);
}

static void x_jmp(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	jump(cpu, d, cpu->next_rip + d->imm);
}

static unsigned int branch_osize(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	return cpu->mode == 8 ? 8 : d->osize;
}

static void x_call(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	push(cpu, branch_osize(cpu, d), cpu->next_rip);
	jump(cpu, d, cpu->next_rip + d->imm);
}

static void x_ret(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	uint64_t t = pop(cpu, branch_osize(cpu, d));
	if (d->op == 0xc2)
		sp_set(cpu, sp_get(cpu) + d->imm);
	jump(cpu, d, t);
}

/* E0-E3: LOOPNE, LOOPE, LOOP, JCXZ; the count register has the address size. */
static void x_loop(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int a = d->asize;
	uint64_t c = cpu->r[1] & mask_of(a);
	bool take;
	if (d->op == 0xe3) {
		take = c == 0;
	} else {
		c = (c - 1) & mask_of(a);
		set_reg(cpu, d, 1, a, c);
		take = c != 0;
		if (d->op == 0xe0)
			take = take && !(kap_soft_get_flags(cpu) & KAP_SOFT_ZF);
		else if (d->op == 0xe1)
			take = take && (kap_soft_get_flags(cpu) & KAP_SOFT_ZF);
	}
	if (take)
		jump(cpu, d, cpu->next_rip + d->imm);
}

/* Far transfers: protected mode only to code segments of the same privilege here. */
static void far_jump(struct kap_soft_cpu *cpu, uint16_t sel, uint64_t off)
{
	kap_soft_load_seg(cpu, KAP_SOFT_CS, sel);
	cpu->next_rip = cpu->mode == 8 ? off : off & (cpu->mode == 4 ? 0xffffffffULL : 0xffff);
	cpu->stop_block = true;
}

static void x_far(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize == 2 ? 2 : 4;
	if (d->op == 0x9a) {
		uint16_t cs = cpu->seg[KAP_SOFT_CS].sel;
		uint64_t ret = cpu->next_rip;
		push(cpu, n, cs);
		push(cpu, n, ret);
	}
	far_jump(cpu, d->imm2, d->imm);
}

/* CA/CB RETF (same privilege). */
static void x_retf(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize; /* 64-bit mode too: RETF pops 32 bits without REX.W */
	uint64_t ip = pop(cpu, n);
	uint16_t cs = (uint16_t)pop(cpu, n);
	if ((cs & 3) > cpu->cpl && (cpu->cr0 & KAP_SOFT_CR0_PE))
		kap_soft_unimplemented(cpu, d); /* a return to an outer level */
	if (d->op == 0xca)
		sp_set(cpu, sp_get(cpu) + d->imm);
	far_jump(cpu, cs, ip);
}

/* CF IRET: real mode, and protected/long mode to the same or an outer privilege level. */
static void x_iret(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize; /* IRET, IRETD, IRETQ (REX.W) */
	uint64_t ip = pop(cpu, n);
	uint16_t cs = (uint16_t)pop(cpu, n);
	uint64_t fl = pop(cpu, n);
	if (!(cpu->cr0 & KAP_SOFT_CR0_PE)) {
		far_jump(cpu, cs, ip);
		uint64_t f = kap_soft_get_flags(cpu);
		kap_soft_set_flags(cpu, (f & ~0xffffULL) | (fl & 0xffff));
		cpu->nmi_blocked = false;
		return;
	}
	if (kap_soft_get_flags(cpu) & (1ULL << 14))
		kap_soft_unimplemented(cpu, d); /* nested task return */
	bool outer = (cs & 3) > cpu->cpl;
	uint64_t sp = 0;
	uint16_t ss = 0;
	if (outer || cpu->mode == 8) {
		sp = pop(cpu, n);
		ss = (uint16_t)pop(cpu, n);
	}
	uint64_t f = kap_soft_get_flags(cpu);
	uint64_t mask = KAP_SOFT_ARITH | KAP_SOFT_TF | KAP_SOFT_DIRF | (1ULL << 14) | (1ULL << 16) |
			(1ULL << 18) | (1ULL << 21) | (1ULL << 19) | (1ULL << 20);
	if (cpu->cpl == 0)
		mask |= (3ULL << 12) | KAP_SOFT_IF;
	else if (cpu->cpl <= ((f >> 12) & 3))
		mask |= KAP_SOFT_IF;
	if (n == 2)
		mask &= 0xffff;
	unsigned int saved = cpu->cpl;
	cpu->cpl = cs & 3; /* CS's RPL is the new CPL (§6.12.1) */
	kap_soft_load_seg(cpu, KAP_SOFT_CS, cs);
	if (outer || cpu->mode == 8) {
		if ((ss & ~3u) || cpu->mode != 8)
			kap_soft_load_seg(cpu, KAP_SOFT_SS, ss);
		else
			cpu->seg[KAP_SOFT_SS] = (struct kap_soft_seg){.sel = ss};
		cpu->r[4] = sp;
	}
	(void)saved;
	kap_soft_set_flags(cpu, (f & ~mask) | (fl & mask));
	kap_soft_update_mode(cpu);
	cpu->nmi_blocked = false; /* IRET ends an NMI handler's blocking (§6.7.1) */
	cpu->next_rip = cpu->mode == 8 ? ip : ip & (cpu->mode == 4 ? 0xffffffffULL : 0xffff);
	cpu->stop_block = true;
}

static void x_int(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (d->op == 0xcc) {
		kap_soft_int(cpu, KAP_SOFT_XBP, true);
	} else if (d->op == 0xce) {
		if (kap_soft_get_flags(cpu) & KAP_SOFT_OF)
			kap_soft_int(cpu, KAP_SOFT_XOF, true);
	} else {
		kap_soft_int(cpu, (int)(d->imm & 0xff), true);
	}
	cpu->stop_block = true;
}

/* FF: INC DEC CALL CALLF JMP JMPF PUSH; FE: INC DEC. */
static void x_grp45(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int op = d->reg & 7, n = opsz(d);
	uint64_t v;
	switch (op) {
	case 0:
	case 1:
		incdec(cpu, n, get_rm(cpu, d, n), op == 1, &v);
		set_rm(cpu, d, n, v);
		return;
	}
	if (d->op == 0xfe)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	switch (op) {
	case 2:
		v = get_rm(cpu, d, branch_osize(cpu, d));
		push(cpu, branch_osize(cpu, d), cpu->next_rip);
		jump(cpu, d, v);
		return;
	case 4:
		jump(cpu, d, get_rm(cpu, d, branch_osize(cpu, d)));
		return;
	case 6:
		push(cpu, stack_osize(cpu, d), get_rm(cpu, d, stack_osize(cpu, d)));
		return;
	case 3:
	case 5: {
		if (d->mod == 3)
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		unsigned int w = d->osize;
		uint64_t off = ea(cpu, d);
		uint64_t ip = kap_soft_read(cpu, ea_seg(d), off, w);
		uint16_t sel = (uint16_t)kap_soft_read(cpu, ea_seg(d), off + w, 2);
		if (op == 3) {
			uint16_t cs = cpu->seg[KAP_SOFT_CS].sel;
			uint64_t ret = cpu->next_rip;
			push(cpu, w, cs);
			push(cpu, w, ret);
		}
		far_jump(cpu, sel, ip);
		return;
	}
	default:
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	}
}

/* ---- SETcc, CMOVcc, flag instructions ---- */

static void x_setcc(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	set_rm(cpu, d, 1, cond(cpu, d->op & 0xf));
}

static void x_cmovcc(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	uint64_t v = get_rm(cpu, d, d->osize); /* read (and fault) either way */
	if (cond(cpu, d->op & 0xf))
		set_reg(cpu, d, d->reg, d->osize, v);
	else if (d->osize == 4)
		set_reg(cpu, d, d->reg, 4, cpu->r[d->reg]); /* 64-bit mode zeroes the top */
}

static void x_flagop(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	uint64_t f = kap_soft_get_flags(cpu);
	switch (d->op) {
	case 0xf5:
		f ^= KAP_SOFT_CF;
		break;
	case 0xf8:
		f &= ~KAP_SOFT_CF;
		break;
	case 0xf9:
		f |= KAP_SOFT_CF;
		break;
	case 0xfa:
	case 0xfb:
		if (cpu->cpl > ((f >> 12) & 3))
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
		/* STI: interrupts wait one more instruction (SDM vol. 2, STI). */
		if (d->op == 0xfb && !(f & KAP_SOFT_IF))
			cpu->int_shadow = true;
		f = d->op == 0xfa ? f & ~KAP_SOFT_IF : f | KAP_SOFT_IF;
		break;
	case 0xfc:
		f &= ~KAP_SOFT_DIRF;
		break;
	case 0xfd:
		f |= KAP_SOFT_DIRF;
		break;
	}
	kap_soft_set_flags(cpu, f);
}

/* ---- shifts and rotates (SDM vol. 2, SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR) ---- */

static uint64_t shift(struct kap_soft_cpu *cpu, unsigned int op, unsigned int n, uint64_t v,
		      unsigned int count)
{
	unsigned int bits = 8 * n;
	uint64_t m = mask_of(n), sb = 1ULL << (bits - 1);
	count &= n == 8 ? 63 : 31;
	v &= m;
	if (count == 0)
		return v;
	uint64_t f = kap_soft_get_flags(cpu);
	bool cf = f & KAP_SOFT_CF, of = f & KAP_SOFT_OF;
	uint64_t r = v;
	switch (op) {
	case 0: /* ROL */
	case 1: /* ROR */ {
		unsigned int c = count % bits;
		if (op == 0)
			r = c ? ((v << c) | (v >> (bits - c))) & m : v;
		else
			r = c ? ((v >> c) | (v << (bits - c))) & m : v;
		cf = op == 0 ? r & 1 : (r & sb) != 0;
		of = op == 0 ? (((r & sb) != 0) ^ cf) : (((r ^ (r << 1)) & sb) != 0);
		cpu->flags = (f & ~(KAP_SOFT_CF | KAP_SOFT_OF)) | (cf ? KAP_SOFT_CF : 0) |
			     (of ? KAP_SOFT_OF : 0);
		return r;
	}
	case 2: /* RCL */
	case 3: /* RCR */ {
		unsigned int c = count % (bits + 1);
		for (unsigned int i = 0; i < c; i++) {
			bool out;
			if (op == 2) {
				out = (r & sb) != 0;
				r = ((r << 1) | cf) & m;
			} else {
				out = r & 1;
				r = (r >> 1) | (cf ? sb : 0);
			}
			cf = out;
		}
		of = op == 2 ? (((r & sb) != 0) ^ cf) : (((r ^ (r << 1)) & sb) != 0);
		cpu->flags = (f & ~(KAP_SOFT_CF | KAP_SOFT_OF)) | (cf ? KAP_SOFT_CF : 0) |
			     (of ? KAP_SOFT_OF : 0);
		return r;
	}
	case 4: /* SHL */
	case 6:
		r = count < 64 ? (v << count) & m : 0;
		cf = count <= bits ? (v >> (bits - count)) & 1 : 0;
		of = ((r & sb) != 0) ^ cf;
		break;
	case 5: /* SHR */
		r = count < 64 ? v >> count : 0;
		cf = (v >> (count - 1)) & 1;
		of = (v & sb) != 0;
		break;
	default: { /* SAR */
		int64_t s = (int64_t)sext(v, n);
		r = (uint64_t)(s >> (count > 63 ? 63 : count)) & m;
		cf = (uint64_t)(s >> (count - 1 > 63 ? 63 : count - 1)) & 1;
		of = false;
		break;
	}
	}
	cpu->flags =
	    (f & ~KAP_SOFT_ARITH) | szp(r, n) | (cf ? KAP_SOFT_CF : 0) | (of ? KAP_SOFT_OF : 0);
	return r;
}

/* C0/C1 (imm8), D0/D1 (1), D2/D3 (CL). */
static void x_shift(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = opsz(d), c;
	if (d->op == 0xc0 || d->op == 0xc1)
		c = (unsigned int)d->imm;
	else if (d->op == 0xd0 || d->op == 0xd1)
		c = 1;
	else
		c = cpu->r[1] & 0xff;
	set_rm(cpu, d, n, shift(cpu, d->reg & 7, n, get_rm(cpu, d, n), c));
}

/* 0F A4/A5 SHLD, AC/AD SHRD. */
static void x_shxd(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize, bits = 8 * n;
	unsigned int c = ((d->op & 1) ? cpu->r[1] : d->imm) & (n == 8 ? 63 : 31);
	uint64_t m = mask_of(n), a = get_rm(cpu, d, n), b = get_reg(cpu, d, d->reg, n);
	if (c == 0)
		return;
	uint64_t r;
	bool cf;
	if (c > bits) {
		c %= bits; /* 16-bit counts above 16: undefined result; keep it defined */
		if (c == 0)
			return;
	}
	if ((d->op & 0xff) <= 0xa5) {
		r = ((a << c) | (c == bits ? b : (b >> (bits - c)))) & m;
		if (c == bits)
			r = b & m;
		cf = (a >> (bits - c)) & 1;
	} else {
		r = ((a >> c) | (c == bits ? b : (b << (bits - c)))) & m;
		if (c == bits)
			r = b & m;
		cf = (a >> (c - 1)) & 1;
	}
	uint64_t sb = 1ULL << (bits - 1);
	bool of = ((r ^ a) & sb) != 0;
	uint64_t f = kap_soft_get_flags(cpu);
	cpu->flags =
	    (f & ~KAP_SOFT_ARITH) | szp(r, n) | (cf ? KAP_SOFT_CF : 0) | (of ? KAP_SOFT_OF : 0);
	set_rm(cpu, d, n, r);
}

/* ---- group 3: TEST NOT NEG MUL IMUL DIV IDIV ---- */

static void mul_flags(struct kap_soft_cpu *cpu, bool overflow, uint64_t lo, unsigned int n)
{
	uint64_t f = kap_soft_get_flags(cpu) & ~KAP_SOFT_ARITH;
	cpu->flags = f | szp(lo, n) | (overflow ? KAP_SOFT_CF | KAP_SOFT_OF : 0);
}

static void x_grp3(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = opsz(d), op = d->reg & 7;
	uint64_t m = mask_of(n), v = get_rm(cpu, d, n);
	switch (op) {
	case 0:
	case 1:
		alu(cpu, 4, n, v, n == 1 ? d->imm : imm_z(d));
		return;
	case 2:
		set_rm(cpu, d, n, ~v & m);
		return;
	case 3:
		set_rm(cpu, d, n, alu(cpu, 5, n, 0, v));
		return;
	}
	/* The implicit operand: AL/AX, or DX:AX, EDX:EAX, RDX:RAX. */
	unsigned __int128 a, r;
	if (op == 4 || op == 5) {
		uint64_t src = get_reg(cpu, d, 0, n);
		uint64_t lo, hi;
		bool ovf;
		if (op == 4) {
			r = (unsigned __int128)src * v;
			lo = (uint64_t)r & m;
			hi = n == 8 ? (uint64_t)(r >> 64) : (uint64_t)(r >> (8 * n)) & m;
			ovf = hi != 0;
		} else {
			__int128 sr = (__int128)(int64_t)sext(src, n) * (int64_t)sext(v, n);
			lo = (uint64_t)sr & m;
			hi = n == 8 ? (uint64_t)(sr >> 64) : (uint64_t)(sr >> (8 * n)) & m;
			ovf = sr != (__int128)(int64_t)sext(lo, n);
		}
		if (n == 1) {
			set_reg(cpu, d, 0, 2, (hi << 8) | lo);
		} else {
			set_reg(cpu, d, 0, n, lo);
			set_reg(cpu, d, 2, n, hi);
		}
		mul_flags(cpu, ovf, lo, n);
		return;
	}
	if (v == 0)
		kap_soft_raise(cpu, KAP_SOFT_XDE, 0, false);
	uint64_t lo = get_reg(cpu, d, 0, n),
		 hi = n == 1 ? (cpu->r[0] >> 8) & 0xff : get_reg(cpu, d, 2, n);
	a = n == 8 ? ((unsigned __int128)hi << 64) | lo : ((unsigned __int128)hi << (8 * n)) | lo;
	uint64_t q, rem;
	if (op == 6) {
		unsigned __int128 qq = a / v;
		if (qq > m)
			kap_soft_raise(cpu, KAP_SOFT_XDE, 0, false);
		q = (uint64_t)qq;
		rem = (uint64_t)(a % v);
	} else {
		/* Sign-extend the 2n-byte dividend. */
		__int128 sa;
		if (n == 8) {
			sa = (__int128)a;
		} else {
			unsigned int bits = 16 * n;
			__int128 sign = (__int128)1 << (bits - 1);
			__int128 t = (__int128)(a & (((unsigned __int128)1 << bits) - 1));
			sa = (t ^ sign) - sign;
		}
		__int128 sv = (int64_t)sext(v, n);
		/* The one quotient __int128 cannot hold (and C leaves undefined). */
		if (n == 8 && sa == (__int128)((unsigned __int128)1 << 127) && sv == -1)
			kap_soft_raise(cpu, KAP_SOFT_XDE, 0, false);
		__int128 qq = sa / sv, rr = sa % sv;
		__int128 lim = (__int128)1 << (8 * n - 1);
		if (qq >= lim || qq < -lim)
			kap_soft_raise(cpu, KAP_SOFT_XDE, 0, false);
		q = (uint64_t)qq & m;
		rem = (uint64_t)rr & m;
	}
	if (n == 1) {
		set_reg(cpu, d, 0, 2, (rem << 8) | q);
	} else {
		set_reg(cpu, d, 0, n, q);
		set_reg(cpu, d, 2, n, rem);
	}
}

/* 69, 6B, 0F AF: IMUL with two or three operands. */
static void x_imul(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize;
	int64_t a = (int64_t)sext(get_rm(cpu, d, n), n), b;
	if (d->op == 0x69)
		b = (int64_t)imm_z(d);
	else if (d->op == 0x6b)
		b = (int64_t)sext(d->imm, 1);
	else
		b = (int64_t)sext(get_reg(cpu, d, d->reg, n), n);
	__int128 r = (__int128)a * b;
	uint64_t lo = (uint64_t)r & mask_of(n);
	mul_flags(cpu, r != (__int128)(int64_t)sext(lo, n), lo, n);
	set_reg(cpu, d, d->reg, n, lo);
}

/* ---- bit instructions ---- */

/* 0F A3 BT, AB BTS, B3 BTR, BB BTC, BA group 8. A register offset reaches outside the operand. */
static void x_bt(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize, op;
	int64_t bit;
	if ((d->op & 0xff) == 0xba) {
		op = d->reg & 7;
		if (op < 4)
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		op -= 4;
		bit = (int64_t)(d->imm & (8 * n - 1));
	} else {
		op = ((d->op & 0xff) >> 3) & 3; /* A3: 0, AB: 1, B3: 2, BB: 3 */
		bit = (int64_t)sext(get_reg(cpu, d, d->reg, n), n);
		if (d->mod == 3)
			bit &= 8 * n - 1;
	}
	uint64_t v, off = 0;
	unsigned int seg = 0;
	if (d->mod == 3) {
		v = get_reg(cpu, d, d->rm, n);
	} else {
		seg = ea_seg(d);
		int64_t words = bit >= 0 ? bit / (8 * (int64_t)n) : -((-bit + 8 * n - 1) / (8 * n));
		off = (ea(cpu, d) + (uint64_t)(words * (int64_t)n)) & mask_of(d->asize);
		bit -= words * 8 * (int64_t)n;
		v = kap_soft_read(cpu, seg, off, n);
	}
	uint64_t b = 1ULL << bit;
	put_flags(cpu, KAP_SOFT_CF, (v & b) ? KAP_SOFT_CF : 0);
	if (op == 0)
		return;
	v = op == 1 ? v | b : op == 2 ? v & ~b : v ^ b;
	if (d->mod == 3)
		set_reg(cpu, d, d->rm, n, v);
	else
		kap_soft_write(cpu, seg, off, n, v);
}

/* 0F BC BSF, BD BSR (without F3: TZCNT/LZCNT are not in the baseline). */
static void x_bsf(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize;
	uint64_t v = get_rm(cpu, d, n);
	if (v == 0) {
		put_flags(cpu, KAP_SOFT_ZF, KAP_SOFT_ZF);
		return;
	}
	put_flags(cpu, KAP_SOFT_ZF, 0);
	set_reg(cpu, d, d->reg, n,
		(d->op & 0xff) == 0xbc ? (uint64_t)__builtin_ctzll(v)
				       : (uint64_t)(63 - __builtin_clzll(v)));
}

static void x_bswap(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int r = (d->op & 7) | ((d->rex & 1) << 3);
	if (d->osize == 8)
		cpu->r[r] = __builtin_bswap64(cpu->r[r]);
	else
		set_reg(cpu, d, r, 4, __builtin_bswap32((uint32_t)cpu->r[r]));
}

/* 0F B0/B1 CMPXCHG, C0/C1 XADD (with LOCK, atomic.c makes the operand's access atomic). */
static void x_cmpxchg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = opsz(d);
	uint64_t dst = get_rm(cpu, d, n), src = get_reg(cpu, d, d->reg, n);
	if ((d->op & 0xff) >= 0xc0) {
		uint64_t sum = alu(cpu, 0, n, dst, src);
		set_reg(cpu, d, d->reg, n, dst);
		set_rm(cpu, d, n, sum);
		return;
	}
	uint64_t acc = get_reg(cpu, d, 0, n);
	alu(cpu, 7, n, acc, dst);
	if (acc == dst) {
		set_rm(cpu, d, n, src);
	} else {
		set_rm(cpu, d, n, dst); /* the CPU writes the destination back either way */
		set_reg(cpu, d, 0, n, dst);
	}
}

/* 0F C7 /1: CMPXCHG8B (CMPXCHG16B is not in the baseline). */
static void x_grp9(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if ((d->reg & 7) != 1 || d->mod == 3)
		kap_soft_unimplemented(cpu, d);
	if (d->osize == 8) {
		kap_soft_cmpxchg16b(cpu, d);
		return;
	}
	unsigned int seg = ea_seg(d);
	uint64_t off = ea(cpu, d);
	uint64_t v = kap_soft_read(cpu, seg, off, 8);
	uint64_t cmp = (cpu->r[0] & 0xffffffffULL) | (cpu->r[2] << 32);
	if (v == cmp) {
		kap_soft_write(cpu, seg, off, 8, (cpu->r[3] & 0xffffffffULL) | (cpu->r[1] << 32));
		put_flags(cpu, KAP_SOFT_ZF, KAP_SOFT_ZF);
	} else {
		kap_soft_write(cpu, seg, off, 8, v);
		set_reg(cpu, d, 0, 4, v);
		set_reg(cpu, d, 2, 4, v >> 32);
		put_flags(cpu, KAP_SOFT_ZF, 0);
	}
}

/* ---- string instructions (SDM vol. 2, MOVS/STOS/LODS/CMPS/SCAS/INS/OUTS; REP) ---- */

/*
 * REP MOVS/STOS in 64-bit mode with DF clear, as many elements as lie in one page of the
 * source and one of the destination: host memcpy/fill over RAM, then the translated-code check
 * once for the page written. The same as element by element: no segment limits in 64-bit
 * mode, the source page is resolved before the destination (so a fault is the first
 * element's, with nothing done), A/D bits as the first element sets them. 0 when it cannot
 * (MMIO, an element across a page end, overlapping source and destination, where each element
 * must see the one before): the caller does one element the slow way.
 */
static uint64_t string_run(struct kap_soft_cpu *cpu, unsigned int op, unsigned int n,
			   unsigned int src_seg)
{
	uint64_t count = cpu->r[1] < 4096 ? cpu->r[1] : 4096;
	uint64_t want = count * n, dlen = want;
	const uint8_t *src = NULL;
	if (op == 0xa4 || op == 0xa5) {
		uint64_t slen = want;
		src = kap_soft_string_ptr(cpu, src_seg, cpu->r[6], &slen, false);
		if (!src)
			return 0;
		dlen = slen;
	}
	uint8_t *dst = kap_soft_string_ptr(cpu, KAP_SOFT_ES, cpu->r[7], &dlen, true);
	uint64_t k = dlen / n, bytes = k * n;
	if (!dst || k == 0 || (src && src < dst + bytes && dst < src + bytes))
		return 0;
	if (src) {
		memcpy(dst, src, bytes);
		cpu->r[6] += bytes;
	} else if (n == 1) {
		memset(dst, (int)(cpu->r[0] & 0xff), bytes);
	} else {
		uint64_t v = cpu->r[0];
		for (uint64_t i = 0; i < bytes; i += n)
			memcpy(dst + i, &v, n);
	}
	kap_soft_stored(cpu, dst);
	cpu->r[7] += bytes;
	cpu->r[1] -= k;
	return k;
}

static void x_string(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int op = d->op & 0xff, n;
	if (op >= 0x6c && op <= 0x6f)
		n = (op & 1) ? (d->osize == 8 ? 4 : d->osize) : 1;
	else
		n = opsz(d);
	uint64_t am = mask_of(d->asize);
	bool rep = d->pfx & (KAP_SOFT_PFX_REP | KAP_SOFT_PFX_REPNE);
	unsigned int src_seg = d->seg == KAP_SOFT_SEG_NONE ? KAP_SOFT_DS : d->seg;
	int64_t step = (kap_soft_get_flags(cpu) & KAP_SOFT_DIRF) ? -(int64_t)n : (int64_t)n;
	bool fast = rep && step > 0 && cpu->mode == 8 && d->asize == 8 &&
		    (op == 0xa4 || op == 0xa5 || op == 0xaa || op == 0xab);
	/* At most this many elements per visit, so the stop flag is seen: RIP stays put. */
	for (unsigned int iter = 0; iter < 4096; iter++) {
		if (rep && (cpu->r[1] & am) == 0)
			return;
		if (fast) {
			uint64_t k = string_run(cpu, op, n, src_seg);
			if (k) {
				iter += (unsigned int)k - 1;
				continue;
			}
			fast = false; /* element by element for the rest of this visit */
		}
		uint64_t si = cpu->r[6] & am, di = cpu->r[7] & am;
		bool cmp = false;
		switch (op) {
		case 0xa4:
		case 0xa5:
			kap_soft_write(cpu, KAP_SOFT_ES, di, n, kap_soft_read(cpu, src_seg, si, n));
			set_reg(cpu, d, 6, d->asize, si + (uint64_t)step);
			set_reg(cpu, d, 7, d->asize, di + (uint64_t)step);
			break;
		case 0xaa:
		case 0xab:
			kap_soft_write(cpu, KAP_SOFT_ES, di, n, get_reg(cpu, d, 0, n));
			set_reg(cpu, d, 7, d->asize, di + (uint64_t)step);
			break;
		case 0xac:
		case 0xad:
			set_reg(cpu, d, 0, n, kap_soft_read(cpu, src_seg, si, n));
			set_reg(cpu, d, 6, d->asize, si + (uint64_t)step);
			break;
		case 0xa6:
		case 0xa7:
			alu(cpu, 7, n, kap_soft_read(cpu, src_seg, si, n),
			    kap_soft_read(cpu, KAP_SOFT_ES, di, n));
			set_reg(cpu, d, 6, d->asize, si + (uint64_t)step);
			set_reg(cpu, d, 7, d->asize, di + (uint64_t)step);
			cmp = true;
			break;
		case 0xae:
		case 0xaf:
			alu(cpu, 7, n, get_reg(cpu, d, 0, n),
			    kap_soft_read(cpu, KAP_SOFT_ES, di, n));
			set_reg(cpu, d, 7, d->asize, di + (uint64_t)step);
			cmp = true;
			break;
		case 0x6c:
		case 0x6d:
			kap_soft_write(cpu, KAP_SOFT_ES, di, n,
				       kap_soft_in(cpu, (uint16_t)cpu->r[2], n));
			set_reg(cpu, d, 7, d->asize, di + (uint64_t)step);
			break;
		default: /* 6E, 6F */
			kap_soft_out(cpu, (uint16_t)cpu->r[2], n,
				     (uint32_t)kap_soft_read(cpu, src_seg, si, n));
			set_reg(cpu, d, 6, d->asize, si + (uint64_t)step);
			break;
		}
		if (!rep)
			return;
		set_reg(cpu, d, 1, d->asize, cpu->r[1] - 1);
		if (cmp) {
			bool zf = kap_soft_get_flags(cpu) & KAP_SOFT_ZF;
			if ((d->pfx & KAP_SOFT_PFX_REP) ? !zf : zf)
				return;
		}
	}
	if ((cpu->r[1] & am) != 0)
		cpu->next_rip = cpu->rip; /* not done: run it again after the block boundary */
}

/* D7 XLAT. */
static void x_xlat(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int seg = d->seg == KAP_SOFT_SEG_NONE ? KAP_SOFT_DS : d->seg;
	uint64_t off = (cpu->r[3] + (cpu->r[0] & 0xff)) & mask_of(d->asize);
	set_reg(cpu, d, 0, 1, kap_soft_read(cpu, seg, off, 1));
}

/* ---- port I/O ---- */

static void io_check(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	/* No TSS I/O bitmap yet: outside CPL <= IOPL every port is refused (§19.5.2). */
	if ((cpu->cr0 & KAP_SOFT_CR0_PE) && cpu->cpl > ((kap_soft_get_flags(cpu) >> 12) & 3))
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
	(void)d;
}

static void x_io(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = (d->op & 1) ? (d->osize == 2 ? 2 : 4) : 1;
	uint16_t port = (d->op & 8) ? (uint16_t)cpu->r[2] : (uint16_t)d->imm;
	io_check(cpu, d);
	if (d->op & 2)
		kap_soft_out(cpu, port, n, (uint32_t)get_reg(cpu, d, 0, n));
	else
		set_reg(cpu, d, 0, n, kap_soft_in(cpu, port, n));
}

static void x_string_io(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	io_check(cpu, d);
	x_string(cpu, d);
}

static void x_nop(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	(void)cpu;
	(void)d;
}

static void x_ud(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	(void)d;
	kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
}

/* ---- the dispatch table ---- */

kap_soft_exec_fn kap_soft_exec_lookup(const struct kap_soft_insn *d)
{
	unsigned int map = d->op >> 8, b = d->op & 0xff;
	bool repne = d->pfx & KAP_SOFT_PFX_REPNE;
	if (map == KAP_SOFT_MAP_1) {
		if (b < 0x40) {
			if ((b & 7) < 6)
				return x_alu;
			if (b == 0x06 || b == 0x07 || b == 0x0e || b == 0x16 || b == 0x17 ||
			    b == 0x1e || b == 0x1f)
				return x_push_pop_seg;
			return NULL; /* DAA DAS AAA AAS */
		}
		if (b < 0x50)
			return x_incdec_reg;
		if (b < 0x58)
			return x_push_reg;
		if (b < 0x60)
			return x_pop_reg;
		if (b >= 0x70 && b < 0x80)
			return x_jcc;
		if (b >= 0x90 && b < 0x98)
			return x_xchg;
		if (b >= 0xb0 && b < 0xc0)
			return x_mov_imm;
		switch (b) {
		case 0x60:
		case 0x61:
			return x_pusha;
		case 0x63:
			return d->mode == 8 ? x_movx : NULL; /* MOVSXD; ARPL is not here */
		case 0x68:
		case 0x6a:
			return x_push_imm;
		case 0x69:
		case 0x6b:
			return x_imul;
		case 0x6c:
		case 0x6d:
		case 0x6e:
		case 0x6f:
			return x_string_io;
		case 0x80:
		case 0x81:
		case 0x82:
		case 0x83:
			return x_grp1;
		case 0x84:
		case 0x85:
		case 0xa8:
		case 0xa9:
			return x_test;
		case 0x86:
		case 0x87:
			return x_xchg;
		case 0x88:
		case 0x89:
		case 0x8a:
		case 0x8b:
		case 0xc6:
		case 0xc7:
			return x_mov;
		case 0x8c:
		case 0x8e:
			return x_mov_sreg;
		case 0x8d:
			return x_lea;
		case 0x8f:
			return x_pop_rm;
		case 0x98:
		case 0x99:
			return x_conv;
		case 0x9a:
		case 0xea:
			return x_far;
		case 0x9b:
			return kap_soft_fwait;
		case 0xd8:
		case 0xd9:
		case 0xda:
		case 0xdb:
		case 0xdc:
		case 0xdd:
		case 0xde:
		case 0xdf:
			return kap_soft_x87;
		case 0x9c:
		case 0x9d:
			return x_pushf_popf;
		case 0x9e:
		case 0x9f:
			return x_sahf_lahf;
		case 0xa0:
		case 0xa1:
		case 0xa2:
		case 0xa3:
			return x_mov_moffs;
		case 0xa4:
		case 0xa5:
		case 0xa6:
		case 0xa7:
		case 0xaa:
		case 0xab:
		case 0xac:
		case 0xad:
		case 0xae:
		case 0xaf:
			return x_string;
		case 0xc0:
		case 0xc1:
		case 0xd0:
		case 0xd1:
		case 0xd2:
		case 0xd3:
			return x_shift;
		case 0xc2:
		case 0xc3:
			return x_ret;
		case 0xc8:
		case 0xc9:
			return x_enter_leave;
		case 0xca:
		case 0xcb:
			return x_retf;
		case 0xcc:
		case 0xcd:
		case 0xce:
			return x_int;
		case 0xcf:
			return x_iret;
		case 0xc4:
		case 0xc5:
			return kap_soft_sys_lfp; /* LES, LDS (VEX where decode.c says so) */
		case 0xd7:
			return x_xlat;
		case 0xe0:
		case 0xe1:
		case 0xe2:
		case 0xe3:
			return x_loop;
		case 0xe4:
		case 0xe5:
		case 0xe6:
		case 0xe7:
		case 0xec:
		case 0xed:
		case 0xee:
		case 0xef:
			return x_io;
		case 0xe8:
			return x_call;
		case 0xe9:
		case 0xeb:
			return x_jmp;
		case 0xf4:
			return kap_soft_sys_hlt;
		case 0xf5:
		case 0xf8:
		case 0xf9:
		case 0xfa:
		case 0xfb:
		case 0xfc:
		case 0xfd:
			return x_flagop;
		case 0xf6:
		case 0xf7:
			return x_grp3;
		case 0xfe:
		case 0xff:
			return x_grp45;
		}
		return NULL;
	}
	kap_soft_exec_fn sse = kap_soft_sse_lookup(d);
	if (sse || map != KAP_SOFT_MAP_0F)
		return sse; /* MMX, SSE-SSE4.2: exec-sse.c */
	if (b >= 0x40 && b < 0x50)
		return x_cmovcc;
	if (b >= 0x80 && b < 0x90)
		return x_jcc;
	if (b >= 0x90 && b < 0xa0)
		return x_setcc;
	if (b >= 0xc8)
		return b <= 0xcf ? x_bswap : NULL;
	switch (b) {
	case 0x00:
		return kap_soft_sys_grp6;
	case 0x01:
		return kap_soft_sys_grp7;
	case 0x02:
	case 0x03:
		return kap_soft_sys_lar_lsl;
	case 0x05:
	case 0x07:
		return kap_soft_sys_syscall;
	case 0x06:
		return kap_soft_sys_clts;
	case 0x08:
	case 0x09:
		return kap_soft_sys_cache;
	case 0x0b:
	case 0xb9:
	case 0xff:
		return x_ud; /* UD2, UD1, UD0: #UD by definition */
	case 0x0d:
	case 0x18:
	case 0x19:
	case 0x1a:
	case 0x1b:
	case 0x1c:
	case 0x1d:
	case 0x1e:
	case 0x1f:
		return x_nop; /* PREFETCH, hint NOPs */
	case 0x20:
	case 0x21:
	case 0x22:
	case 0x23:
		return kap_soft_sys_mov_cr;
	case 0x30:
	case 0x32:
		return kap_soft_sys_msr;
	case 0x31:
		return kap_soft_sys_rdtsc;
	case 0xa2:
		return kap_soft_sys_cpuid;
	case 0xa0:
	case 0xa1:
	case 0xa8:
	case 0xa9:
		return x_push_pop_seg;
	case 0xa3:
	case 0xab:
	case 0xb3:
	case 0xbb:
	case 0xba:
		return x_bt;
	case 0xa4:
	case 0xa5:
	case 0xac:
	case 0xad:
		return x_shxd;
	case 0xae:
		return kap_soft_sys_grp15;
	case 0xaf:
		return x_imul;
	case 0xb0:
	case 0xb1:
	case 0xc0:
	case 0xc1:
		return x_cmpxchg;
	case 0xb2:
	case 0xb4:
	case 0xb5:
		return kap_soft_sys_lfp; /* LSS, LFS, LGS */
	case 0xb6:
	case 0xb7:
	case 0xbe:
	case 0xbf:
		return x_movx;
	case 0xbc:
	case 0xbd:
		/* F3 0F BD is LZCNT (exec-sse.c); F3 0F BC runs as BSF, as on CPUs without BMI1. */
		return repne ? NULL : x_bsf;
	case 0xc7:
		return x_grp9;
	}
	return NULL;
}

bool kap_soft_insn_ends_block(const struct kap_soft_insn *d)
{
	unsigned int map = d->op >> 8, b = d->op & 0xff;
	if (map == KAP_SOFT_MAP_1) {
		if ((b >= 0x70 && b < 0x80) || (b >= 0xe0 && b <= 0xe3))
			return true;
		switch (b) {
		case 0x8e: /* MOV SS, ... a segment base may change what CS-relative code means */
		case 0x9a:
		case 0x9d: /* POPF: IF, TF */
		case 0xc2:
		case 0xc3:
		case 0xca:
		case 0xcb:
		case 0xcc:
		case 0xcd:
		case 0xce:
		case 0xcf:
		case 0xe8:
		case 0xe9:
		case 0xea:
		case 0xeb:
		case 0xf4:
		case 0xfa:
		case 0xfb:
			return true;
		case 0xff:
			/* CALL and JMP, near and far. INC, DEC and PUSH of r/m go on (a loop's
			 * counter in memory stays inside its block), except through FS or GS:
			 * Linux's per-CPU INC and DEC (preempt_count) going on hung the 2-vCPU
			 * boot with compiled code, cause not found (docs/vm.md, the code
			 * generator). */
			return ((d->reg & 7) >= 2 && (d->reg & 7) <= 5) || d->seg == KAP_SOFT_FS ||
			       d->seg == KAP_SOFT_GS;
		}
		/* REP string instructions may stop early and run again. */
		return (d->pfx & (KAP_SOFT_PFX_REP | KAP_SOFT_PFX_REPNE)) &&
		       ((b >= 0xa4 && b <= 0xaf) || (b >= 0x6c && b <= 0x6f));
	}
	if (map == KAP_SOFT_MAP_0F)
		return (b >= 0x80 && b < 0x90) || b == 0x00 || b == 0x01 || b == 0x05 ||
		       b == 0x07 || b == 0x22 || b == 0x30 || b == 0x34 || b == 0x35;
	return false;
}
