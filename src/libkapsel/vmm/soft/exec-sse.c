/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's MMX and SSE through SSE4.2 (SDM vol. 1 ch. 9-12; vol. 2), FXSAVE/FXRSTOR,
 * LDMXCSR/STMXCSR, POPCNT, LZCNT, CRC32 and CMPXCHG16B.
 *
 * The computing instructions without an immediate run on the host as themselves, as the x87
 * ones do (exec-x87.c): a stub per opcode loads the destination into xmm0 (mm0) and the
 * source into xmm1 (mm1), loads the guest's MXCSR with every exception masked, executes the
 * guest's prefix, opcode and a ModRM naming those two registers, and hands back the result,
 * the exception flags and RFLAGS (COMISS, PTEST). Only opcodes listed in ops[] below reach a
 * stub. Moves, shuffles with immediates, the string compares (PCMPxSTRx) and anything with a
 * general register are written out here. An unmasked SIMD floating-point exception leaves
 * the destination alone and raises #XM, or #UD with CR4.OSXMMEXCPT clear (SDM vol. 3 §6.15,
 * interrupt 19).
 */
#include <string.h>

#include "vmm/soft/exec.h"

/* ---- host stubs ---- */

/*
 * SSE stubs: index (sel * 2 + map38) * 256 + opcode, sel 0 none, 1 66, 2 F3, 3 F2; 32 bytes
 * each. rdi: the destination (16 bytes, updated), rsi: the source, rdx: MXCSR (in and out).
 * MMX stubs: index map38 * 256 + opcode, same arguments, 8-byte operands.
 */
__asm__(".pushsection .text\n"
	".macro KAP_SSE_STUB pfx, map, op\n"
	".balign 32\n"
	"0:\n"
	"endbr64\n"
	"movdqu (%rdi), %xmm0\n"
	"movdqu (%rsi), %xmm1\n"
	"ldmxcsr (%rdx)\n"
	".if \\pfx\n"
	".byte \\pfx\n"
	".endif\n"
	".byte 0x0f\n"
	".if \\map\n"
	".byte 0x38\n"
	".endif\n"
	".byte \\op, 0xc1\n"
	"stmxcsr (%rdx)\n"
	"movdqu %xmm0, (%rdi)\n"
	"pushfq\n"
	"popq %rax\n"
	"ret\n"
	/* pads to 32 bytes; both assemblers refuse an .org that goes back (a longer stub) */
	".org 0b + 32\n"
	".endm\n"
	".macro KAP_MMX_STUB map, op\n"
	".balign 32\n"
	"0:\n"
	"endbr64\n"
	"movq (%rdi), %mm0\n"
	"movq (%rsi), %mm1\n"
	".byte 0x0f\n"
	".if \\map\n"
	".byte 0x38\n"
	".endif\n"
	".byte \\op, 0xc1\n"
	"movq %mm0, (%rdi)\n"
	"emms\n"
	"ret\n"
	/* pads to 32 bytes; both assemblers refuse an .org that goes back (a longer stub) */
	".org 0b + 32\n"
	".endm\n"
	".macro KAP_SSE_MAP pfx, map\n"
	".irp a,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	".irp b,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	"KAP_SSE_STUB \\pfx, \\map, (\\a << 4) | \\b\n"
	".endr\n"
	".endr\n"
	".endm\n"
	".balign 32\n"
	".globl kap_soft_sse_stubs\n"
	".hidden kap_soft_sse_stubs\n"
	".type kap_soft_sse_stubs, @function\n"
	"kap_soft_sse_stubs:\n"
	".irp p,0,0x66,0xf3,0xf2\n"
	"KAP_SSE_MAP \\p, 0\n"
	"KAP_SSE_MAP \\p, 1\n"
	".endr\n"
	".size kap_soft_sse_stubs, . - kap_soft_sse_stubs\n"
	".balign 32\n"
	".globl kap_soft_mmx_stubs\n"
	".hidden kap_soft_mmx_stubs\n"
	".type kap_soft_mmx_stubs, @function\n"
	"kap_soft_mmx_stubs:\n"
	".irp m,0,1\n"
	".irp a,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	".irp b,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	"KAP_MMX_STUB \\m, (\\a << 4) | \\b\n"
	".endr\n"
	".endr\n"
	".endr\n"
	".size kap_soft_mmx_stubs, . - kap_soft_mmx_stubs\n"
	/* CMPccPS/PD/SS/SD (0F C2) by predicate: index sel * 8 + imm. */
	".balign 32\n"
	".globl kap_soft_cmp_stubs\n"
	".hidden kap_soft_cmp_stubs\n"
	".type kap_soft_cmp_stubs, @function\n"
	"kap_soft_cmp_stubs:\n"
	".irp p,0,0x66,0xf3,0xf2\n"
	".irp i,0,1,2,3,4,5,6,7\n"
	".balign 32\n"
	"endbr64\n"
	"movdqu (%rdi), %xmm0\n"
	"movdqu (%rsi), %xmm1\n"
	"ldmxcsr (%rdx)\n"
	".if \\p\n"
	".byte \\p\n"
	".endif\n"
	".byte 0x0f, 0xc2, 0xc1, \\i\n"
	"stmxcsr (%rdx)\n"
	"movdqu %xmm0, (%rdi)\n"
	"ret\n"
	".endr\n"
	".endr\n"
	".size kap_soft_cmp_stubs, . - kap_soft_cmp_stubs\n"
	/* ROUNDPS/PD/SS/SD (66 0F 3A 08-0B) by imm8[3:0]: index (op - 8) * 16 + imm. */
	".balign 32\n"
	".globl kap_soft_round_stubs\n"
	".hidden kap_soft_round_stubs\n"
	".type kap_soft_round_stubs, @function\n"
	"kap_soft_round_stubs:\n"
	".irp o,8,9,10,11\n"
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	".balign 32\n"
	"endbr64\n"
	"movdqu (%rdi), %xmm0\n"
	"movdqu (%rsi), %xmm1\n"
	"ldmxcsr (%rdx)\n"
	".byte 0x66, 0x0f, 0x3a, \\o, 0xc1, \\i\n"
	"stmxcsr (%rdx)\n"
	"movdqu %xmm0, (%rdi)\n"
	"ret\n"
	".endr\n"
	".endr\n"
	".size kap_soft_round_stubs, . - kap_soft_round_stubs\n"
	/* CVT(T)SS2SI, CVT(T)SD2SI to a 32- or 64-bit register: index sel2 * 4 + t * 2 + w
	 * (sel2 0 F3, 1 F2; t 1 truncating; w 1 REX.W). rdi: the source, rdx: MXCSR. */
	".balign 32\n"
	".globl kap_soft_cvt2si_stubs\n"
	".hidden kap_soft_cvt2si_stubs\n"
	".type kap_soft_cvt2si_stubs, @function\n"
	"kap_soft_cvt2si_stubs:\n"
	".irp p,0xf3,0xf2\n"
	".irp o,0x2d,0x2c\n"
	".irp w,0x40,0x48\n"
	".balign 32\n"
	"endbr64\n"
	"movdqu (%rdi), %xmm0\n"
	"ldmxcsr (%rdx)\n"
	".byte \\p, \\w, 0x0f, \\o, 0xc0\n"
	"stmxcsr (%rdx)\n"
	"ret\n"
	".endr\n"
	".endr\n"
	".endr\n"
	".size kap_soft_cvt2si_stubs, . - kap_soft_cvt2si_stubs\n"
	/* CVTSI2SS, CVTSI2SD from a 32- or 64-bit integer: index sel2 * 2 + w; rdi: the
	 * destination (updated), rsi: the integer, rdx: MXCSR. */
	".balign 32\n"
	".globl kap_soft_cvtsi2_stubs\n"
	".hidden kap_soft_cvtsi2_stubs\n"
	".type kap_soft_cvtsi2_stubs, @function\n"
	"kap_soft_cvtsi2_stubs:\n"
	".irp p,0xf3,0xf2\n"
	".irp w,0x40,0x48\n"
	".balign 32\n"
	"endbr64\n"
	"movdqu (%rdi), %xmm0\n"
	"ldmxcsr (%rdx)\n"
	".byte \\p, \\w, 0x0f, 0x2a, 0xc6\n"
	"stmxcsr (%rdx)\n"
	"movdqu %xmm0, (%rdi)\n"
	"ret\n"
	".endr\n"
	".endr\n"
	".size kap_soft_cvtsi2_stubs, . - kap_soft_cvtsi2_stubs\n"
	/* The MMX-SSE conversions: index sel * 3 + (op 2A: 0, 2C: 1, 2D: 2), sel 0 none, 1 66.
	 * 2A CVTPI2PS/PD xmm0, mm1: rdi the XMM destination (updated), rsi the 8-byte source.
	 * 2C/2D CVT(T)PS2PI/PD2PI mm0, xmm1: rdi the 8-byte destination, rsi the XMM source.
	 * EMMS at the end: kapsel's own code expects an empty x87 stack. */
	".macro KAP_PIMIX_STUB pfx, op\n"
	".balign 32\n"
	"0:\n"
	"endbr64\n"
	".if \\op == 0x2a\n"
	"movdqu (%rdi), %xmm0\n"
	"movq (%rsi), %mm1\n"
	".else\n"
	"movdqu (%rsi), %xmm1\n"
	".endif\n"
	"ldmxcsr (%rdx)\n"
	".if \\pfx\n"
	".byte \\pfx\n"
	".endif\n"
	".byte 0x0f, \\op, 0xc1\n"
	"stmxcsr (%rdx)\n"
	".if \\op == 0x2a\n"
	"movdqu %xmm0, (%rdi)\n"
	".else\n"
	"movq %mm0, (%rdi)\n"
	".endif\n"
	"emms\n"
	"ret\n"
	".org 0b + 32\n"
	".endm\n"
	".balign 32\n"
	".globl kap_soft_pimix_stubs\n"
	".hidden kap_soft_pimix_stubs\n"
	".type kap_soft_pimix_stubs, @function\n"
	"kap_soft_pimix_stubs:\n"
	".irp p,0,0x66\n"
	".irp o,0x2a,0x2c,0x2d\n"
	"KAP_PIMIX_STUB \\p, \\o\n"
	".endr\n"
	".endr\n"
	".size kap_soft_pimix_stubs, . - kap_soft_pimix_stubs\n"
	/* 66 0F 3A 40 DPPS, 41 DPPD, 42 MPSADBW xmm0, xmm1, imm8: index (op - 0x40) * 256 + imm. */
	".macro KAP_DP_STUB op, imm\n"
	".balign 32\n"
	"0:\n"
	"endbr64\n"
	"movdqu (%rdi), %xmm0\n"
	"movdqu (%rsi), %xmm1\n"
	"ldmxcsr (%rdx)\n"
	".byte 0x66, 0x0f, 0x3a, \\op, 0xc1, \\imm\n"
	"stmxcsr (%rdx)\n"
	"movdqu %xmm0, (%rdi)\n"
	"ret\n"
	".org 0b + 32\n"
	".endm\n"
	".balign 32\n"
	".globl kap_soft_dp_stubs\n"
	".hidden kap_soft_dp_stubs\n"
	".type kap_soft_dp_stubs, @function\n"
	"kap_soft_dp_stubs:\n"
	".irp o,0x40,0x41,0x42\n"
	".irp a,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	".irp b,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	"KAP_DP_STUB \\o, (\\a << 4) | \\b\n"
	".endr\n"
	".endr\n"
	".endr\n"
	".size kap_soft_dp_stubs, . - kap_soft_dp_stubs\n"
	".purgem KAP_PIMIX_STUB\n"
	".purgem KAP_DP_STUB\n"
	".purgem KAP_SSE_STUB\n"
	".purgem KAP_MMX_STUB\n"
	".purgem KAP_SSE_MAP\n"
	".popsection\n");

