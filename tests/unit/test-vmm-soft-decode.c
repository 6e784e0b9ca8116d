/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's decoder (vmm/soft/decode.c) against known encodings. The lengths in the table
 * are objdump's (binutils 2.40: `objdump -D -b binary -mi386`, `-mi386:x86-64`, `-mi8086`)
 * for the same bytes; the field checks and the negative cases (#UD, truncated, over 15 bytes)
 * follow the SDM vol. 2 ch. 2 and appendix A.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vmm/soft/decode.h"
#include "vmm/soft/soft.h"

static const struct {
	unsigned int mode, len;
	uint8_t bytes[15];
	unsigned int nbytes;
} known[] = {
    {4, 1, {0x90}, 1},
    {8, 2, {0x48, 0xcf}, 2},			     /* IRETQ: valid in 64-bit mode */
    {4, 1, {0xce}, 1},				     /* INTO: no immediate */
    {4, 2, {0xd9, 0xc9}, 2},			     /* FXCH ST(1) */
    {4, 6, {0xdd, 0x05, 0x00, 0x10, 0x00, 0x00}, 6}, /* FLD m64 */
    {8, 6, {0x66, 0x0f, 0x3a, 0x63, 0xc1, 0x1a}, 6}, /* PCMPISTRI $0x1a */
    {8, 4, {0xf3, 0x0f, 0xb8, 0xc1}, 4},	     /* POPCNT */
    {4, 5, {0xb8, 0x01, 0x00, 0x00, 0x00}, 5},
    {4, 4, {0x66, 0xb8, 0x01, 0x00}, 4},
    {4, 4, {0x8b, 0x44, 0x24, 0x08}, 4},
    {4, 7, {0x8b, 0x84, 0x24, 0x00, 0x01, 0x00, 0x00}, 7},
    {4, 6, {0x8b, 0x05, 0x78, 0x56, 0x34, 0x12}, 6},
    {4, 7, {0x8b, 0x04, 0x8d, 0x00, 0x10, 0x00, 0x00}, 7},
    {4, 6, {0x81, 0xc3, 0x00, 0x01, 0x00, 0x00}, 6},
    {4, 3, {0x83, 0xc3, 0x01}, 3},
    {4, 5, {0x66, 0x81, 0xc3, 0x00, 0x01}, 5},
    {4, 3, {0xf6, 0xc1, 0x01}, 3},
    {4, 6, {0xf7, 0xc1, 0x01, 0x00, 0x00, 0x00}, 6},
    {4, 2, {0xf6, 0xf1}, 2},
    {4, 2, {0xf7, 0xf1}, 2},
    {4, 3, {0x0f, 0xb6, 0xc0}, 3},
    {4, 6, {0x0f, 0x84, 0x00, 0x00, 0x00, 0x00}, 6},
    {4, 2, {0x74, 0xfe}, 2},
    {4, 5, {0xe8, 0x00, 0x00, 0x00, 0x00}, 5},
    {4, 7, {0xea, 0x00, 0x00, 0x10, 0x00, 0x10, 0x00}, 7},
    {4, 6, {0x66, 0xea, 0x00, 0x10, 0x08, 0x00}, 6},
    {4, 4, {0xc8, 0x10, 0x00, 0x01}, 4},
    {4, 5, {0xa1, 0x78, 0x56, 0x34, 0x12}, 5},
    {4, 4, {0x67, 0xa1, 0x34, 0x12}, 4},
    {4, 4, {0x67, 0x8b, 0x47, 0x02}, 4},
    {4, 5, {0x67, 0x8b, 0x06, 0x34, 0x12}, 5},
    {4, 2, {0xf3, 0xa5}, 2},
    {4, 7, {0x0f, 0x01, 0x15, 0x00, 0x10, 0x00, 0x00}, 7},
    {4, 3, {0x0f, 0x20, 0xc0}, 3},
    {4, 2, {0x0f, 0x30}, 2},
    {4, 2, {0x0f, 0xa2}, 2},
    {4, 4, {0x0f, 0xba, 0xe0, 0x03}, 4},
    {4, 4, {0x0f, 0xa4, 0xc2, 0x04}, 4},
    {4, 6, {0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x08}, 6},
    {4, 4, {0x0f, 0x38, 0x00, 0xc1}, 4},
    {4, 2, {0x0f, 0x0b}, 2},
    {4, 2, {0xc4, 0x06}, 2},
    {4, 2, {0x62, 0x06}, 2},
    {4, 3, {0x26, 0x8b, 0x00}, 3},
    {4, 4, {0x8d, 0x74, 0x26, 0x00}, 4},
    {4, 5, {0x0f, 0x1f, 0x44, 0x00, 0x00}, 5},
    {4, 9, {0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00}, 9},
    {8, 10, {0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11}, 10},
    {8, 7, {0x48, 0x8b, 0x05, 0x00, 0x00, 0x00, 0x00}, 7},
    {8, 7, {0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff}, 7},
    {8, 5, {0x4c, 0x8b, 0x4c, 0x24, 0x08}, 5},
    {8, 3, {0x41, 0xff, 0xd3}, 3},
    {8, 2, {0x0f, 0x05}, 2},
    {8, 3, {0x48, 0x63, 0xc7}, 3},
    {8, 9, {0xa1, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11}, 9},
    {8, 6, {0x67, 0xa1, 0x44, 0x33, 0x22, 0x11}, 6},
    {8, 4, {0x48, 0x0f, 0xc7, 0x0e}, 4},
    {8, 3, {0xf3, 0x48, 0xa5}, 3},
    {8, 8, {0x42, 0x8b, 0x04, 0xa5, 0x00, 0x00, 0x00, 0x00}, 8},
    {8, 4, {0x41, 0x8b, 0x45, 0x00}, 4},
    {8, 6, {0x66, 0x41, 0xc7, 0x00, 0x34, 0x12}, 6},
    {2, 3, {0xb8, 0x34, 0x12}, 3},
    {2, 6, {0x66, 0xb8, 0x78, 0x56, 0x34, 0x12}, 6},
    {2, 3, {0x8b, 0x47, 0x02}, 3},
    {2, 4, {0x8b, 0x06, 0x34, 0x12}, 4},
    {2, 3, {0xe9, 0x00, 0x00}, 3},
    {2, 5, {0xea, 0x00, 0x00, 0x00, 0x10}, 5},
    {2, 8, {0x66, 0xea, 0x00, 0x00, 0x10, 0x00, 0x08, 0x00}, 8},
    {2, 5, {0x0f, 0x01, 0x16, 0x00, 0x10}, 5},
    {2, 5, {0x67, 0x8b, 0x44, 0x24, 0x08}, 5},
    {2, 2, {0xcd, 0x10}, 2},
};

/* Every known encoding decodes to objdump's length, from a buffer of exactly that many bytes. */
static void test_known_lengths(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		struct kap_soft_insn d;
		enum kap_soft_dec r =
		    kap_soft_decode(known[i].bytes, known[i].nbytes, known[i].mode, &d);
		if (r != KAP_SOFT_DEC_OK || d.len != known[i].len)
			fail_msg("case %zu (mode %u, first byte %02x): result %d, length %u, want "
				 "%u",
				 i, known[i].mode, known[i].bytes[0], r, d.len, known[i].len);
		/* One byte fewer is always "short", never a read past the end. */
		r = kap_soft_decode(known[i].bytes, known[i].nbytes - 1, known[i].mode, &d);
		if (r != KAP_SOFT_DEC_SHORT)
			fail_msg("case %zu truncated: result %d, want SHORT", i, r);
	}
}

