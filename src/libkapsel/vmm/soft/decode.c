/* SPDX-License-Identifier: Apache-2.0 */
/*
 * x86 instruction decoding (Intel SDM vol. 2 ch. 2 and appendix A, the opcode maps). The
 * bytes come from guest memory, which the guest controls and may rewrite at any time, so the
 * decoder is written against a hostile buffer: every byte is fetched through one bounds-checked
 * reader (next), which stops at avail and at 15 bytes, so a truncated or over-long encoding is
 * an answer (SHORT, TOOLONG), never a read past the end.
 *
 * Shape of each opcode comes from two tables, one character per opcode (see the legend below);
 * what an opcode means is left to exec.c.
 */
#include <string.h>

#include "vmm/soft/decode.h"

/*
 * Legend: '.' no operand bytes; 'm' ModRM; 'M' ModRM + imm8; 'Z' ModRM + imm16/32 (Iz);
 * 'b' imm8; 'z' Iz; 'v' Iv (imm16/32/64, MOV r, imm); 'w' imm16; 'e' imm16 + imm8 (ENTER);
 * 'a' a moffs of the address size (MOV A0-A3); 'p' a far pointer (Ap; invalid in 64-bit mode);
 * 'j' rel8; 'J' rel16/32; 'g' ModRM + Ib/Iz only for /0 and /1 (TEST in group 3);
 * 'x' no operands, invalid in 64-bit mode; 'X' ModRM, invalid in 64-bit mode; 'Y' ModRM + imm8,
 * invalid in 64-bit mode; 'y' imm8, invalid in 64-bit mode; 'u' undefined (#UD);
 * 'P' a prefix or escape byte, handled before the table.
 */
static const char map1[256 + 1] = "mmmmbzxxmmmmbzxP"  /* 0x00 */
				  "mmmmbzxxmmmmbzxx"  /* 0x10 */
				  "mmmmbzPxmmmmbzPx"  /* 0x20 */
				  "mmmmbzPxmmmmbzPx"  /* 0x30 */
				  "................"  /* 0x40: INC/DEC, or REX in 64-bit mode */
				  "................"  /* 0x50 */
				  "xxXmPPPPzZbM...."  /* 0x60 */
				  "jjjjjjjjjjjjjjjj"  /* 0x70 */
				  "MZYMmmmmmmmmmmmm"  /* 0x80 */
				  "..........p....."  /* 0x90 */
				  "aaaa....bz......"  /* 0xa0 */
				  "bbbbbbbbvvvvvvvv"  /* 0xb0 */
				  "MMw.XXMZe.w..bx."  /* 0xc0 */
				  "mmmmyyu.mmmmmmmm"  /* 0xd0 */
				  "jjjjbbbbJJpj...."  /* 0xe0 */
				  "P.PP..gg......mm"; /* 0xf0 */

static const char map0f[256 + 1] = "mmmmu.....u.umuu"  /* 0x00 */
				   "mmmmmmmmmmmmmmmm"  /* 0x10 */
				   "mmmmuuuummmmmmmm"  /* 0x20 */
				   "......u.PuPuuuuu"  /* 0x30 */
				   "mmmmmmmmmmmmmmmm"  /* 0x40 */
				   "mmmmmmmmmmmmmmmm"  /* 0x50 */
				   "mmmmmmmmmmmmmmmm"  /* 0x60 */
				   "MMMMmmm.mmuummmm"  /* 0x70 */
				   "JJJJJJJJJJJJJJJJ"  /* 0x80 */
				   "mmmmmmmmmmmmmmmm"  /* 0x90 */
				   "...mMmuu...mMmmm"  /* 0xa0 */
				   "mmmmmmmmmmMmmmmm"  /* 0xb0 */
				   "mmMmMMMm........"  /* 0xc0 */
				   "mmmmmmmmmmmmmmmm"  /* 0xd0 */
				   "mmmmmmmmmmmmmmmm"  /* 0xe0 */
				   "mmmmmmmmmmmmmmmm"; /* 0xf0 */

struct reader {
	const uint8_t *buf;
	size_t avail, pos;
	enum kap_soft_dec fail;
};

/* The one place a byte is read: bounded by the buffer and by the 15-byte limit. */
static bool next(struct reader *r, uint8_t *b)
{
	if (r->pos >= KAP_SOFT_MAX_INSN) {
		r->fail = KAP_SOFT_DEC_TOOLONG;
		return false;
	}
	if (r->pos >= r->avail) {
		r->fail = KAP_SOFT_DEC_SHORT;
		return false;
	}
	*b = r->buf[r->pos++];
	return true;
}