extern const char kap_soft_sse_stubs[], kap_soft_mmx_stubs[], kap_soft_cmp_stubs[],
    kap_soft_round_stubs[], kap_soft_cvt2si_stubs[], kap_soft_cvtsi2_stubs[],
    kap_soft_pimix_stubs[], kap_soft_dp_stubs[];
typedef uint64_t (*sse_stub)(void *dst, const void *src, uint32_t *mxcsr);

static sse_stub stub_at(const char *base, unsigned int i)
{
	return (sse_stub)(uintptr_t)(base + 32 * i);
}

/* ---- what each opcode is ---- */

/* The mandatory prefix: 0 none, 1 66, 2 F3, 3 F2 (F2/F3 win over 66). */
static unsigned int psel(const struct kap_soft_insn *d)
{
	if (d->pfx & KAP_SOFT_PFX_REPNE)
		return 3;
	if (d->pfx & KAP_SOFT_PFX_REP)
		return 2;
	return (d->pfx & KAP_SOFT_PFX_OPSIZE) ? 1 : 0;
}

/*
 * Opcodes that run on a stub: per map (0F, 0F 38) and prefix, the memory operand size (16
 * with alignment checked, 'U' 16 unaligned, else the byte count) or 0: not a stub op. For
 * prefix 0 the 0F 60-FF and 0F 38 rows are MMX (8-byte operands, no alignment).
 */
enum { A16 = 16, MMX8 = 0x80 };

static unsigned int stub_msize(unsigned int map38, unsigned int sel, unsigned int op)
{
	if (!map38) {
		switch (sel) {
		case 0:
			if (op >= 0x51 && op <= 0x5f && op != 0x5a)
				return A16;
			if (op == 0x5a)
				return 8; /* CVTPS2PD m64 */
			if (op == 0x14 || op == 0x15)
				return A16;
			if (op == 0x2e || op == 0x2f)
				return 4;
			if ((op >= 0x60 && op <= 0x6b) || (op >= 0x74 && op <= 0x76) ||
			    (op >= 0xd1 && op <= 0xd5) || (op >= 0xd8 && op <= 0xdf) ||
			    (op >= 0xe0 && op <= 0xe5) || (op >= 0xe8 && op <= 0xef) ||
			    (op >= 0xf1 && op <= 0xf6) || (op >= 0xf8 && op <= 0xfe))
				return MMX8 | (op >= 0x60 && op <= 0x62 ? 4 : 8);
			return 0;
		case 1:
			if (op >= 0x51 && op <= 0x5f && op != 0x52 && op != 0x53)
				return A16;
			if (op == 0x14 || op == 0x15 || op == 0x7c || op == 0x7d || op == 0xd0 ||
			    op == 0xe6)
				return A16;
			if (op == 0x2e || op == 0x2f)
				return 8;
			if ((op >= 0x60 && op <= 0x6d) || (op >= 0x74 && op <= 0x76) ||
			    (op >= 0xd1 && op <= 0xd5) || (op >= 0xd8 && op <= 0xdf) ||
			    (op >= 0xe0 && op <= 0xe5) || (op >= 0xe8 && op <= 0xef) ||
			    (op >= 0xf1 && op <= 0xf6) || (op >= 0xf8 && op <= 0xfe))
				return A16;
			return 0;
		case 2:
			if ((op >= 0x51 && op <= 0x53) || (op >= 0x58 && op <= 0x5a) ||
			    (op >= 0x5c && op <= 0x5f))
				return 4;
			if (op == 0x5b || op == 0x12 || op == 0x16)
				return A16;
			if (op == 0xe6)
				return 8; /* CVTDQ2PD m64 */
			return 0;
		default:
			if (op == 0x51 || (op >= 0x58 && op <= 0x5a) || (op >= 0x5c && op <= 0x5f))
				return 8;
			if (op == 0x12)
				return 8; /* MOVDDUP m64 */
			if (op == 0x7c || op == 0x7d || op == 0xd0 || op == 0xe6)
				return A16;
			return 0;
		}
	}
	switch (sel) {
	case 0: /* SSSE3 on MMX registers */
		if (op <= 0x0b || (op >= 0x1c && op <= 0x1e))
			return MMX8 | 8;
		return 0;
	case 1:
		if (op <= 0x0b || (op >= 0x1c && op <= 0x1e) || op == 0x17 || op == 0x28 ||
		    op == 0x29 || op == 0x2b || op == 0x37 || (op >= 0x38 && op <= 0x41))
			return A16;
		if (op >= 0x20 && op <= 0x35 && (op & 0xf) <= 5 && op != 0x26 && op != 0x27 &&
		    (op < 0x26 || op >= 0x30)) {
			static const uint8_t sz[6] = {8, 4, 2, 8, 4, 8}; /* PMOVSX/ZX */
			return sz[op & 0xf];
		}
		return 0;
	default:
		return 0;
	}
}