static struct kap_soft_insn dec(unsigned int mode, const uint8_t *b, size_t n)
{
	struct kap_soft_insn d;
	assert_int_equal(kap_soft_decode(b, n, mode, &d), KAP_SOFT_DEC_OK);
	return d;
}

static void test_fields(void **state)
{
	(void)state;
	/* mov 0x1000(,%ecx,4),%eax: SIB with no base, index ECX, scale 4, disp32. */
	static const uint8_t sib[] = {0x8b, 0x04, 0x8d, 0x00, 0x10, 0x00, 0x00};
	struct kap_soft_insn d = dec(4, sib, sizeof(sib));
	assert_int_equal(d.op, 0x8b);
	assert_int_equal(d.base, KAP_SOFT_NOREG);
	assert_int_equal(d.index, 1);
	assert_int_equal(d.scale, 2);
	assert_int_equal(d.disp, 0x1000);
	assert_int_equal(d.osize, 4);
	/* mov 0x8(%rsp),%r9: REX.R extends reg; base RSP through SIB; disp8. */
	static const uint8_t r9[] = {0x4c, 0x8b, 0x4c, 0x24, 0x08};
	d = dec(8, r9, sizeof(r9));
	assert_int_equal(d.reg, 9);
	assert_int_equal(d.base, 4);
	assert_int_equal(d.index, KAP_SOFT_NOREG);
	assert_int_equal(d.disp, 8);
	assert_int_equal(d.osize, 8);
	/* mov 0x0(,%r12,4),%eax: REX.X extends the index (100 with REX.X is R12, not none). */
	static const uint8_t r12[] = {0x42, 0x8b, 0x04, 0xa5, 0, 0, 0, 0};
	d = dec(8, r12, sizeof(r12));
	assert_int_equal(d.index, 12);
	/* RIP-relative in 64-bit mode, absolute disp32 in 32-bit mode. */
	static const uint8_t rip[] = {0x48, 0x8b, 0x05, 0x10, 0, 0, 0};
	d = dec(8, rip, sizeof(rip));
	assert_true(d.rip_rel);
	assert_int_equal(d.disp, 0x10);
	d = dec(4, rip + 1, sizeof(rip) - 1);
	assert_false(d.rip_rel);
	/* movabs $imm64: Iv is 8 bytes with REX.W. */
	static const uint8_t mabs[] = {0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
	d = dec(8, mabs, sizeof(mabs));
	assert_true(d.imm == 0x1122334455667788ULL);
	/* je -2: rel8 sign-extended. */
	static const uint8_t je[] = {0x74, 0xfe};
	d = dec(4, je, sizeof(je));
	assert_int_equal(d.op, 0x74);
	assert_true((int64_t)d.imm == -2);
	/* ljmp $0x10,$0x100000: offset and selector. */
	static const uint8_t ljmp[] = {0xea, 0x00, 0x00, 0x10, 0x00, 0x10, 0x00};
	d = dec(4, ljmp, sizeof(ljmp));
	assert_int_equal(d.imm, 0x100000);
	assert_int_equal(d.imm2, 0x10);
	/* es mov (%eax),%eax: segment override; 0F maps; prefixes recorded. */
	static const uint8_t es[] = {0x26, 0x8b, 0x00};
	d = dec(4, es, sizeof(es));
	assert_int_equal(d.seg, KAP_SOFT_ES);
	static const uint8_t rep[] = {0xf3, 0xa5};
	d = dec(4, rep, sizeof(rep));
	assert_true(d.pfx & KAP_SOFT_PFX_REP);
	static const uint8_t pal[] = {0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x08};
	d = dec(4, pal, sizeof(pal));
	assert_int_equal(d.op, (KAP_SOFT_MAP_0F3A << 8) | 0x0f);
	assert_int_equal(d.imm, 8);
	/* 16-bit: mov 0x2(%bx),%ax keeps the 16-bit rm (BX) for exec.c's table. */
	static const uint8_t bx[] = {0x8b, 0x47, 0x02};
	d = dec(2, bx, sizeof(bx));
	assert_int_equal(d.asize, 2);
	assert_int_equal(d.osize, 2);
	assert_int_equal(d.rm, 7);
	assert_int_equal(d.disp, 2);
}

static void expect(unsigned int mode, const uint8_t *b, size_t n, enum kap_soft_dec want)
{
	struct kap_soft_insn d;
	assert_int_equal(kap_soft_decode(b, n, mode, &d), want);
}

static void test_invalid(void **state)
{
	(void)state;
	/* Opcodes that do not exist, or not in 64-bit mode (SDM vol. 2 appendix A.2.5). */
	static const uint8_t salc[] = {0xd6}, f04[] = {0x0f, 0x04}, push_es[] = {0x06},
			     bound[] = {0x62, 0x06}, vex[] = {0xc5, 0xf8, 0x77},
			     vex32[] = {0xc4, 0xe2, 0x79, 0x18, 0x00}, aam[] = {0xd4, 0x0a},
			     rexpfx[] = {0x48, 0x66, 0x90}, f0f0f[] = {0x0f, 0x0f, 0xc0, 0x00};
	expect(4, salc, sizeof(salc), KAP_SOFT_DEC_UD);
	expect(4, f04, sizeof(f04), KAP_SOFT_DEC_UD);
	expect(4, f0f0f, sizeof(f0f0f), KAP_SOFT_DEC_UD);
	expect(8, push_es, sizeof(push_es), KAP_SOFT_DEC_UD);
	expect(4, push_es, sizeof(push_es), KAP_SOFT_DEC_OK);
	expect(8, bound, sizeof(bound), KAP_SOFT_DEC_UD); /* EVEX there: no AVX-512 */
	expect(8, vex, sizeof(vex), KAP_SOFT_DEC_UD);
	expect(4, vex32, sizeof(vex32), KAP_SOFT_DEC_UD); /* C4 with mod 11: VEX, not LES */
	expect(8, aam, sizeof(aam), KAP_SOFT_DEC_UD);
	expect(8, rexpfx, sizeof(rexpfx), KAP_SOFT_DEC_UD);
	expect(3, salc + 0, 1, KAP_SOFT_DEC_UD); /* not a mode */
}

static void test_limits(void **state)
{
	(void)state;
	uint8_t b[32];
	/* 14 prefixes and NOP: 15 bytes, the most there may be. */
	memset(b, 0x66, sizeof(b));
	b[14] = 0x90;
	struct kap_soft_insn d;
	assert_int_equal(kap_soft_decode(b, 15, 4, &d), KAP_SOFT_DEC_OK);
	assert_int_equal(d.len, 15);
	/* 15 prefixes: #GP(0), decided at the 16th byte without reading it. */
	b[14] = 0x66;
	b[15] = 0x90;
	assert_int_equal(kap_soft_decode(b, sizeof(b), 4, &d), KAP_SOFT_DEC_TOOLONG);
	/* A long instruction made too long by prefixes. */
	static const uint8_t mabs[] = {0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
	memset(b, 0x66, 6);
	memcpy(b + 6, mabs, sizeof(mabs));
	assert_int_equal(kap_soft_decode(b, 6 + sizeof(mabs), 8, &d), KAP_SOFT_DEC_TOOLONG);
	assert_int_equal(kap_soft_decode(b + 1, 5 + sizeof(mabs), 8, &d), KAP_SOFT_DEC_OK);
	assert_int_equal(d.len, 15);
	/* Nothing at all. */
	assert_int_equal(kap_soft_decode(b, 0, 4, &d), KAP_SOFT_DEC_SHORT);
}

/* Which instructions end a translated block (exec.c): of group 5 (FF) only the branches, so a
 * counter's INC or DEC of memory stays inside its loop's block. */
static void test_ends_block(void **state)
{
	(void)state;
	static const struct {
		uint8_t bytes[4];
		unsigned int n;
		bool ends;
	} cases[] = {
	    {{0xff, 0x44, 0x24, 0x3c}, 4, false}, /* incl 0x3c(%rsp) */
	    {{0xff, 0x4b, 0xdc}, 3, false},	  /* decl -0x24(%rbx) */
	    {{0xff, 0x30}, 2, false},		  /* push (%rax) */
	    {{0x65, 0xff, 0x00}, 3, true},	  /* incl %gs:(%rax): per-CPU, ends it */
	    {{0xff, 0xd0}, 2, true},		  /* call *%rax */
	    {{0xff, 0x18}, 2, true},		  /* lcall *(%rax) */
	    {{0xff, 0xe0}, 2, true},		  /* jmp *%rax */
	    {{0xff, 0x28}, 2, true},		  /* ljmp *(%rax) */
	    {{0xfe, 0x00}, 2, false},		  /* incb (%rax) */
	    {{0xc3}, 1, true},			  /* ret */
	    {{0x75, 0x00}, 2, true},		  /* jne */
	    {{0x01, 0xc0}, 2, false},		  /* add %eax, %eax */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kap_soft_insn d;
		assert_int_equal(kap_soft_decode(cases[i].bytes, cases[i].n, 8, &d),
				 KAP_SOFT_DEC_OK);
		assert_int_equal(kap_soft_insn_ends_block(&d), cases[i].ends);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_lengths), cmocka_unit_test(test_fields),
	    cmocka_unit_test(test_invalid),	  cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_ends_block),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
