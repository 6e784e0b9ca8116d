/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's x86 instruction decoder (decode.c): prefixes, REX, the one-byte, 0F, 0F 38
 * and 0F 3A maps, ModRM/SIB/displacement and immediates in 16-, 32- and 64-bit code. It only
 * finds the instruction's parts and length; what an opcode does is exec.c's business. Pure
 * function of its input: no guest state, no allocation (fuzzed: tests/fuzz/fuzz-soft-decode.c).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Intel SDM vol. 2 §2.3.11: no instruction is longer than 15 bytes. */
#define KAP_SOFT_MAX_INSN 15

enum kap_soft_dec {
	KAP_SOFT_DEC_OK,
	KAP_SOFT_DEC_UD,      /* an encoding this decoder does not know, or invalid in this mode */
	KAP_SOFT_DEC_SHORT,   /* the buffer ended inside the instruction */
	KAP_SOFT_DEC_TOOLONG, /* more than 15 bytes: #GP(0) (SDM vol. 2 §2.3.11) */
};

/* Prefix bits. */
enum {
	KAP_SOFT_PFX_LOCK = 1u << 0,
	KAP_SOFT_PFX_REP = 1u << 1,   /* F3 */
	KAP_SOFT_PFX_REPNE = 1u << 2, /* F2 */
	KAP_SOFT_PFX_OPSIZE = 1u << 3,
	KAP_SOFT_PFX_ADSIZE = 1u << 4,
};

/* Segment register numbers, in the ModRM sreg encoding order. */
enum { KAP_SOFT_ES, KAP_SOFT_CS, KAP_SOFT_SS, KAP_SOFT_DS, KAP_SOFT_FS, KAP_SOFT_GS };
#define KAP_SOFT_SEG_NONE 7

/* Opcode maps: the opcode is (map << 8) | byte. */
enum { KAP_SOFT_MAP_1, KAP_SOFT_MAP_0F, KAP_SOFT_MAP_0F38, KAP_SOFT_MAP_0F3A };

struct kap_soft_insn {
	uint16_t op; /* (map << 8) | opcode byte */
	uint8_t len;
	uint8_t pfx;	/* KAP_SOFT_PFX_* */
	uint8_t seg;	/* segment override, KAP_SOFT_SEG_NONE without one */
	uint8_t rex;	/* the REX byte (0x40-0x4f), 0 without one */
	uint8_t osize;	/* operand size in bytes: 2, 4 or 8 */
	uint8_t asize;	/* address size in bytes: 2, 4 or 8 */
	uint8_t mode;	/* the code size it was decoded for: 2, 4 or 8 */
	bool has_modrm; /* the fields below up to disp are valid */
	uint8_t mod;	/* 0-3 */
	uint8_t reg;	/* ModRM.reg with REX.R: 0-15 */
	uint8_t rm;	/* ModRM.rm with REX.B (mod 3: a register) */
	uint8_t base;	/* 0-15, or KAP_SOFT_NOREG */
	uint8_t index;	/* 0-15, or KAP_SOFT_NOREG */
	uint8_t scale;	/* 0-3 (shift) */
	bool rip_rel;	/* 64-bit mode mod 0 rm 5: disp is relative to the next instruction */
	int64_t disp;	/* sign-extended */
	uint64_t imm;	/* the first immediate (relative branches: sign-extended) */
	uint16_t imm2;	/* the second one (ENTER's level, a far pointer's selector) */
};
#define KAP_SOFT_NOREG 0xff

/*
 * Decodes the instruction at buf (avail bytes, of which at most 15 are read) as code of the
 * given default size (2: 16-bit, 4: 32-bit, 8: 64-bit). Never reads buf[avail] or beyond.
 */
enum kap_soft_dec kap_soft_decode(const uint8_t *buf, size_t avail, unsigned int mode,
				  struct kap_soft_insn *out);