/* ---- exceptions ---- */

/* SSE: #UD without CR4.OSFXSR or with CR0.EM, #NM with CR0.TS (SDM vol. 3 table 13-? §13.1). */
static void sse_enter(struct kap_soft_cpu *cpu)
{
	if ((cpu->cr0 & KAP_SOFT_CR0_EM) || !(cpu->cr4 & KAP_SOFT_CR4_OSFXSR))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	if (cpu->cr0 & KAP_SOFT_CR0_TS)
		kap_soft_raise(cpu, KAP_SOFT_XNM, 0, false);
}

/*
 * MMX: #UD with CR0.EM, #NM with CR0.TS, #MF for a pending x87 exception; then the x87
 * stack is as MMX leaves it: TOP 0, every register valid (SDM vol. 1 §9.5).
 */
static void mmx_enter(struct kap_soft_cpu *cpu)
{
	if (cpu->cr0 & KAP_SOFT_CR0_EM)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	if (cpu->cr0 & KAP_SOFT_CR0_TS)
		kap_soft_raise(cpu, KAP_SOFT_XNM, 0, false);
	if (cpu->fpu.fsw & 0x80)
		kap_soft_raise(cpu, KAP_SOFT_XMF, 0, false);
	struct kap_soft_fxsave *f = &cpu->fpu;
	unsigned int top = (f->fsw >> 11) & 7;
	if (top) {
		__typeof__(f->st) old;
		memcpy(old, f->st, sizeof(old));
		for (unsigned int p = 0; p < 8; p++)
			f->st[p] = old[(p - top) & 7];
		f->fsw &= (uint16_t)~0x3800;
	}
	f->ftw = 0xff;
}

static uint64_t mm_get(struct kap_soft_cpu *cpu, unsigned int i)
{
	return cpu->fpu.st[i & 7].mant;
}

static void mm_set(struct kap_soft_cpu *cpu, unsigned int i, uint64_t v)
{
	cpu->fpu.st[i & 7].mant = v;
	cpu->fpu.st[i & 7].se = 0xffff;
	memset(cpu->fpu.st[i & 7].rsvd, 0, sizeof(cpu->fpu.st[i & 7].rsvd));
}

/*
 * MXCSR for a host run: the guest's rounding, DAZ and FTZ with every exception masked and no
 * flags. Afterwards: the flags raised go to the guest's MXCSR; an unmasked one is #XM (or #UD
 * without CR4.OSXMMEXCPT) and the result is dropped (returns false never: it raises).
 */
static uint32_t mx_in(const struct kap_soft_cpu *cpu)
{
	return (cpu->fpu.mxcsr & ~0x3fu) | 0x1f80;
}

static void mx_out(struct kap_soft_cpu *cpu, uint32_t mx)
{
	unsigned int raised = mx & 0x3f;
	cpu->fpu.mxcsr |= raised;
	if (raised & ~(cpu->fpu.mxcsr >> 7) & 0x3f)
		kap_soft_raise(cpu,
			       (cpu->cr4 & KAP_SOFT_CR4_OSXMMEXCPT) ? KAP_SOFT_XXM : KAP_SOFT_XUD,
			       0, false);
}

/* The host's own MXCSR around a stub (kapsel's code keeps its defaults). */
static uint32_t host_mx_save(void)
{
	uint32_t m;
	__asm__ volatile("stmxcsr %0" : "=m"(m));
	return m;
}

static void host_mx_restore(uint32_t m)
{
	__asm__ volatile("ldmxcsr %0" : : "m"(m));
}

/* ---- operands ---- */

/* The linear address of a memory operand (for alignment checks). */
static uint64_t lin_of(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off)
{
	return (cpu->mode == 8 && seg < KAP_SOFT_FS) ? off : cpu->seg[seg].base + off;
}

/* 16-byte operands of the legacy SSE forms are aligned unless the instruction says (§4.1.1). */
static void xmm_read_mem(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, void *out,
			 unsigned int n, bool aligned)
{
	uint64_t off = ea(cpu, d);
	unsigned int seg = ea_seg(d);
	if (aligned && n == 16 && (lin_of(cpu, seg, off) & 15))
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
	kap_soft_read_buf(cpu, seg, off, out, n);
}

static void xmm_write_mem(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, const void *in,
			  unsigned int n, bool aligned)
{
	uint64_t off = ea(cpu, d);
	unsigned int seg = ea_seg(d);
	if (aligned && n == 16 && (lin_of(cpu, seg, off) & 15))
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
	kap_soft_write_buf(cpu, seg, off, in, n);
}

/* The source operand: register rm, or n bytes of memory zero-extended. */
static union kap_soft_xmm xmm_src(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d,
				  unsigned int n, bool aligned)
{
	union kap_soft_xmm v;
	if (d->mod == 3)
		return cpu->fpu.xmm[d->rm];
	memset(&v, 0, sizeof(v));
	xmm_read_mem(cpu, d, &v, n, aligned);
	return v;
}

static uint64_t mm_src(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, unsigned int n)
{
	if (d->mod == 3)
		return mm_get(cpu, d->rm);
	uint64_t v = 0;
	kap_soft_read_buf(cpu, ea_seg(d), ea(cpu, d), &v, n);
	return v;
}

static void put_flags6(struct kap_soft_cpu *cpu, uint64_t vals)
{
	uint64_t f = kap_soft_get_flags(cpu);
	kap_soft_set_flags(cpu, (f & ~KAP_SOFT_ARITH) | (vals & KAP_SOFT_ARITH));
}

/* ---- stub ops ---- */

static void x_stub(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), map38 = (d->op >> 8) == KAP_SOFT_MAP_0F38, op = d->op & 0xff;
	unsigned int ms = stub_msize(map38, sel, op);
	if (ms & MMX8) {
		mmx_enter(cpu);
		uint64_t dst = mm_get(cpu, d->reg), src = mm_src(cpu, d, ms & 0x7f);
		stub_at(kap_soft_mmx_stubs, map38 * 256 + op)(&dst, &src, NULL);
		mm_set(cpu, d->reg, dst);
		return;
	}
	sse_enter(cpu);
	union kap_soft_xmm dst = cpu->fpu.xmm[d->reg];
	union kap_soft_xmm src = xmm_src(cpu, d, ms, ms == A16);
	uint32_t mx = mx_in(cpu), host = host_mx_save();
	uint64_t fl = stub_at(kap_soft_sse_stubs, (sel * 2 + map38) * 256 + op)(&dst, &src, &mx);
	host_mx_restore(host);
	mx_out(cpu, mx);
	cpu->fpu.xmm[d->reg] = dst;
	if (!map38 && (op == 0x2e || op == 0x2f))
		put_flags6(cpu, fl & (KAP_SOFT_ZF | KAP_SOFT_PF | KAP_SOFT_CF));
	else if (map38 && op == 0x17)
		put_flags6(cpu, fl & (KAP_SOFT_ZF | KAP_SOFT_CF));
}