/* n little-endian bytes (1, 2, 4 or 8), sign-extended when sign. */
static bool next_n(struct reader *r, unsigned int n, bool sign, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned int i = 0; i < n; i++) {
		uint8_t b;
		if (!next(r, &b))
			return false;
		x |= (uint64_t)b << (8 * i);
	}
	if (sign && n < 8) {
		uint64_t m = 1ULL << (8 * n - 1);
		x = (x ^ m) - m;
	}
	*v = x;
	return true;
}

/* ModRM, SIB and displacement (SDM vol. 2 §2.1.5, tables 2-1 to 2-3; §2.2.1.6 RIP-relative). */
static bool modrm(struct reader *r, unsigned int mode, struct kap_soft_insn *d)
{
	uint8_t m;
	if (!next(r, &m))
		return false;
	d->has_modrm = true;
	d->mod = m >> 6;
	d->reg = (uint8_t)(((m >> 3) & 7) | ((d->rex & 4) << 1));
	d->rm = (uint8_t)((m & 7) | ((d->rex & 1) << 3));
	d->base = d->index = KAP_SOFT_NOREG;
	d->scale = 0;
	d->disp = 0;
	if (d->mod == 3)
		return true;
	uint64_t disp = 0;
	if (d->asize == 2) {
		/* 16-bit forms: fixed base/index pairs, which exec.c resolves from rm. */
		unsigned int rm = m & 7;
		if (d->mod == 0 && rm == 6) {
			if (!next_n(r, 2, true, &disp))
				return false;
		} else if (d->mod == 1 && !next_n(r, 1, true, &disp)) {
			return false;
		} else if (d->mod == 2 && !next_n(r, 2, true, &disp)) {
			return false;
		}
		d->rm = (uint8_t)rm;
		d->disp = (int64_t)disp;
		return true;
	}
	unsigned int rm = m & 7;
	if (rm == 4) {
		uint8_t sib;
		if (!next(r, &sib))
			return false;
		d->scale = sib >> 6;
		unsigned int idx = ((sib >> 3) & 7) | ((d->rex & 2) << 2);
		d->index =
		    idx == 4 ? KAP_SOFT_NOREG : (uint8_t)idx; /* index 100 without REX.X: none */
		unsigned int base = (sib & 7) | ((d->rex & 1) << 3);
		if ((sib & 7) == 5 && d->mod == 0) {
			if (!next_n(r, 4, true, &disp))
				return false;
		} else {
			d->base = (uint8_t)base;
		}
	} else if (rm == 5 && d->mod == 0) {
		if (!next_n(r, 4, true, &disp))
			return false;
		d->rip_rel = mode == 8;
	} else {
		d->base = d->rm;
	}
	if (d->mod == 1 && !next_n(r, 1, true, &disp))
		return false;
	if (d->mod == 2 && !next_n(r, 4, true, &disp))
		return false;
	d->disp = (int64_t)disp;
	return true;
}

enum kap_soft_dec kap_soft_decode(const uint8_t *buf, size_t avail, unsigned int mode,
				  struct kap_soft_insn *d)
{
	struct reader r = {.buf = buf, .avail = avail, .fail = KAP_SOFT_DEC_OK};
	memset(d, 0, sizeof(*d));
	d->seg = KAP_SOFT_SEG_NONE;
	d->mode = (uint8_t)mode;
	if (mode != 2 && mode != 4 && mode != 8)
		return KAP_SOFT_DEC_UD;
	uint8_t b;
	/* Legacy prefixes (SDM vol. 2 §2.1.1), any number and order up to the length limit. */
	for (;;) {
		if (!next(&r, &b))
			return r.fail;
		switch (b) {
		case 0xf0:
			d->pfx |= KAP_SOFT_PFX_LOCK;
			continue;
		case 0xf2:
			d->pfx = (uint8_t)((d->pfx & ~KAP_SOFT_PFX_REP) | KAP_SOFT_PFX_REPNE);
			continue;
		case 0xf3:
			d->pfx = (uint8_t)((d->pfx & ~KAP_SOFT_PFX_REPNE) | KAP_SOFT_PFX_REP);
			continue;
		case 0x66:
			d->pfx |= KAP_SOFT_PFX_OPSIZE;
			continue;
		case 0x67:
			d->pfx |= KAP_SOFT_PFX_ADSIZE;
			continue;
		case 0x26:
		case 0x2e:
		case 0x36:
		case 0x3e:
			/* In 64-bit mode ES/CS/SS/DS overrides are ignored (§3.3.7.1). */
			if (mode != 8)
				d->seg = (uint8_t)((b >> 3) & 3);
			continue;
		case 0x64:
			d->seg = KAP_SOFT_FS;
			continue;
		case 0x65:
			d->seg = KAP_SOFT_GS;
			continue;
		}
		break;
	}
	/* REX (§2.2.1): only in 64-bit mode, and only right before the opcode. */
	while (mode == 8 && (b & 0xf0) == 0x40) {
		d->rex = b;
		if (!next(&r, &b))
			return r.fail;
		if (b == 0xf0 || b == 0xf2 || b == 0xf3 || b == 0x66 || b == 0x67 ||
		    (b & 0xe7) == 0x26 || b == 0x64 || b == 0x65)
			return KAP_SOFT_DEC_UD; /* a legacy prefix after REX: we do not take it */
	}

