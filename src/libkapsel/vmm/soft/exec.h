/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What exec.c (the integer instructions, the dispatch) and exec-sys.c (the system
 * instructions) share: operand access by the decoded ModRM, and the system handlers that
 * exec.c's dispatch table names.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "vmm/soft/soft.h"

/* A two-byte opcode 0F xx as the decoder numbers it (decode.h: map << 8 | byte). */
#define OP0F(b) ((KAP_SOFT_MAP_0F << 8) | (b))

/* INT n, INT3, INTO (cpu.c): delivered with the next instruction as the return address. */
void kap_soft_int(struct kap_soft_cpu *cpu, int vec, bool soft);

/* ---- operand helpers ---- */

static inline uint64_t mask_of(unsigned int n)
{
	return n == 8 ? ~0ULL : (1ULL << (8 * n)) - 1;
}

static inline uint64_t sext(uint64_t v, unsigned int n)
{
	if (n == 8)
		return v;
	uint64_t m = 1ULL << (8 * n - 1);
	v &= mask_of(n);
	return (v ^ m) - m;
}

static inline uint64_t get_reg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d,
			       unsigned int r, unsigned int n)
{
	if (n == 1) {
		if (!d->rex && r >= 4 && r < 8)
			return (cpu->r[r - 4] >> 8) & 0xff; /* AH, CH, DH, BH */
		return cpu->r[r] & 0xff;
	}
	return cpu->r[r] & mask_of(n);
}

static inline void set_reg(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, unsigned int r,
			   unsigned int n, uint64_t v)
{
	switch (n) {
	case 1:
		if (!d->rex && r >= 4 && r < 8)
			cpu->r[r - 4] = (cpu->r[r - 4] & ~0xff00ULL) | ((v & 0xff) << 8);
		else
			cpu->r[r] = (cpu->r[r] & ~0xffULL) | (v & 0xff);
		break;
	case 2:
		cpu->r[r] = (cpu->r[r] & ~0xffffULL) | (v & 0xffff);
		break;
	case 4:
		cpu->r[r] = v & 0xffffffffULL; /* a 32-bit write zeroes the upper half */
		break;
	default:
		cpu->r[r] = v;
	}
}

/* The effective address's offset (SDM vol. 2 §2.1.5; 16-bit forms from table 2-1). */
static inline uint64_t ea(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	uint64_t off;
	if (d->asize == 2) {
		static const int8_t b16[8] = {3, 3, 5, 5, -1, -1, 5, 3};
		static const int8_t i16[8] = {6, 7, 6, 7, 6, 7, -1, -1};
		off = (uint64_t)d->disp;
		if (!(d->mod == 0 && d->rm == 6)) {
			if (b16[d->rm] >= 0)
				off += cpu->r[b16[d->rm]];
			if (i16[d->rm] >= 0)
				off += cpu->r[i16[d->rm]];
		}
		return off & 0xffff;
	}
	off = (uint64_t)d->disp;
	if (d->rip_rel)
		off += cpu->next_rip;
	if (d->base != KAP_SOFT_NOREG)
		off += cpu->r[d->base];
	if (d->index != KAP_SOFT_NOREG)
		off += cpu->r[d->index] << d->scale;
	return d->asize == 4 ? off & 0xffffffffULL : off;
}

/* The segment of a memory operand: the override, else SS for BP/SP bases, else DS. */
static inline unsigned int ea_seg(const struct kap_soft_insn *d)
{
	if (d->seg != KAP_SOFT_SEG_NONE)
		return d->seg;
	if (d->asize == 2)
		return (d->rm == 2 || d->rm == 3 || (d->rm == 6 && d->mod != 0)) ? KAP_SOFT_SS
										 : KAP_SOFT_DS;
	if (d->base == 4 || d->base == 5)
		return KAP_SOFT_SS;
	return KAP_SOFT_DS;
}

static inline uint64_t get_rm(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d,
			      unsigned int n)
{
	if (d->mod == 3)
		return get_reg(cpu, d, d->rm, n);
	return kap_soft_read(cpu, ea_seg(d), ea(cpu, d), n);
}

static inline void set_rm(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, unsigned int n,
			  uint64_t v)
{
	if (d->mod == 3)
		set_reg(cpu, d, d->rm, n, v);
	else
		kap_soft_write(cpu, ea_seg(d), ea(cpu, d), n, v & mask_of(n));
}

/* Byte-sized for even opcodes of the classic pairs (00/01, 84/85...). */
static inline unsigned int opsz(const struct kap_soft_insn *d)
{
	return (d->op & 1) ? d->osize : 1;
}

/* Iz: 16 or 32 bits, sign-extended to the operand size. */
static inline uint64_t imm_z(const struct kap_soft_insn *d)
{
	return sext(d->imm, d->osize == 2 ? 2 : 4);
}

/* exec-sys.c */
void kap_soft_sys_hlt(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_grp6(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_grp7(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_mov_cr(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_syscall(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_msr(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_rdtsc(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_cpuid(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_clts(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_cache(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_grp15(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_lar_lsl(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_sys_lfp(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);

/* exec-x87.c: the D8-DF escapes and WAIT. */
void kap_soft_x87(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
void kap_soft_fwait(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);

/* exec-sse.c: MMX, SSE-SSE4.2 and friends in the 0F, 0F 38 and 0F 3A maps (NULL: not one). */
kap_soft_exec_fn kap_soft_sse_lookup(const struct kap_soft_insn *d);
/* 0F AE /0-/3 FXSAVE FXRSTOR LDMXCSR STMXCSR (memory forms). */
void kap_soft_fxsave_grp(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
/* 0F C7 /1 with REX.W. */
void kap_soft_cmpxchg16b(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