/* 0F C2 CMPccPS/PD/SS/SD imm8 (predicates 0-7; SSE has no more). */
static void x_cmp(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	sse_enter(cpu);
	unsigned int sel = psel(d);
	if (d->imm > 7)
		kap_soft_unimplemented(cpu, d);
	unsigned int n = sel == 2 ? 4 : sel == 3 ? 8 : 16;
	union kap_soft_xmm dst = cpu->fpu.xmm[d->reg], src = xmm_src(cpu, d, n, n == 16);
	uint32_t mx = mx_in(cpu), host = host_mx_save();
	stub_at(kap_soft_cmp_stubs, sel * 8 + (unsigned int)d->imm)(&dst, &src, &mx);
	host_mx_restore(host);
	mx_out(cpu, mx);
	cpu->fpu.xmm[d->reg] = dst;
}

/* 66 0F 3A 08-0B ROUNDPS/PD/SS/SD imm8. */
static void x_round(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	sse_enter(cpu);
	unsigned int op = d->op & 0xff;
	unsigned int n = op == 0x0a ? 4 : op == 0x0b ? 8 : 16;
	union kap_soft_xmm dst = cpu->fpu.xmm[d->reg], src = xmm_src(cpu, d, n, n == 16);
	uint32_t mx = mx_in(cpu), host = host_mx_save();
	stub_at(kap_soft_round_stubs, (op - 8) * 16 + ((unsigned int)d->imm & 15))(&dst, &src, &mx);
	host_mx_restore(host);
	mx_out(cpu, mx);
	cpu->fpu.xmm[d->reg] = dst;
}

/*
 * The MMX forms: 0F 2A CVTPI2PS, 66 0F 2A CVTPI2PD (xmm, mm/m64); 0F 2C CVTTPS2PI, 0F 2D
 * CVTPS2PI (mm, xmm/m64); 66 0F 2C CVTTPD2PI, 66 0F 2D CVTPD2PI (mm, xmm/m128, aligned). An
 * MMX register operand makes the x87 unit go over to MMX (TOP 0, all tags valid, a pending x87
 * exception first as #MF); CVTPI2PS/PD from memory do not (SDM vol. 2, CVTPI2PS, CVTPI2PD).
 */
static void cvt_pi(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, unsigned int sel,
		   unsigned int op)
{
	unsigned int idx = sel * 3 + (op == 0x2a ? 0 : op == 0x2c ? 1 : 2);
	uint32_t mx = mx_in(cpu), host;
	if (op == 0x2a) {
		if (d->mod == 3)
			mmx_enter(cpu);
		uint64_t src = mm_src(cpu, d, 8);
		union kap_soft_xmm dst = cpu->fpu.xmm[d->reg];
		host = host_mx_save();
		stub_at(kap_soft_pimix_stubs, idx)(&dst, &src, &mx);
		host_mx_restore(host);
		mx_out(cpu, mx);
		cpu->fpu.xmm[d->reg] = dst;
		return;
	}
	mmx_enter(cpu);
	union kap_soft_xmm src = xmm_src(cpu, d, sel ? 16 : 8, sel != 0);
	uint64_t dst = 0;
	host = host_mx_save();
	stub_at(kap_soft_pimix_stubs, idx)(&dst, &src, &mx);
	host_mx_restore(host);
	mx_out(cpu, mx);
	mm_set(cpu, d->reg, dst);
}

/* 66 0F 3A 40 DPPS, 41 DPPD, 42 MPSADBW xmm, xmm/m128 (aligned), imm8: on the host. */
static void x_dp(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	sse_enter(cpu);
	unsigned int op = d->op & 0xff;
	union kap_soft_xmm dst = cpu->fpu.xmm[d->reg], src = xmm_src(cpu, d, 16, true);
	uint32_t mx = mx_in(cpu), host = host_mx_save();
	stub_at(kap_soft_dp_stubs, (op - 0x40) * 256 + ((unsigned int)d->imm & 0xff))(&dst, &src,
										      &mx);
	host_mx_restore(host);
	mx_out(cpu, mx);
	cpu->fpu.xmm[d->reg] = dst;
}

/* F3/F2 0F 2A CVTSI2SS/SD, 2C CVTTSS2SI/CVTTSD2SI, 2D CVTSS2SI/CVTSD2SI. */
static void x_cvt_int(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	sse_enter(cpu);
	unsigned int sel = psel(d), op = d->op & 0xff, w = d->osize == 8;
	if (sel < 2) {
		cvt_pi(cpu, d, sel, op);
		return;
	}
	uint32_t mx = mx_in(cpu), host;
	if (op == 0x2a) {
		uint64_t v = get_rm(cpu, d, w ? 8 : 4);
		union kap_soft_xmm dst = cpu->fpu.xmm[d->reg];
		uint64_t (*f)(void *, uint64_t, uint32_t *) =
		    (uint64_t(*)(void *, uint64_t, uint32_t *))(
			uintptr_t)(kap_soft_cvtsi2_stubs + 32 * ((sel - 2) * 2 + w));
		host = host_mx_save();
		f(&dst, v, &mx);
		host_mx_restore(host);
		mx_out(cpu, mx);
		cpu->fpu.xmm[d->reg] = dst;
		return;
	}
	union kap_soft_xmm src = xmm_src(cpu, d, sel == 2 ? 4 : 8, false);
	host = host_mx_save();
	uint64_t r =
	    stub_at(kap_soft_cvt2si_stubs, (sel - 2) * 4 + (op == 0x2c) * 2 + w)(&src, NULL, &mx);
	host_mx_restore(host);
	mx_out(cpu, mx);
	set_reg(cpu, d, d->reg, w ? 8 : 4, r);
}

/* ---- moves ---- */