	/* Operand and address size (§2.2.1.2, table 2-4 for 64-bit mode). */
	bool opsz = d->pfx & KAP_SOFT_PFX_OPSIZE, adsz = d->pfx & KAP_SOFT_PFX_ADSIZE;
	if (mode == 2) {
		d->osize = opsz ? 4 : 2;
		d->asize = adsz ? 4 : 2;
	} else if (mode == 4) {
		d->osize = opsz ? 2 : 4;
		d->asize = adsz ? 2 : 4;
	} else {
		d->osize = (d->rex & 8) ? 8 : opsz ? 2 : 4;
		d->asize = adsz ? 4 : 8;
	}

	const char *table = map1;
	unsigned int map = KAP_SOFT_MAP_1;
	if (b == 0x0f) {
		if (!next(&r, &b))
			return r.fail;
		map = KAP_SOFT_MAP_0F;
		table = map0f;
		if (b == 0x38 || b == 0x3a) {
			map = b == 0x38 ? KAP_SOFT_MAP_0F38 : KAP_SOFT_MAP_0F3A;
			if (!next(&r, &b))
				return r.fail;
		}
	}
	d->op = (uint16_t)((map << 8) | b);
	char kind;
	if (map == KAP_SOFT_MAP_0F38)
		kind = 'm';
	else if (map == KAP_SOFT_MAP_0F3A)
		kind = 'M';
	else
		kind = table[b];
	/* VEX (C4/C5) in 64-bit mode, or with ModRM.mod 3 elsewhere: no AVX here (docs/vm.md). */
	if (map == KAP_SOFT_MAP_1 && (b == 0xc4 || b == 0xc5) &&
	    (mode == 8 || (r.pos < r.avail && (buf[r.pos] >> 6) == 3)))
		return KAP_SOFT_DEC_UD;

	if (mode == 8 && (kind == 'x' || kind == 'X' || kind == 'Y' || kind == 'y' || kind == 'p'))
		return KAP_SOFT_DEC_UD;
	/* Near branches and stack operations default to 64 bits in 64-bit mode (§2.2.1.7). */
	unsigned int iz = d->osize == 2 ? 2 : 4;
	uint64_t v;
	switch (kind) {
	case 'u':
	case 'P':
		return KAP_SOFT_DEC_UD;
	case '.':
	case 'x':
		break;
	case 'm':
	case 'X':
		if (!modrm(&r, mode, d))
			return r.fail;
		break;
	case 'M':
	case 'Y':
		if (!modrm(&r, mode, d) || !next_n(&r, 1, false, &d->imm))
			return r.fail;
		break;
	case 'Z':
		if (!modrm(&r, mode, d) || !next_n(&r, iz, false, &d->imm))
			return r.fail;
		break;
	case 'g':
		if (!modrm(&r, mode, d))
			return r.fail;
		if ((d->reg & 7) < 2 && !next_n(&r, b == 0xf6 ? 1 : iz, false, &d->imm))
			return r.fail;
		break;
	case 'b':
	case 'y':
		if (!next_n(&r, 1, false, &d->imm))
			return r.fail;
		break;
	case 'z':
		if (!next_n(&r, iz, false, &d->imm))
			return r.fail;
		break;
	case 'v':
		if (!next_n(&r, d->osize, false, &d->imm))
			return r.fail;
		break;
	case 'w':
		if (!next_n(&r, 2, false, &d->imm))
			return r.fail;
		break;
	case 'e':
		if (!next_n(&r, 2, false, &d->imm) || !next_n(&r, 1, false, &v))
			return r.fail;
		d->imm2 = (uint16_t)v;
		break;
	case 'a':
		if (!next_n(&r, d->asize, false, &d->imm))
			return r.fail;
		break;
	case 'p':
		if (!next_n(&r, d->osize == 2 ? 2 : 4, false, &d->imm) || !next_n(&r, 2, false, &v))
			return r.fail;
		d->imm2 = (uint16_t)v;
		break;
	case 'j':
		if (!next_n(&r, 1, true, &d->imm))
			return r.fail;
		break;
	case 'J':
		/* Intel ignores 66 on near branches in 64-bit mode: always rel32 there. */
		if (!next_n(&r, mode == 8 ? 4 : iz, true, &d->imm))
			return r.fail;
		break;
	default:
		return KAP_SOFT_DEC_UD;
	}
	d->len = (uint8_t)r.pos;
	return KAP_SOFT_DEC_OK;
}
