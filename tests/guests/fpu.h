/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test=fpu (multiboot.c): the x87, MMX and SSE instructions and their exceptions, as the soft
 * CPU runs them. Prints "fpu NAME VALUE..." lines of raw bit patterns; test_vm_soft.py
 * computes what each must be on its own (Python's struct and integer arithmetic) and
 * compares. The guest runs at CPL 0 in 32-bit protected mode without paging.
 */
#pragma once

extern volatile uint32_t trap_vec;
extern void isr_nm(void), isr_mf(void), isr_xm(void), isr_gp(void);

static uint8_t fpu_buf[1024] __attribute__((aligned(16)));

static void fpu_copy(void *to, const void *from, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		((uint8_t *)to)[i] = ((const uint8_t *)from)[i];
}

static void fpu_line(const char *name, const uint32_t *v, int n)
{
	puts_("fpu ");
	puts_(name);
	for (int i = 0; i < n; i++) {
		putc_(' ');
		putx(v[i]);
	}
	putc_('\n');
}

static void fpu_one(const char *name, uint32_t v)
{
	fpu_line(name, &v, 1);
}

static uint32_t cr0_get(void)
{
	uint32_t v;
	__asm__ volatile("mov %%cr0, %0" : "=r"(v));
	return v;
}

static void cr0_set(uint32_t v)
{
	__asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory");
}

static uint32_t cr4_get(void)
{
	uint32_t v;
	__asm__ volatile("mov %%cr4, %0" : "=r"(v));
	return v;
}

static void cr4_set(uint32_t v)
{
	__asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory");
}

/* Runs insn (an asm string); returns the vector it trapped with: 6 for #UD, else trap_vec
 * (7, 13, 16, 19), 0 when it completed. */
#define TRAP_OF(insn, ...)                                                                         \
	({                                                                                         \
		uint32_t ud0 = ud_count;                                                           \
		trap_vec = 0;                                                                      \
		__asm__ volatile("movl $1f, ud_resume\n\t" insn "\n1:" : __VA_ARGS__);             \
		ud_count != ud0 ? 6u : trap_vec;                                                   \
	})

static void test_fpu(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	set_gate(6, isr_ud);
	set_gate(7, isr_nm);
	set_gate(13, isr_gp);
	set_gate(16, isr_mf);
	set_gate(19, isr_xm);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	uint32_t v[8];

	uint32_t a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	v[0] = c, v[1] = d;
	fpu_line("cpuid1", v, 2);

	/* Without CR4.OSFXSR SSE is #UD; with CR0.EM x87 is #NM and SSE #UD. */
	cr4_set(cr4_get() & ~0x600u);
	cr0_set((cr0_get() & ~0xcu) | 0x22); /* MP, NE; EM and TS clear */
	v[0] = TRAP_OF("xorps %%xmm0, %%xmm0", : : "memory");
	cr4_set(cr4_get() | 0x600); /* OSFXSR, OSXMMEXCPT */
	v[1] = TRAP_OF("xorps %%xmm0, %%xmm0", : : "memory");
	cr0_set(cr0_get() | 4); /* EM */
	v[2] = TRAP_OF("fninit", : : "memory");
	v[3] = TRAP_OF("xorps %%xmm0, %%xmm0", : : "memory");
	cr0_set(cr0_get() & ~4u);
	cr0_set(cr0_get() | 8); /* TS */
	v[4] = TRAP_OF("fninit", : : "memory");
	v[5] = TRAP_OF("movaps %%xmm0, %%xmm1", : : "memory");
	v[6] = TRAP_OF("fwait", : : "memory");
	__asm__ volatile("clts");
	v[7] = TRAP_OF("fwait", : : "memory");
	fpu_line("traps", v, 8);

	/* ---- x87 ---- */
	uint16_t cw, sw;
	__asm__ volatile("fninit; fnstcw %0; fnstsw %1" : "=m"(cw), "=m"(sw));
	v[0] = cw, v[1] = sw;
	fpu_line("init", v, 2);

	int32_t i7 = 7, i2 = 2;
	float f;
	__asm__ volatile("fildl %1; fildl %2; .byte 0xde, 0xf9; fstps %0" /* FDIVP: 7 / 2 */
			 : "=m"(f)
			 : "m"(i7), "m"(i2));
	fpu_copy(v, &f, 4);
	fpu_line("div-m32", v, 1);

	uint8_t m80[10];
	uint64_t d64;
	__asm__ volatile("fld1; fadd %%st(0), %%st(0); fsqrt; fld %%st(0); fstpl %0; fstpt %1"
			 : "=m"(d64), "=m"(m80));
	v[0] = (uint32_t)d64, v[1] = (uint32_t)(d64 >> 32);
	fpu_copy(&v[2], m80, 8);
	v[4] = (uint32_t)(m80[8] | (m80[9] << 8));
	fpu_line("sqrt2", v, 5);

	/* FIST under round-to-nearest and round-up, FISTTP truncating, of 2.5 and -2.75. */
	uint64_t d25 = 0x4004000000000000ULL, dm275 = 0xc006000000000000ULL;
	uint16_t cw_up = 0x0b7f, cw_def = 0x037f;
	int32_t r[3];
	__asm__ volatile("fninit; fldl %3; fistpl %0; fldcw %4; fldl %3; fistpl %1; fldcw %5;"
			 "fldl %6; fisttpl %2"
			 : "=m"(r[0]), "=m"(r[1]), "=m"(r[2])
			 : "m"(d25), "m"(cw_up), "m"(cw_def), "m"(dm275));
	v[0] = (uint32_t)r[0], v[1] = (uint32_t)r[1], v[2] = (uint32_t)r[2];
	fpu_line("fist", v, 3);

	/* FCOMI 2 vs 1, 1 vs 2; FUCOMIP against a NaN: ZF PF CF. */
	uint32_t fl1, fl2, fl3;
	uint64_t qnan = 0x7ff8000000000000ULL;
	__asm__ volatile("fninit; fld1; fld1; fadd %%st(0), %%st(0); fcomi %%st(1), %%st;"
			 "pushf; popl %0; fxch; fcomi %%st(1), %%st; pushf; popl %1;"
			 "fldl %3; fucomip %%st(1), %%st; pushf; popl %2; fninit"
			 : "=r"(fl1), "=r"(fl2), "=r"(fl3)
			 : "m"(qnan)
			 : "cc");
	v[0] = fl1 & 0x45, v[1] = fl2 & 0x45, v[2] = fl3 & 0x45;
	fpu_line("fcomi", v, 3);

	/* Nine pushes: a masked stack overflow (IE, SF, C1; TOP wraps to 7). */
	__asm__ volatile("fninit; fld1; fld1; fld1; fld1; fld1; fld1; fld1; fld1; fld1; fnstsw %0;"
			 "fninit"
			 : "=m"(sw));
	fpu_one("overflow", sw);

	/* 1/0 with ZE unmasked: no trap at FDIVP, #MF at the next FWAIT; nothing popped. */
	uint16_t cw_ze = 0x037b;
	v[0] = TRAP_OF("fninit; fldcw %0; fld1; fldz; .byte 0xde, 0xf9", : "m"(cw_ze) : "memory");
	v[1] = TRAP_OF("fwait", : : "memory");
	__asm__ volatile("fnstsw %0; fnclex; fninit" : "=m"(sw));
	v[2] = sw;
	fpu_line("mf", v, 3);

	/* ---- SSE ---- */
	uint32_t mx;
	__asm__ volatile("stmxcsr %0" : "=m"(mx));
	fpu_one("mxcsr", mx);

	static const uint32_t pa[4]
	    __attribute__((aligned(16))) = {0x3fc00000, 0xc0000000, 0x40500000, 0x501502f9};
	static const uint32_t pb[4]
	    __attribute__((aligned(16))) = {0x3f000000, 0x3e800000, 0xbf800000, 0x40400000};
	uint32_t out[4] __attribute__((aligned(16)));
	__asm__ volatile("movaps %1, %%xmm0; addps %2, %%xmm0; movups %%xmm0, %0"
			 : "=m"(out)
			 : "m"(pa), "m"(pb));
	fpu_line("addps", out, 4);
	__asm__ volatile("movaps %1, %%xmm0; mulps %2, %%xmm0; movups %%xmm0, %0"
			 : "=m"(out)
			 : "m"(pa), "m"(pb));
	fpu_line("mulps", out, 4);

	uint32_t one = 0x3f800000, three = 0x40400000, zero = 0;
	__asm__ volatile("movss %1, %%xmm0; divss %2, %%xmm0; movss %%xmm0, %0"
			 : "=m"(out[0])
			 : "m"(one), "m"(three));
	fpu_one("divss", out[0]);

	uint64_t two = 0x4000000000000000ULL, q;
	__asm__ volatile("movsd %1, %%xmm0; sqrtsd %%xmm0, %%xmm1; movsd %%xmm1, %0"
			 : "=m"(q)
			 : "m"(two));
	v[0] = (uint32_t)q, v[1] = (uint32_t)(q >> 32);
	fpu_line("sqrtsd", v, 2);

	uint64_t d35 = 0x400c000000000000ULL, dtenth = 0x3fb999999999999aULL;
	int32_t m7 = -7;
	uint32_t cv[6];
	__asm__ volatile("cvtsi2sdl %6, %%xmm0; movsd %%xmm0, %0;"
			 "cvttsd2si %7, %%eax; movl %%eax, %1;"
			 "cvtsd2si %8, %%eax; movl %%eax, %2;"
			 "cvtsd2si %9, %%eax; movl %%eax, %3;"
			 "cvtsd2ss %10, %%xmm1; movss %%xmm1, %4"
			 : "=m"(q), "=m"(cv[0]), "=m"(cv[1]), "=m"(cv[2]), "=m"(cv[3]), "=m"(cv[4])
			 : "m"(m7), "m"(dm275), "m"(d25), "m"(d35), "m"(dtenth)
			 : "eax");
	v[0] = (uint32_t)q, v[1] = (uint32_t)(q >> 32), v[2] = cv[0], v[3] = cv[1], v[4] = cv[2],
	v[5] = cv[3];
	fpu_line("cvt", v, 6);

	uint64_t d1 = 0x3ff0000000000000ULL;
	__asm__ volatile("movsd %3, %%xmm0; ucomisd %4, %%xmm0; pushf; popl %0;"
			 "movsd %5, %%xmm0; comisd %3, %%xmm0; pushf; popl %1;"
			 "comisd %5, %%xmm0; pushf; popl %2"
			 : "=r"(fl1), "=r"(fl2), "=r"(fl3)
			 : "m"(d1), "m"(qnan), "m"(two)
			 : "cc");
	v[0] = fl1 & 0x8d5, v[1] = fl2 & 0x8d5, v[2] = fl3 & 0x8d5;
	fpu_line("comisd", v, 3);

	/* 1/0 masked: ZE in MXCSR, an infinity. Unmasked: #XM, the destination kept; #UD
	 * without CR4.OSXMMEXCPT. A reserved MXCSR bit: #GP. */
	__asm__ volatile("movss %1, %%xmm0; divss %2, %%xmm0; movss %%xmm0, %0"
			 : "=m"(out[0])
			 : "m"(one), "m"(zero));
	__asm__ volatile("stmxcsr %0" : "=m"(mx));
	v[0] = out[0], v[1] = mx;
	uint32_t mx_ze = 0x1d80, mx_bad = 0x10000, mx_def = 0x1f80;
	v[2] =
	    TRAP_OF("ldmxcsr %1; movss %2, %%xmm0; divss %3, %%xmm0; movss %%xmm0, %0", "=m"(out[0])
		    : "m"(mx_ze), "m"(one), "m"(zero)
		    : "memory");
	__asm__ volatile("movss %%xmm0, %0; stmxcsr %1" : "=m"(out[1]), "=m"(mx));
	v[3] = out[1], v[4] = mx;
	cr4_set(cr4_get() & ~0x400u);
	v[5] = TRAP_OF("divss %0, %%xmm0", : "m"(zero) : "memory");
	cr4_set(cr4_get() | 0x400);
	v[6] = TRAP_OF("ldmxcsr %0", : "m"(mx_bad) : "memory");
	__asm__ volatile("ldmxcsr %0" : : "m"(mx_def));
	fpu_line("xm", v, 7);

	/* Integer SSE as glibc's string functions use it. */
	static const char hello[16] __attribute__((aligned(16))) = "hello world, hi!";
	static const char ells[16] __attribute__((aligned(16))) = "llllllllllllllll";
	static const uint8_t bytes[16]
	    __attribute__((aligned(16))) = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
					    0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
	uint32_t mask;
	__asm__ volatile("movdqa %1, %%xmm0; pcmpeqb %2, %%xmm0; pmovmskb %%xmm0, %0"
			 : "=r"(mask)
			 : "m"(hello), "m"(ells));
	fpu_one("pcmpeqb", mask);
#define VEC_OP(name, insn)                                                                         \
	__asm__ volatile("movdqa %1, %%xmm0; movdqu %2, %%xmm1; " insn "; movdqu %%xmm0, %0"       \
			 : "=m"(out)                                                               \
			 : "m"(hello), "m"(bytes));                                                \
	fpu_line(name, out, 4)
	VEC_OP("pminub", "pminub %%xmm1, %%xmm0");
	VEC_OP("pshufd", "pshufd $0x1b, %%xmm1, %%xmm0");
	VEC_OP("punpcklbw", "punpcklbw %%xmm1, %%xmm0");
	VEC_OP("psrldq", "psrldq $3, %%xmm0");
	VEC_OP("pslldq", "pslldq $5, %%xmm0");
	VEC_OP("palignr", "palignr $5, %%xmm1, %%xmm0");
	VEC_OP("pxor", "pxor %%xmm1, %%xmm0");
	VEC_OP("paddd", "paddd %%xmm1, %%xmm0");
	VEC_OP("pshufb", "pshufb %%xmm1, %%xmm0");

	/* PCMPISTRI: equal any {l, o} in "hello world"; equal ordered "wor"; ranges a-z. */
	static const char set_lo[16] __attribute__((aligned(16))) = "lo";
	static const char hw[16] __attribute__((aligned(16))) = "hello world";
	static const char wor[16] __attribute__((aligned(16))) = "wor";
	static const char az[16] __attribute__((aligned(16))) = "az";
	static const char abcd[16] __attribute__((aligned(16))) = "ABcD";
	uint32_t ix[3], fx[3];
	__asm__ volatile(
	    "movdqa %6, %%xmm1; pcmpistri $0x00, %7, %%xmm1; pushf; popl %3; movl %%ecx, %0;"
	    "movdqa %8, %%xmm1; pcmpistri $0x0c, %7, %%xmm1; pushf; popl %4; movl %%ecx, %1;"
	    "movdqa %9, %%xmm1; pcmpistri $0x04, %10, %%xmm1; pushf; popl %5; movl %%ecx, %2"
	    : "=m"(ix[0]), "=m"(ix[1]), "=m"(ix[2]), "=m"(fx[0]), "=m"(fx[1]), "=m"(fx[2])
	    : "m"(set_lo), "m"(hw), "m"(wor), "m"(az), "m"(abcd)
	    : "ecx", "cc");
	v[0] = ix[0], v[1] = fx[0] & 0x8d5, v[2] = ix[1], v[3] = fx[1] & 0x8d5, v[4] = ix[2],
	v[5] = fx[2] & 0x8d5;
	fpu_line("pcmpistri", v, 6);

	uint32_t pc, lz, crc = 0xffffffffu, src = 0xf0f0f0f0u, src2 = 0x10000;
	__asm__ volatile("popcnt %1, %0" : "=r"(pc) : "m"(src) : "cc");
	__asm__ volatile("lzcnt %1, %0" : "=r"(lz) : "m"(src2) : "cc");
	static const char digits[9] = "123456789";
	for (int i = 0; i < 9; i++)
		__asm__ volatile("crc32b %1, %0" : "+r"(crc) : "m"(digits[i]));
	v[0] = pc, v[1] = lz, v[2] = crc ^ 0xffffffffu;
	fpu_line("bits", v, 3);

	/* MMX: PADDB on mm0, the tags before and after EMMS. */
	uint64_t mmv = 0x0102030405060708ULL, mmr;
	__asm__ volatile("movq %1, %%mm0; paddb %%mm0, %%mm0; movq %%mm0, %0; fxsave (%2)"
			 : "=m"(mmr)
			 : "m"(mmv), "r"(fpu_buf)
			 : "memory");
	v[0] = (uint32_t)mmr, v[1] = (uint32_t)(mmr >> 32), v[2] = fpu_buf[4];
	__asm__ volatile("emms; fxsave (%0)" : : "r"(fpu_buf) : "memory");
	v[3] = fpu_buf[4];
	fpu_line("mmx", v, 4);

	/* FXSAVE's layout: FCW FSW FTW FOP MXCSR MXCSR_MASK, ST0 = 1.0, XMM1; then FXRSTOR of an
	 * image with a new XMM2, read back. Misaligned: #GP. */
	static const uint32_t pat[4]
	    __attribute__((aligned(16))) = {0x01234567, 0x89abcdef, 0xdeadbeef, 0x0badf00d};
	__asm__ volatile("fninit; fld1; movdqa %0, %%xmm1; fxsave (%1)"
			 :
			 : "m"(pat), "r"(fpu_buf)
			 : "memory");
	const uint8_t *x = fpu_buf;
	uint32_t fx16[8];
	fx16[0] = (uint32_t)(x[0] | x[1] << 8);	  /* FCW */
	fx16[1] = (uint32_t)(x[2] | x[3] << 8);	  /* FSW */
	fx16[2] = x[4];				  /* FTW, abridged */
	fx16[3] = (uint32_t)(x[6] | x[7] << 8);	  /* FOP */
	fpu_copy(&fx16[4], x + 24, 4);		  /* MXCSR */
	fpu_copy(&fx16[5], x + 28, 4);		  /* MXCSR_MASK */
	fpu_copy(&fx16[6], x + 36, 4);		  /* ST0 significand, high half */
	fx16[7] = (uint32_t)(x[40] | x[41] << 8); /* ST0 sign and exponent */
	fpu_line("fxsave", fx16, 8);
	fpu_copy(v, x + 160 + 16, 16);
	fpu_line("fxsave-xmm1", v, 4);
	fpu_copy(fpu_buf + 160 + 32, pat, 16);
	fpu_buf[160 + 32] = 0x42;
	__asm__ volatile("fxrstor (%1); movdqu %%xmm2, %0" : "=m"(out) : "r"(fpu_buf) : "memory");
	fpu_line("fxrstor-xmm2", out, 4);
	v[0] = TRAP_OF("fxsave 8(%0)", : "r"(fpu_buf) : "memory");
	fpu_one("fxsave-misaligned", v[0]);
	/* DPPS (all four lanes, the sum to lane 0; lanes 0-2, the sum to lanes 2 and 3), DPPD
	 * and MPSADBW, each followed by MXCSR's flags (cleared before). */
	static const uint32_t dpa[4]
	    __attribute__((aligned(16))) = {0x3fc00000, 0xc0000000, 0x40500000, 0x3dcccccd};
	static const uint32_t dpb[4]
	    __attribute__((aligned(16))) = {0x3f000000, 0x3e800000, 0xbf800000, 0x40400000};
	static const uint64_t dpd[2]
	    __attribute__((aligned(16))) = {0x3ff8000000000000ULL, 0xc000000000000000ULL};
	static const uint64_t dpe[2]
	    __attribute__((aligned(16))) = {0x3fb999999999999aULL, 0x4008000000000000ULL};
#define SSE_MX(name, a, b, insn)                                                                   \
	__asm__ volatile("ldmxcsr %4; movdqa %2, %%xmm0; " insn "; movdqu %%xmm0, %0; stmxcsr %1"  \
			 : "=m"(out), "=m"(mx)                                                     \
			 : "m"(a), "m"(b), "m"(mx_def)                                             \
			 : "memory");                                                              \
	fpu_copy(v, out, 16);                                                                      \
	v[4] = mx;                                                                                 \
	fpu_line(name, v, 5)
	SSE_MX("dpps-f1", dpa, dpb, "dpps $0xf1, %3, %%xmm0");
	SSE_MX("dpps-7c", dpa, dpb, "dpps $0x7c, %3, %%xmm0");
	SSE_MX("dppd-31", dpd, dpe, "dppd $0x31, %3, %%xmm0");
	SSE_MX("dppd-12", dpd, dpe, "dppd $0x12, %3, %%xmm0");
	SSE_MX("mpsadbw-5", hello, bytes, "mpsadbw $5, %3, %%xmm0");
	SSE_MX("mpsadbw-2", hello, bytes, "mpsadbw $2, %3, %%xmm0");

	/* The MMX-SSE conversions: results and MXCSR flags; the abridged tag word after each
	 * (from FNINIT: 0 where the x87 unit stays, FF where it went over to MMX). */
	static const int32_t pi[2] __attribute__((aligned(16))) = {-7, 16777217};
	static const uint32_t ps[4]
	    __attribute__((aligned(16))) = {0x40200000, 0xc0600000, 0x40300000, 0xc0700000};
	static const uint64_t pd[2]
	    __attribute__((aligned(16))) = {0x4004000000000000ULL, 0x4415af1d78b58c40ULL};
	static const uint64_t pd2[2]
	    __attribute__((aligned(16))) = {0xc006000000000000ULL, 0x401f99999999999aULL};
#define PI_MX(name, pre, insn, get)                                                                \
	__asm__ volatile(                                                                          \
	    "fninit; ldmxcsr %3; " pre "; " insn "; " get "; stmxcsr %1; fxsave (%2);"             \
	    "emms"                                                                                 \
	    : "=m"(out), "=m"(mx)                                                                  \
	    : "r"(fpu_buf), "m"(mx_def), "m"(pi), "m"(ps), "m"(pd), "m"(pd2), "m"(pat)             \
	    : "memory");                                                                           \
	fpu_copy(v, out, 16);                                                                      \
	v[4] = mx;                                                                                 \
	v[5] = fpu_buf[4];                                                                         \
	fpu_line(name, v, 6)
	PI_MX("cvtpi2ps-m", "movdqa %8, %%xmm0", "cvtpi2ps %4, %%xmm0", "movdqu %%xmm0, %0");
	PI_MX("cvtpi2ps-r", "movdqa %8, %%xmm0; movq %4, %%mm2", "cvtpi2ps %%mm2, %%xmm0",
	      "movdqu %%xmm0, %0");
	PI_MX("cvtpi2pd-m", "movdqa %8, %%xmm0", "cvtpi2pd %4, %%xmm0", "movdqu %%xmm0, %0");
	PI_MX("cvtps2pi", "movdqa %8, %%xmm0; movdqa %5, %%xmm3", "cvtps2pi %%xmm3, %%mm1",
	      "movq2dq %%mm1, %%xmm0; movdqu %%xmm0, %0");
	PI_MX("cvttps2pi", "movdqa %8, %%xmm0", "cvttps2pi %5, %%mm1",
	      "movq2dq %%mm1, %%xmm0; movdqu %%xmm0, %0");
	PI_MX("cvtpd2pi", "movdqa %8, %%xmm0", "cvtpd2pi %6, %%mm1",
	      "movq2dq %%mm1, %%xmm0; movdqu %%xmm0, %0");
	PI_MX("cvttpd2pi", "movdqa %8, %%xmm0; movdqa %7, %%xmm4", "cvttpd2pi %%xmm4, %%mm1",
	      "movq2dq %%mm1, %%xmm0; movdqu %%xmm0, %0");
	/* CVTPD2PI from a misaligned m128: #GP. */
	v[0] = TRAP_OF("cvtpd2pi 8(%0), %%mm1; emms", : "r"(fpu_buf) : "memory");
	__asm__ volatile("emms");
	fpu_one("cvtpd2pi-misaligned", v[0]);
	__asm__ volatile("fninit");
	puts_("fpu ok\n");
	pass();
}