static void x_mov(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), op = d->op & 0xff;
	struct kap_soft_fxsave *f = &cpu->fpu;
	if (sel == 0 && (op == 0x6e || op == 0x7e || op == 0x6f || op == 0x7f || op == 0xe7)) {
		mmx_enter(cpu);
		switch (op) {
		case 0x6e: /* MOVD/MOVQ mm, r/m */
			mm_set(cpu, d->reg, get_rm(cpu, d, d->osize == 8 ? 8 : 4));
			return;
		case 0x7e:
			set_rm(cpu, d, d->osize == 8 ? 8 : 4, mm_get(cpu, d->reg));
			return;
		case 0x6f:
			mm_set(cpu, d->reg, mm_src(cpu, d, 8));
			return;
		default: /* 7F MOVQ mm/m64, mm; E7 MOVNTQ */
			if (d->mod == 3) {
				if (op == 0xe7)
					kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
				mm_set(cpu, d->rm, mm_get(cpu, d->reg));
			} else {
				uint64_t v = mm_get(cpu, d->reg);
				kap_soft_write_buf(cpu, ea_seg(d), ea(cpu, d), &v, 8);
			}
			return;
		}
	}
	sse_enter(cpu);
	union kap_soft_xmm *x = &f->xmm[d->reg], v;
	switch (op) {
	case 0x10: /* MOVUPS MOVUPD MOVSS MOVSD */
	case 0x28: /* MOVAPS MOVAPD */
	case 0x6f: /* MOVDQA MOVDQU */
		if (op == 0x10 && sel >= 2) {
			unsigned int n = sel == 2 ? 4 : 8;
			v = xmm_src(cpu, d, n, false);
			if (d->mod == 3)
				memcpy(x, &v, n); /* register form: the rest stays */
			else
				*x = v; /* memory form: zero-extended */
			return;
		}
		if ((op == 0x28 && sel > 1) || (op == 0x6f && sel == 3))
			kap_soft_unimplemented(cpu, d);
		*x = xmm_src(cpu, d, 16, op == 0x28 || (op == 0x6f && sel == 1));
		return;
	case 0x11:
	case 0x29:
	case 0x7f:
	case 0x2b: /* MOVNTPS MOVNTPD */
	case 0xe7: /* MOVNTDQ */
		if (op == 0x11 && sel >= 2) {
			unsigned int n = sel == 2 ? 4 : 8;
			if (d->mod == 3)
				memcpy(&f->xmm[d->rm], x, n);
			else
				xmm_write_mem(cpu, d, x, n, false);
			return;
		}
		if (((op == 0x29 || op == 0x2b) && sel > 1) || (op == 0x7f && sel == 3) ||
		    (op == 0xe7 && sel != 1) || (op == 0x7f && sel == 0))
			kap_soft_unimplemented(cpu, d);
		if (d->mod == 3) {
			if (op == 0x2b || op == 0xe7)
				kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
			f->xmm[d->rm] = *x;
		} else {
			xmm_write_mem(cpu, d, x, 16, !(op == 0x11 || (op == 0x7f && sel == 2)));
		}
		return;
	case 0x12: /* MOVLPS/MOVLPD m64; MOVHLPS */
	case 0x16: /* MOVHPS/MOVHPD m64; MOVLHPS */
		if (sel > 1)
			kap_soft_unimplemented(cpu, d);
		if (d->mod == 3) {
			if (sel == 1)
				kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
			if (op == 0x12)
				x->q[0] = f->xmm[d->rm].q[1];
			else
				x->q[1] = f->xmm[d->rm].q[0];
			return;
		}
		v = xmm_src(cpu, d, 8, false);
		x->q[op == 0x12 ? 0 : 1] = v.q[0];
		return;
	case 0x13:
	case 0x17:
		if (sel > 1 || d->mod == 3)
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		xmm_write_mem(cpu, d, &x->q[op == 0x13 ? 0 : 1], 8, false);
		return;
	case 0x6e: /* 66 MOVD/MOVQ xmm, r/m */
		if (sel != 1)
			kap_soft_unimplemented(cpu, d);
		memset(x, 0, sizeof(*x));
		x->q[0] = get_rm(cpu, d, d->osize == 8 ? 8 : 4);
		return;
	case 0x7e:
		if (sel == 1) { /* MOVD/MOVQ r/m, xmm */
			set_rm(cpu, d, d->osize == 8 ? 8 : 4, x->q[0]);
			return;
		}
		if (sel == 2) { /* MOVQ xmm, xmm/m64 */
			v = xmm_src(cpu, d, 8, false);
			x->q[0] = v.q[0];
			x->q[1] = 0;
			return;
		}
		kap_soft_unimplemented(cpu, d);
	case 0xd6:
		if (sel == 1) { /* MOVQ xmm/m64, xmm */
			if (d->mod == 3) {
				f->xmm[d->rm].q[0] = x->q[0];
				f->xmm[d->rm].q[1] = 0;
			} else {
				xmm_write_mem(cpu, d, &x->q[0], 8, false);
			}
			return;
		}
		if (d->mod != 3)
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		mmx_enter(cpu);
		if (sel == 2) { /* MOVQ2DQ xmm, mm */
			f->xmm[d->reg].q[0] = mm_get(cpu, d->rm);
			f->xmm[d->reg].q[1] = 0;
		} else if (sel == 3) { /* MOVDQ2Q mm, xmm */
			mm_set(cpu, d->reg, f->xmm[d->rm].q[0]);
		} else {
			kap_soft_unimplemented(cpu, d);
		}
		return;
	case 0xf0: /* F2 LDDQU */
		if (sel != 3 || d->mod == 3)
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		*x = xmm_src(cpu, d, 16, false);
		return;
	case 0x2a: /* 66 0F 38 2A MOVNTDQA */
		if (d->mod == 3)
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		*x = xmm_src(cpu, d, 16, true);
		return;
	}
	kap_soft_unimplemented(cpu, d);
}

/* ---- written-out operations ---- */

/* 0F 50 MOVMSKPS/PD, 0F D7 PMOVMSKB (xmm or mm) to a register. */
static void x_movmsk(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), op = d->op & 0xff;
	if (d->mod != 3 || sel > 1)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	uint64_t r = 0;
	if (op == 0xd7 && sel == 0) {
		mmx_enter(cpu);
		uint64_t v = mm_get(cpu, d->rm);
		for (unsigned int i = 0; i < 8; i++)
			r |= ((v >> (8 * i + 7)) & 1) << i;
	} else {
		sse_enter(cpu);
		const union kap_soft_xmm *x = &cpu->fpu.xmm[d->rm];
		if (op == 0xd7) {
			for (unsigned int i = 0; i < 16; i++)
				r |= (uint64_t)(x->b[i] >> 7) << i;
		} else if (sel == 0) {
			for (unsigned int i = 0; i < 4; i++)
				r |= (uint64_t)(x->d[i] >> 31) << i;
		} else {
			for (unsigned int i = 0; i < 2; i++)
				r |= (x->q[i] >> 63) << i;
		}
	}
	set_reg(cpu, d, d->reg, d->osize == 8 ? 8 : 4, r);
}

/* 0F 70 PSHUFW / PSHUFD / PSHUFHW / PSHUFLW. */
static void x_pshuf(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), imm = (unsigned int)d->imm;
	if (sel == 0) {
		mmx_enter(cpu);
		uint64_t s = mm_src(cpu, d, 8), r = 0;
		for (unsigned int i = 0; i < 4; i++)
			r |= ((s >> (16 * ((imm >> (2 * i)) & 3))) & 0xffff) << (16 * i);
		mm_set(cpu, d->reg, r);
		return;
	}
	sse_enter(cpu);
	union kap_soft_xmm s = xmm_src(cpu, d, 16, true), r = s;
	if (sel == 1) {
		for (unsigned int i = 0; i < 4; i++)
			r.d[i] = s.d[(imm >> (2 * i)) & 3];
	} else {
		unsigned int base = sel == 2 ? 4 : 0;
		for (unsigned int i = 0; i < 4; i++)
			r.w[base + i] = s.w[base + ((imm >> (2 * i)) & 3)];
	}
	cpu->fpu.xmm[d->reg] = r;
}

/* Packed shifts of n-byte lanes by count (logical right, arithmetic right, left). */
static void shift_lanes(uint8_t *v, unsigned int bytes, unsigned int n, unsigned int kind,
			uint64_t count)
{
	for (unsigned int i = 0; i < bytes; i += n) {
		uint64_t x = 0;
		memcpy(&x, v + i, n);
		unsigned int bits = 8 * n;
		if (kind == 0)
			x = count >= bits ? 0 : x >> count;
		else if (kind == 1)
			x = (uint64_t)(sext(x, n) >> (count >= bits ? bits - 1 : count)) &
			    mask_of(n);
		else
			x = count >= bits ? 0 : (x << count) & mask_of(n);
		memcpy(v + i, &x, n);
	}
}

/* 0F 71/72/73 /2 /4 /6 PSRLx PSRAx PSLLx imm8; 66 0F 73 /3 PSRLDQ, /7 PSLLDQ. */
static void x_shift_imm(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), op = d->op & 0xff, r = d->reg & 7, imm = (unsigned int)d->imm;
	unsigned int n = op == 0x71 ? 2 : op == 0x72 ? 4 : 8;
	unsigned int kind = r == 2 ? 0 : r == 4 ? 1 : r == 6 ? 2 : 3;
	if (d->mod != 3 || sel > 1 || (r == 4 && op == 0x73) ||
	    (kind == 3 && !(op == 0x73 && sel == 1 && (r == 3 || r == 7))))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	if (sel == 0) {
		mmx_enter(cpu);
		uint64_t v = mm_get(cpu, d->rm);
		shift_lanes((uint8_t *)&v, 8, n, kind, imm);
		mm_set(cpu, d->rm, v);
		return;
	}
	sse_enter(cpu);
	union kap_soft_xmm *x = &cpu->fpu.xmm[d->rm];
	if (kind == 3) {
		union kap_soft_xmm t;
		memset(&t, 0, sizeof(t));
		unsigned int k = imm > 16 ? 16 : imm;
		if (r == 3)
			memcpy(t.b, x->b + k, 16 - k);
		else
			memcpy(t.b + k, x->b, 16 - k);
		*x = t;
		return;
	}
	shift_lanes(x->b, 16, n, kind, imm);
}

/* 0F C6 SHUFPS / 66 SHUFPD. */
static void x_shufp(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), imm = (unsigned int)d->imm;
	if (sel > 1)
		kap_soft_unimplemented(cpu, d);
	sse_enter(cpu);
	union kap_soft_xmm a = cpu->fpu.xmm[d->reg], b = xmm_src(cpu, d, 16, true), r;
	if (sel == 0) {
		r.d[0] = a.d[imm & 3];
		r.d[1] = a.d[(imm >> 2) & 3];
		r.d[2] = b.d[(imm >> 4) & 3];
		r.d[3] = b.d[(imm >> 6) & 3];
	} else {
		r.q[0] = a.q[imm & 1];
		r.q[1] = b.q[(imm >> 1) & 1];
	}
	cpu->fpu.xmm[d->reg] = r;
}

/* 0F C4 PINSRW, 0F C5 PEXTRW (mm or xmm). */
static void x_pinsrw(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), op = d->op & 0xff, imm = (unsigned int)d->imm;
	if (sel > 1 || (op == 0xc5 && d->mod != 3))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	if (sel == 0) {
		mmx_enter(cpu);
		if (op == 0xc5) {
			set_reg(cpu, d, d->reg, d->osize == 8 ? 8 : 4,
				(mm_get(cpu, d->rm) >> (16 * (imm & 3))) & 0xffff);
			return;
		}
		uint64_t v = mm_get(cpu, d->reg), w = get_rm(cpu, d, 2);
		v = (v & ~(0xffffULL << (16 * (imm & 3)))) | (w << (16 * (imm & 3)));
		mm_set(cpu, d->reg, v);
		return;
	}
	sse_enter(cpu);
	if (op == 0xc5) {
		set_reg(cpu, d, d->reg, d->osize == 8 ? 8 : 4, cpu->fpu.xmm[d->rm].w[imm & 7]);
		return;
	}
	cpu->fpu.xmm[d->reg].w[imm & 7] = (uint16_t)get_rm(cpu, d, 2);
}

/* 0F 77 EMMS: every x87 register empty. */
static void x_emms(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (psel(d) != 0)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	mmx_enter(cpu);
	cpu->fpu.ftw = 0;
}

/* 0F F7 MASKMOVQ / 66 MASKMOVDQU: bytes with the mask's top bit to DS:rDI. */
static void x_maskmov(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), n = sel == 1 ? 16 : 8;
	if (d->mod != 3 || sel > 1)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	uint8_t v[16], m[16];
	if (sel == 0) {
		mmx_enter(cpu);
		uint64_t a = mm_get(cpu, d->reg), b = mm_get(cpu, d->rm);
		memcpy(v, &a, 8);
		memcpy(m, &b, 8);
	} else {
		sse_enter(cpu);
		memcpy(v, cpu->fpu.xmm[d->reg].b, 16);
		memcpy(m, cpu->fpu.xmm[d->rm].b, 16);
	}
	unsigned int seg = d->seg == KAP_SOFT_SEG_NONE ? KAP_SOFT_DS : d->seg;
	uint64_t di = cpu->r[7] & mask_of(d->asize);
	for (unsigned int i = 0; i < n; i++)
		if (m[i] & 0x80)
			kap_soft_write(cpu, seg, (di + i) & mask_of(d->asize), 1, v[i]);
}

/* 0F 3A 0F PALIGNR (mm or xmm). */
static void x_palignr(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int sel = psel(d), imm = (unsigned int)d->imm;
	uint8_t t[64] = {0};
	if (sel == 0) {
		mmx_enter(cpu);
		uint64_t a = mm_get(cpu, d->reg), b = mm_src(cpu, d, 8), r;
		memcpy(t, &b, 8);
		memcpy(t + 8, &a, 8);
		memcpy(&r, t + (imm > 16 ? 16 : imm), 8);
		mm_set(cpu, d->reg, r);
		return;
	}
	if (sel != 1)
		kap_soft_unimplemented(cpu, d);
	sse_enter(cpu);
	union kap_soft_xmm b = xmm_src(cpu, d, 16, true);
	memcpy(t, b.b, 16);
	memcpy(t + 16, cpu->fpu.xmm[d->reg].b, 16);
	memcpy(cpu->fpu.xmm[d->reg].b, t + (imm > 32 ? 32 : imm), 16);
}

/* 66 0F 3A 0C BLENDPS, 0D BLENDPD, 0E PBLENDW; 66 0F 38 10 PBLENDVB, 14 BLENDVPS, 15 BLENDVPD. */
static void x_blend(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (psel(d) != 1)
		kap_soft_unimplemented(cpu, d);
	sse_enter(cpu);
	unsigned int op = d->op & 0xff;
	bool var = (d->op >> 8) == KAP_SOFT_MAP_0F38;
	union kap_soft_xmm *x = &cpu->fpu.xmm[d->reg], s = xmm_src(cpu, d, 16, true);
	const union kap_soft_xmm *m = &cpu->fpu.xmm[0];
	unsigned int imm = (unsigned int)d->imm;
	if (var ? op == 0x10 : op == 0x0e) {
		for (unsigned int i = 0; i < (var ? 16u : 8u); i++) {
			if (var && (m->b[i] & 0x80))
				x->b[i] = s.b[i];
			else if (!var && ((imm >> i) & 1))
				x->w[i] = s.w[i];
		}
	} else if (var ? op == 0x14 : op == 0x0c) {
		for (unsigned int i = 0; i < 4; i++)
			if (var ? (m->d[i] >> 31) : ((imm >> i) & 1))
				x->d[i] = s.d[i];
	} else {
		for (unsigned int i = 0; i < 2; i++)
			if (var ? (m->q[i] >> 63) : ((imm >> i) & 1))
				x->q[i] = s.q[i];
	}
}

/* 66 0F 3A 14 PEXTRB, 15 PEXTRW, 16 PEXTRD/Q, 17 EXTRACTPS; 20 PINSRB, 21 INSERTPS, 22 PINSRD/Q. */
static void x_extr_ins(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (psel(d) != 1)
		kap_soft_unimplemented(cpu, d);
	sse_enter(cpu);
	unsigned int op = d->op & 0xff, imm = (unsigned int)d->imm;
	union kap_soft_xmm *x = &cpu->fpu.xmm[d->reg];
	bool w = d->osize == 8;
	switch (op) {
	case 0x14:
		set_rm(cpu, d, d->mod == 3 ? 4 : 1, x->b[imm & 15]);
		return;
	case 0x15:
		set_rm(cpu, d, d->mod == 3 ? 4 : 2, x->w[imm & 7]);
		return;
	case 0x16:
		if (w)
			set_rm(cpu, d, 8, x->q[imm & 1]);
		else
			set_rm(cpu, d, 4, x->d[imm & 3]);
		return;
	case 0x17:
		set_rm(cpu, d, 4, x->d[imm & 3]);
		return;
	case 0x20:
		x->b[imm & 15] = (uint8_t)get_rm(cpu, d, 1);
		return;
	case 0x21: {
		uint32_t v = d->mod == 3 ? cpu->fpu.xmm[d->rm].d[(imm >> 6) & 3]
					 : (uint32_t)kap_soft_read(cpu, ea_seg(d), ea(cpu, d), 4);
		x->d[(imm >> 4) & 3] = v;
		for (unsigned int i = 0; i < 4; i++)
			if ((imm >> i) & 1)
				x->d[i] = 0;
		return;
	}
	case 0x22:
		if (w)
			x->q[imm & 1] = get_rm(cpu, d, 8);
		else
			x->d[imm & 3] = (uint32_t)get_rm(cpu, d, 4);
		return;
	}
	kap_soft_unimplemented(cpu, d);
}

/*
 * 66 0F 3A 60-63 PCMPESTRM PCMPESTRI PCMPISTRM PCMPISTRI (SDM vol. 2 §4.1, "Programming with
 * the SSE4.2 string and text instructions"), written out.
 */
static int64_t str_elem(const union kap_soft_xmm *v, unsigned int i, unsigned int fmt)
{
	switch (fmt) {
	case 0:
		return v->b[i];
	case 1:
		return v->w[i];
	case 2:
		return v->sb[i];
	default:
		return v->sw[i];
	}
}

static void x_pcmpstr(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (psel(d) != 1)
		kap_soft_unimplemented(cpu, d);
	sse_enter(cpu);
	unsigned int op = d->op & 0xff, imm = (unsigned int)d->imm, fmt = imm & 3;
	unsigned int n = (imm & 1) ? 8 : 16, agg = (imm >> 2) & 3, pol = (imm >> 4) & 3;
	union kap_soft_xmm a = cpu->fpu.xmm[d->reg], b = xmm_src(cpu, d, 16, false);
	unsigned int la, lb;
	if (op <= 0x61) { /* explicit lengths in rAX and rDX, absolute values, saturated */
		int64_t ea_ = d->osize == 8 ? (int64_t)cpu->r[0] : (int32_t)cpu->r[0];
		int64_t ed = d->osize == 8 ? (int64_t)cpu->r[2] : (int32_t)cpu->r[2];
		uint64_t ua = ea_ < 0 ? -(uint64_t)ea_ : (uint64_t)ea_;
		uint64_t ub = ed < 0 ? -(uint64_t)ed : (uint64_t)ed;
		la = ua > n ? n : (unsigned int)ua;
		lb = ub > n ? n : (unsigned int)ub;
	} else {
		for (la = 0; la < n && str_elem(&a, la, fmt) != 0; la++)
			;
		for (lb = 0; lb < n && str_elem(&b, lb, fmt) != 0; lb++)
			;
	}
	unsigned int res = 0;
	for (unsigned int j = 0; j < n; j++) {
		bool bit = false, bv = j < lb;
		int64_t bj = str_elem(&b, j, fmt);
		switch (agg) {
		case 0: /* equal any */
			for (unsigned int i = 0; i < la && bv && !bit; i++)
				bit = str_elem(&a, i, fmt) == bj;
			break;
		case 1: /* ranges: pairs of valid elements of a */
			for (unsigned int i = 0; i + 1 < la && bv && !bit; i += 2)
				bit = str_elem(&a, i, fmt) <= bj && bj <= str_elem(&a, i + 1, fmt);
			break;
		case 2: /* equal each */
			if (j >= la && !bv)
				bit = true;
			else if (j < la && bv)
				bit = str_elem(&a, j, fmt) == bj;
			break;
		default: /* equal ordered */
			bit = true;
			for (unsigned int i = 0; i < n - j && bit; i++) {
				if (i >= la)
					break;
				if (j + i >= lb)
					bit = false;
				else
					bit = str_elem(&a, i, fmt) == str_elem(&b, j + i, fmt);
			}
			break;
		}
		res |= (unsigned int)bit << j;
	}
	unsigned int all = (1u << n) - 1;
	if (pol == 1)
		res ^= all;
	else if (pol == 3)
		res ^= (1u << lb) - 1;
	res &= all;
	uint64_t fl = (res ? KAP_SOFT_CF : 0) | (lb < n ? KAP_SOFT_ZF : 0) |
		      (la < n ? KAP_SOFT_SF : 0) | ((res & 1) ? KAP_SOFT_OF : 0);
	put_flags6(cpu, fl);
	if (op & 1) { /* index to ECX */
		unsigned int idx = n;
		if (res)
			idx = (imm & 0x40) ? 31 - (unsigned int)__builtin_clz(res)
					   : (unsigned int)__builtin_ctz(res);
		set_reg(cpu, d, 1, 4, idx);
		return;
	}
	union kap_soft_xmm m;
	memset(&m, 0, sizeof(m));
	if (!(imm & 0x40)) {
		m.d[0] = res;
	} else {
		for (unsigned int i = 0; i < n; i++) {
			if (!((res >> i) & 1))
				continue;
			if (n == 16)
				m.b[i] = 0xff;
			else
				m.w[i] = 0xffff;
		}
	}
	cpu->fpu.xmm[0] = m;
}

/* F3 0F B8 POPCNT, F3 0F BD LZCNT. */
static void x_bitcount(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = d->osize;
	uint64_t v = get_rm(cpu, d, n), r;
	if ((d->op & 0xff) == 0xb8) {
		r = (uint64_t)__builtin_popcountll(v);
		put_flags6(cpu, v == 0 ? KAP_SOFT_ZF : 0);
	} else {
		r = v == 0 ? 8 * n : (uint64_t)(__builtin_clzll(v) - (64 - 8 * (int)n));
		put_flags6(cpu, (v == 0 ? KAP_SOFT_CF : 0) | (r == 0 ? KAP_SOFT_ZF : 0));
	}
	set_reg(cpu, d, d->reg, n, r);
}

/* F2 0F 38 F0/F1 CRC32 (the Castagnoli polynomial, bit-reflected: SDM vol. 2, CRC32). */
static void x_crc32(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int n = (d->op & 0xff) == 0xf0 ? 1 : d->osize;
	uint64_t v = get_rm(cpu, d, n);
	uint32_t c = (uint32_t)cpu->r[d->reg];
	for (unsigned int i = 0; i < n; i++) {
		c ^= (uint8_t)(v >> (8 * i));
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
	}
	set_reg(cpu, d, d->reg, 4, c); /* the 64-bit form zero-extends too */
}

/* 0F C3 MOVNTI m32/m64, r. */
static void x_movnti(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (d->mod == 3 || psel(d) != 0)
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	set_rm(cpu, d, d->osize == 8 ? 8 : 4, get_reg(cpu, d, d->reg, d->osize == 8 ? 8 : 4));
}

/* ---- FXSAVE, FXRSTOR, LDMXCSR, STMXCSR (0F AE /0-/3) ---- */

static void fx_enter(struct kap_soft_cpu *cpu, bool mxcsr_op)
{
	if ((cpu->cr0 & KAP_SOFT_CR0_EM) || (mxcsr_op && !(cpu->cr4 & KAP_SOFT_CR4_OSFXSR)))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
	if (cpu->cr0 & KAP_SOFT_CR0_TS)
		kap_soft_raise(cpu, KAP_SOFT_XNM, 0, false);
}

void kap_soft_fxsave_grp(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int r = d->reg & 7, seg = ea_seg(d);
	uint64_t off = ea(cpu, d);
	struct kap_soft_fxsave *f = &cpu->fpu;
	if (psel(d) != 0)
		kap_soft_unimplemented(cpu, d);
	fx_enter(cpu, r >= 2);
	if (r == 2) {
		uint32_t v = (uint32_t)kap_soft_read(cpu, seg, off, 4);
		if (v & ~f->mxcsr_mask)
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
		f->mxcsr = v;
		return;
	}
	if (r == 3) {
		kap_soft_write(cpu, seg, off, 4, f->mxcsr);
		return;
	}
	if (lin_of(cpu, seg, off) & 15)
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
	bool w = d->osize == 8; /* FXSAVE64: 64-bit FIP/FDP; else 32-bit with FCS/FDS */
	unsigned int nx = cpu->mode == 8 ? 16 : 8;
	struct kap_soft_fxsave img;
	if (r == 0) {
		img = *f;
		if (!w) {
			uint32_t v[4] = {(uint32_t)f->fip, cpu->fcs, (uint32_t)f->fdp, cpu->fds};
			memcpy((uint8_t *)&img + 8, v, 16);
		}
		/* Outside 64-bit mode XMM8-15 are not saved: their bytes are written as zeros. */
		if (nx == 8)
			memset(&img.xmm[8], 0, 8 * sizeof(img.xmm[0]));
		memset(img.rsvd2, 0, sizeof(img.rsvd2));
		for (unsigned int i = 0; i < 8; i++)
			memset(img.st[i].rsvd, 0, sizeof(img.st[i].rsvd));
		/* Bytes 464-511 are the software's: FXSAVE leaves them alone (vol. 1 §10.5.1). */
		kap_soft_write_buf(cpu, seg, off, &img, 464);
		return;
	}
	kap_soft_read_buf(cpu, seg, off, &img, 512);
	if (img.mxcsr & ~f->mxcsr_mask)
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
	f->fcw = img.fcw;
	f->fsw = img.fsw;
	f->ftw = img.ftw;
	f->fop = img.fop & 0x7ff;
	if (w) {
		f->fip = img.fip;
		f->fdp = img.fdp;
	} else {
		uint32_t v[4];
		memcpy(v, (uint8_t *)&img + 8, 16);
		f->fip = v[0];
		cpu->fcs = (uint16_t)v[1];
		f->fdp = v[2];
		cpu->fds = (uint16_t)v[3];
	}
	f->mxcsr = img.mxcsr;
	for (unsigned int i = 0; i < 8; i++) {
		f->st[i].mant = img.st[i].mant;
		f->st[i].se = img.st[i].se;
	}
	memcpy(f->xmm, img.xmm, nx * sizeof(img.xmm[0]));
	/* ES and B follow the flags the image holds. */
	if (f->fsw & ~f->fcw & 0x3f)
		f->fsw |= 0x8080;
	else
		f->fsw &= (uint16_t)~0x8080;
}

/* CMPXCHG16B m128 (0F C7 /1 with REX.W): aligned, RDX:RAX against it, RCX:RBX in. */
void kap_soft_cmpxchg16b(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int seg = ea_seg(d);
	uint64_t off = ea(cpu, d);
	if (lin_of(cpu, seg, off) & 15)
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
	uint64_t f = kap_soft_get_flags(cpu) & ~KAP_SOFT_ZF;
	/* In RAM: the host's own LOCK CMPXCHG16B, atomic against every other vCPU (Linux's
	 * SLUB updates its freelist and counters pair with it). kap_soft_write_ptr checks the
	 * write permission first, as the CPU does even when the comparison fails. */
	uint8_t *p = kap_soft_write_ptr(cpu, seg, off, 16);
	if (p) {
		uint64_t lo = cpu->r[0], hi = cpu->r[2];
		bool ok;
		__asm__ volatile("lock cmpxchg16b %1"
				 : "=@ccz"(ok), "+m"(*(volatile __int128 *)(void *)p), "+a"(lo),
				   "+d"(hi)
				 : "b"(cpu->r[3]), "c"(cpu->r[1])
				 : "memory");
		if (ok) {
			f |= KAP_SOFT_ZF;
			kap_soft_stored(cpu, p);
		} else {
			cpu->r[0] = lo;
			cpu->r[2] = hi;
		}
		kap_soft_set_flags(cpu, f);
		return;
	}
	uint64_t v[2];
	kap_soft_read_buf(cpu, seg, off, v, 16);
	if (v[0] == cpu->r[0] && v[1] == cpu->r[2]) {
		uint64_t n[2] = {cpu->r[3], cpu->r[1]};
		kap_soft_write_buf(cpu, seg, off, n, 16);
		f |= KAP_SOFT_ZF;
	} else {
		kap_soft_write_buf(cpu, seg, off, v, 16); /* the processor always writes */
		cpu->r[0] = v[0];
		cpu->r[2] = v[1];
	}
	kap_soft_set_flags(cpu, f);
}

/* ---- dispatch ---- */

kap_soft_exec_fn kap_soft_sse_lookup(const struct kap_soft_insn *d)
{
	unsigned int map = d->op >> 8, op = d->op & 0xff, sel = psel(d);
	if (map == KAP_SOFT_MAP_0F38) {
		if (op == 0xf0 || op == 0xf1)
			return sel == 3 ? x_crc32 : NULL; /* MOVBE is not in the baseline */
		if (sel == 1 && (op == 0x10 || op == 0x14 || op == 0x15))
			return x_blend;
		if (sel == 1 && op == 0x2a)
			return x_mov;
		return stub_msize(1, sel, op) ? x_stub : NULL;
	}
	if (map == KAP_SOFT_MAP_0F3A) {
		if (op >= 0x08 && op <= 0x0b)
			return sel == 1 ? x_round : NULL;
		if (op >= 0x0c && op <= 0x0e)
			return x_blend;
		if (op == 0x0f)
			return x_palignr;
		if ((op >= 0x14 && op <= 0x17) || (op >= 0x20 && op <= 0x22))
			return x_extr_ins;
		if (op >= 0x40 && op <= 0x42)
			return sel == 1 ? x_dp : NULL;
		if (op >= 0x60 && op <= 0x63)
			return x_pcmpstr;
		return NULL;
	}
	if (map != KAP_SOFT_MAP_0F)
		return NULL;
	switch (op) {
	case 0x10:
	case 0x11:
	case 0x13:
	case 0x17:
	case 0x28:
	case 0x29:
	case 0x2b:
	case 0x6e:
	case 0x6f:
	case 0x7e:
	case 0x7f:
	case 0xd6:
	case 0xe7:
	case 0xf0:
		return x_mov;
	case 0x12:
	case 0x16:
		return sel >= 2 ? x_stub : x_mov; /* MOVSLDUP MOVSHDUP MOVDDUP */
	case 0x2a:
	case 0x2c:
	case 0x2d:
		return x_cvt_int;
	case 0x50:
	case 0xd7:
		return x_movmsk;
	case 0x70:
		return x_pshuf;
	case 0x71:
	case 0x72:
	case 0x73:
		return x_shift_imm;
	case 0x77:
		return x_emms;
	case 0xb8:
		return sel == 2 ? x_bitcount : NULL;
	case 0xbd:
		return sel == 2 ? x_bitcount : NULL;
	case 0xc2:
		return x_cmp;
	case 0xc3:
		return x_movnti;
	case 0xc4:
	case 0xc5:
		return x_pinsrw;
	case 0xc6:
		return x_shufp;
	case 0xf7:
		return x_maskmov;
	}
	return stub_msize(0, sel, op) ? x_stub : NULL;
}
