/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's code generator (jit.h; docs/DESIGN.md, The soft CPU's code generator).
 *
 * A hot block's decoded instructions become x86-64 host code. RBX holds the vCPU (struct
 * kap_soft_cpu), R12 the generator's state (struct kap_soft_jit). Guest registers are cached in
 * the host's other callee-saved registers (RBP, R13-R15, least recently used one reused) within
 * a block, write-through: every instruction that writes one stores it to cpu->r[] too, so the
 * guest state is exact at every instruction boundary and a fault from a handler or a memory
 * slow path finds what the interpreter would leave (it longjmps out; calls keep the cache's
 * registers, a handler's call forgets them, since it may write any). The one store left out is
 * of a register the next instruction overwrites whole without a call or a possible fault in
 * between (overwrites()). A block that jumps back to its own start is compiled twice: the
 * second time it loads on entry the registers the cache held at that jump, and the jump goes
 * back past those loads, checking only the link budget and the written-page flag (the block
 * cannot have been dropped while it runs: that leaves it at once) without touching RFLAGS, so
 * the flags of the instruction before the block's last Jcc are captured (PUSHF) only on the
 * exits that store them, and not at all on the jump back when the loop's first instructions
 * overwrite them before anything looks (flags_dead_from).
 *
 * Per instruction, either
 *  - inline code: MOV between registers, of immediates, loads and stores; LEA; ADD, OR, ADC, SBB,
 *    AND, SUB, XOR, CMP, TEST on registers, immediates and a memory source (CMP/TEST: either
 *    side); INC/DEC; NOT/NEG; IMUL; MUL; DIV (zero divisors and overflows raise #DE from the code);
 *    MOVZX/MOVSX/MOVSXD and CMOVcc from a register or memory; SETcc to either (the guest's flags
 *    read from the LF_HOST image by SAHF as for Jcc); ROL ROR SHL SHR SAR by a constant, and by
 *    CL at 32 and 64 bits (a masked count of 0 jumps past it all); NOP, PAUSE, the hint NOPs;
 *    read-modify-writes of memory (emit_rmw: the ALU ops but CMP, INC/DEC, NOT/NEG, shifts
 *    and rotates), not LOCK'd; JMP and Jcc rel (any size, AH-BH included); PUSH/POP reg, PUSH imm,
 *    CALL rel and RET (imm16), and in 64-bit code CALL and JMP r/m64, whose stack accesses take
 *    emit_mem's path (SS: in 32-bit code only while it is flat and 32-bit, else the handler) with
 *    RSP moved only after them, as exec.c's push and pop do; a RET's or indirect branch's target
 *    goes into cpu->rip (exit_indirect). The host runs the same operation at the same size, so its
 *    RFLAGS are the guest's: they are stored as the lazy flags LF_HOST (lf_res = the image) unless
 *    the next instructions overwrite them before anything can read them or fault, and a Jcc right
 *    after the flag-setting instruction branches on the host's flags directly (elsewhere on the
 *    LF_HOST image through SAHF, emit_jcc). INC/DEC of memory through FS or GS stays with the
 *    handler (docs/vm.md, the code generator: Linux's per-CPU ones hung the 2-vCPU boot). Flags
 *    the SDM leaves undefined get exec.c's values (AF 0 after logic and shifts, OF after shifts and
 *    rotates by more than 1, SF ZF PF after IMUL from the result). INC/DEC keep CF, ADC/SBB read
 *    it: the guest's goes into the host's first (BT of the image, or of cpu->flags after
 *    kap_soft_get_flags; ADC/SBB make the lazy flags LF_HOST first).
 *  - or a call to the interpreter's handler (everything else: PUSHF/POPF, ENTER/LEAVE, far
 *    branches, the string and system instructions, IDIV, RCL/RCR, 8- and 16-bit shifts by CL,
 *    x87/SSE, LOCK...), with cpu->rip and cpu->next_rip set first as run_block sets them, cpu->rip
 *    = next_rip after it, and the block left at once when the handler asked for that (stop_block:
 *    a store to a page with translations, a mode change).
 * RIP is kept in cpu->rip relative to the block's start (a block may run at several linear
 * addresses) and brought up to date before each handler call, around a memory access's slow
 * path (the fast one cannot fault) and at the exits, in the code size's width (32-bit code
 * wraps at 4 GiB as the interpreter's mask does).
 *
 * Memory operands (emit_mem) look the TLB up inline (emit_lookup: the tag of the access's kind
 * at the block's CPL compared with the page of its last byte, then the entry's addend added:
 * the TLB lies inside the vCPU, at a fixed offset from RBX); a read-modify-write looks it up for a
 * write before its load (an entry grants writes only once the page is dirty), so nothing between
 * the load and the store can fault, and anything else runs its handler; in 32-bit code ES, SS and
 * DS are taken as flat without checks while kap_soft_jit_run found them so, and SS 32-bit, on
 * entry (POP ES/SS/DS clear that; everything else that loads them ends the block on an unlinked
 * exit).
 *
 * Exits: a block ends in up to two exits to a guest address known at compile time (Jcc's two,
 * JMP's and CALL's, the fall-through of a block cut at 64 instructions). When that address is in
 * the block's own guest page, the exit can be linked: cpu.c's loop tells kap_soft_jit_run which
 * block ran after it, and the exit's jump is patched to that block's code, guarded by a budget
 * of chained blocks after which the loop runs again. Each block keeps the list of exits patched
 * to it: dropping it (a store to its page, the VMM's write, kap_soft_jit_drop) points them back
 * at their way out, so a link needs no check that its target still exists. A link never leaves the
 * page, so it holds whatever the page tables do: the page's mapping was checked when the chain was
 * entered from the loop, and what changes mappings (MOV CR3, INVLPG, far transfers) ends blocks on
 * exits that are never linked. Port I/O and MMIO set the budget to 0 (kap_soft_jit_kick), so an
 * interrupt they raise is taken at the end of that block, as between interpreted blocks.
 *
 * Exits whose target is known only at run time (RET, CALL/JMP through r/m, LOOP/JCXZ and the
 * rel branches a handler runs) and fixed ones that cannot be linked (another page, a third
 * target) go through the jump cache (exit_indirect): compiled blocks by the linear address they
 * start at, filled by kap_soft_jit_run with the block the loop found there. An entry is taken
 * only while it still yields the loop's block: filled in the chain's epoch (nothing dropped
 * since) for its code size and CPL, and the TLB still mapping its page to the same physical
 * page with fetch permission (fetch_phys's lookup; every flush and INVLPG clears entries
 * there, so it needs no flush of its own), under the same budget and written-page checks as a
 * link. Those exits come only after instructions that change neither the code size, the CPL,
 * CS's base nor the mappings (which leave on unlinked exits), so the chain's copies of them
 * hold.
 *
 * W^X: the buffer is a memfd mapped twice, read-write for the generator and read-execute for
 * the CPU; no page is ever writable and executable. Patches go through the writable view.
 * When the buffer is full every compiled block is dropped (their blocks are interpreted until
 * hot again) with every link, between blocks, so no jump into the old code is left to take.
 */
#include <cpuid.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "vmm/soft/block.h"
#include "vmm/soft/exec.h"
#include "vmm/soft/jit.h"
#include "vmm/vmm.h"

#define JIT_SIZE (16u << 20) /* a vCPU's code buffer */
#define JIT_STUB 64u	     /* the entry and exit stubs, at the buffer's start */

/* Host registers. */
enum {
	RAX = 0,
	RCX = 1,
	RDX = 2,
	RBX = 3,
	RSP = 4,
	RBP = 5,
	RSI = 6,
	RDI = 7,
	R12 = 12,
	R13 = 13,
	R14 = 14,
	R15 = 15
};
/* op_* flags: an operand-size prefix, REX.W. */
enum { P66 = 1, W = 2 };

#define CPU_OFF(f) ((int32_t)offsetof(struct kap_soft_cpu, f))
#define REG_OFF(i) ((int32_t)(offsetof(struct kap_soft_cpu, r) + 8 * (size_t)(i)))
#define JIT_OFF(f) ((int32_t)offsetof(struct kap_soft_jit, f))

/* ---- the emitter ---- */

struct em {
	uint8_t *buf;
	size_t pos, cap;
	bool full;
};

static void e8(struct em *e, unsigned int b)
{
	if (e->pos < e->cap)
		e->buf[e->pos] = (uint8_t)b;
	else
		e->full = true;
	e->pos++;
}

static void e32(struct em *e, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		e8(e, (v >> (8 * i)) & 0xff);
}

static void e64(struct em *e, uint64_t v)
{
	e32(e, (uint32_t)v);
	e32(e, (uint32_t)(v >> 32));
}

static void prefix(struct em *e, unsigned int fl, unsigned int op, unsigned int reg,
		   unsigned int rm)
{
	if (fl & P66)
		e8(e, 0x66);
	unsigned int rex = 0x40 | ((fl & W) ? 8 : 0) | ((reg & 8) ? 4 : 0) | ((rm & 8) ? 1 : 0);
	if (rex != 0x40)
		e8(e, rex);
	if (op > 0xff)
		e8(e, op >> 8);
	e8(e, op & 0xff);
}

/* op reg, [base + disp] (or the reverse, by opcode). */
static void op_mem(struct em *e, unsigned int fl, unsigned int op, unsigned int reg,
		   unsigned int base, int32_t disp)
{
	prefix(e, fl, op, reg, base);
	unsigned int mod = (disp == 0 && (base & 7) != RBP) ? 0
			   : (disp >= -128 && disp <= 127)  ? 1
							    : 2;
	e8(e, (mod << 6) | ((reg & 7) << 3) | (base & 7));
	if ((base & 7) == RSP)
		e8(e, 0x24);
	if (mod == 1)
		e8(e, (uint8_t)disp);
	else if (mod == 2)
		e32(e, (uint32_t)disp);
}

/* op reg, [base + index * (1 << scale) + disp] (index: not RSP). */
static void op_sib(struct em *e, unsigned int fl, unsigned int op, unsigned int reg,
		   unsigned int base, unsigned int index, unsigned int scale, int32_t disp)
{
	if (fl & P66)
		e8(e, 0x66);
	unsigned int rex = 0x40 | ((fl & W) ? 8 : 0) | ((reg & 8) ? 4 : 0) | ((index & 8) ? 2 : 0) |
			   ((base & 8) ? 1 : 0);
	if (rex != 0x40)
		e8(e, rex);
	if (op > 0xff)
		e8(e, op >> 8);
	e8(e, op & 0xff);
	unsigned int mod = (disp == 0 && (base & 7) != RBP) ? 0
			   : (disp >= -128 && disp <= 127)  ? 1
							    : 2;
	e8(e, (mod << 6) | ((reg & 7) << 3) | 4);
	e8(e, (scale << 6) | ((index & 7) << 3) | (base & 7));
	if (mod == 1)
		e8(e, (uint8_t)disp);
	else if (mod == 2)
		e32(e, (uint32_t)disp);
}

/* op with a register ModRM operand (reg: a register or an opcode extension). */
static void op_rr(struct em *e, unsigned int fl, unsigned int op, unsigned int reg, unsigned int rm)
{
	prefix(e, fl, op, reg, rm);
	e8(e, 0xc0 | ((reg & 7) << 3) | (rm & 7));
}

static void mov_imm64(struct em *e, unsigned int r, uint64_t v)
{
	if ((uint64_t)(int64_t)(int32_t)v == v) {
		op_rr(e, W, 0xc7, 0, r); /* mov r64, simm32 */
		e32(e, (uint32_t)v);
	} else {
		e8(e, 0x48 | ((r & 8) ? 1 : 0));
		e8(e, 0xb8 + (r & 7));
		e64(e, v);
	}
}

/* A rel32 jump or Jcc (cc < 0: JMP) to be fixed up; returns where its rel32 is. */
static size_t jump32(struct em *e, int cc)
{
	if (cc < 0) {
		e8(e, 0xe9);
	} else {
		e8(e, 0x0f);
		e8(e, 0x80 + (unsigned int)cc);
	}
	size_t at = e->pos;
	e32(e, 0);
	return at;
}

/* Points the rel8 at `at` to `to`, a short forward distance (both offsets in e). */
static void fix8(struct em *e, size_t at, size_t to)
{
	if (at + 1 > e->cap)
		return;
	if (to - (at + 1) > 127) {
		e->full = true; /* not seen: the code it jumps over is a few dozen bytes */
		return;
	}
	e->buf[at] = (uint8_t)(to - (at + 1));
}

/* Points the rel32 at `at` to `to` (both offsets in e). */
static void fix(struct em *e, size_t at, size_t to)
{
	if (at + 4 > e->cap)
		return;
	uint32_t rel = (uint32_t)((int64_t)to - (int64_t)(at + 4));
	memcpy(e->buf + at, &rel, 4);
}

static void call_abs(struct em *e, const void *fn)
{
	mov_imm64(e, RAX, (uint64_t)(uintptr_t)fn);
	op_rr(e, 0, 0xff, 2, RAX); /* call rax */
}

/* ---- what an instruction compiles to ---- */

enum kind {
	K_CALL, /* the interpreter's handler */
	K_ALU,	/* op dst, src/imm: ADD OR AND SUB XOR CMP (exec.c's numbering), 8: TEST */
	K_INCDEC,
	K_MOV, /* dst = src/imm */
	K_LEA,
	K_JCC,
	K_JMP,
	K_LOAD,	 /* MOV reg, [m] */
	K_STORE, /* MOV [m], reg/imm */
	K_IMUL,	 /* IMUL reg, r/m (, imm) */
	K_SHIFT, /* ROL ROR SHL SHR SAR reg, imm */
	K_MOVX,	 /* MOVZX, MOVSX, MOVSXD reg, r/m */
	K_CMOV,	 /* CMOVcc reg, r/m */
	K_SETCC, /* SETcc r/m8 */
	K_PUSH,	 /* PUSH reg/imm */
	K_POP,	 /* POP reg */
	K_CALLR, /* CALL rel */
	K_RET,	 /* RET (imm16) */
	K_IND,	 /* CALL, JMP r/m64 (dec: CALL) */
	K_NOP,	 /* NOP, PAUSE, the hint NOPs (0F 0D, 0F 18-1F): no access, no fault */
	K_UNARY, /* NOT (op 2), NEG (op 3) */
	K_DIV,	 /* DIV r/m (unsigned) */
	K_MUL,	 /* MUL (op 4), IMUL (op 5) r/m: one operand */
};

struct inl {
	enum kind k;
	unsigned int op, n;    /* ALU op; operand size */
	unsigned int dst, src; /* guest registers; src KAP_SOFT_NOREG: imm */
	uint64_t imm;
	bool dec;
	/* 1, the source is [m]; 2, the destination is, read only (CMP, TEST); 3, the destination
	 * is, read, changed and written back (emit_rmw) */
	unsigned int mem;
	bool cl; /* K_SHIFT: the count is CL's */
};

/* Whether d's memory operand can be accessed inline (else: the handler). */
static bool mem_ok(const struct kap_soft_insn *d, unsigned int mode)
{
	return d->has_modrm && d->mod != 3 && d->asize != 2 && (!d->rip_rel || mode == 8);
}

static enum kind classify(const struct kap_soft_op *o, unsigned int mode, struct inl *x)
{
	const struct kap_soft_insn *d = &o->d;
	memset(x, 0, sizeof(*x));
	x->k = K_CALL;
	x->src = KAP_SOFT_NOREG;
	if (!o->fn || (d->pfx & KAP_SOFT_PFX_LOCK))
		return K_CALL;
	unsigned int map = d->op >> 8, b = d->op & 0xff;
	bool reg_rm = d->has_modrm && d->mod == 3;
	if (map == KAP_SOFT_MAP_0F) {
		if (b == 0x0d || (b >= 0x18 && b <= 0x1f))
			return x->k = K_NOP; /* exec.c's x_nop */
		if (b >= 0x80 && b < 0x90 && (mode == 8 || d->osize == 4)) {
			x->imm = d->imm;
			return x->k = K_JCC;
		}
		if ((b & 0xf0) == 0x40 || (b & 0xf0) == 0x90) { /* CMOVcc, SETcc */
			if (!reg_rm && !mem_ok(d, mode))
				return K_CALL;
			x->op = b & 0xf;
			x->n = b < 0x90 ? d->osize : 1;
			x->dst = b < 0x90 ? d->reg : d->rm;
			x->src = d->rm;
			x->mem = !reg_rm;
			return x->k = b < 0x90 ? K_CMOV : K_SETCC;
		}
		if (b == 0xb6 || b == 0xb7 || b == 0xbe || b == 0xbf) {
			if (!reg_rm && !mem_ok(d, mode))
				return K_CALL;
			x->n = b & 1 ? 2 : 1; /* the source's size */
			x->dec = b >= 0xbe;   /* sign-extending */
			x->dst = d->reg;
			x->src = d->rm;
			x->mem = !reg_rm;
			return x->k = K_MOVX;
		}
		if (b != 0xaf || d->osize == 1)
			return K_CALL;
		b = 0xaf | 0x100;
	}
	if (map != KAP_SOFT_MAP_1 && b != (0xaf | 0x100))
		return K_CALL;
	if (b < 0x40 && (b & 7) <= 5) {
		x->op = (b >> 3) & 7;
		switch (b & 7) {
		case 0:
		case 1:
			x->n = opsz(d);
			x->dst = d->rm;
			x->src = d->reg;
			if (!reg_rm) { /* CMP [m], reg: no store; the others write back */
				if (!mem_ok(d, mode))
					return K_CALL;
				x->mem = x->op == 7 ? 2 : 3;
			}
			break;
		case 2:
		case 3:
			x->n = opsz(d);
			x->dst = d->reg;
			x->src = d->rm;
			if (!reg_rm) {
				if (!mem_ok(d, mode))
					return K_CALL;
				x->mem = 1;
				x->src = KAP_SOFT_NOREG;
			}
			break;
		case 4:
			x->n = 1;
			x->dst = 0;
			x->imm = d->imm;
			break;
		default:
			x->n = d->osize;
			x->dst = 0;
			x->imm = imm_z(d);
			break;
		}
		return x->k = K_ALU;
	}
	if (mode != 8 && b >= 0x40 && b < 0x50) {
		x->n = d->osize;
		x->dst = b & 7;
		x->dec = b & 8;
		return x->k = K_INCDEC;
	}
	switch (b) {
	case 0x80:
	case 0x81:
	case 0x83:
		if (!reg_rm) {
			if (!mem_ok(d, mode))
				return K_CALL;
			x->mem = (d->reg & 7) == 7 ? 2 : 3;
		}
		x->op = d->reg & 7;
		x->n = opsz(d);
		x->dst = d->rm;
		x->imm = b == 0x81 ? imm_z(d) : sext(d->imm, 1);
		return x->k = K_ALU;
	case 0x84:
	case 0x85:
		if (!reg_rm) {
			if (!mem_ok(d, mode))
				return K_CALL;
			x->mem = 2;
		}
		x->op = 8;
		x->n = opsz(d);
		x->dst = d->rm;
		x->src = d->reg;
		return x->k = K_ALU;
	case 0xa8:
	case 0xa9:
		x->op = 8;
		x->n = opsz(d);
		x->dst = 0;
		x->imm = x->n == 1 ? d->imm : imm_z(d);
		return x->k = K_ALU;
	case 0x6a:
	case 0x68:
		x->n = mode == 8 ? (d->osize == 2 ? 2 : 8) : d->osize; /* stack_osize */
		x->imm = b == 0x6a ? sext(d->imm, 1) : imm_z(d);
		return x->k = K_PUSH;
	case 0xe8:
	case 0xc2:
	case 0xc3:
		if (mode != 8 && d->osize != 4)
			return K_CALL;
		x->n = mode; /* branch_osize */
		x->imm = b == 0xc3 ? 0 : d->imm;
		return x->k = b == 0xe8 ? K_CALLR : K_RET;
	case 0xfe:
	case 0xff:
		if (b == 0xff && mode == 8 && ((d->reg & 7) == 2 || (d->reg & 7) == 4) &&
		    (reg_rm || mem_ok(d, mode))) {
			x->n = 8;
			x->dec = (d->reg & 7) == 2;
			x->src = d->rm;
			x->mem = !reg_rm;
			return x->k = K_IND;
		}
		/* INC/DEC of memory: inline (emit_rmw), but through FS or GS the handler: Linux's
		 * per-CPU incl/decl %gs: inline, or inside longer blocks, hung the 2-vCPU boot
		 * (the AP waiting for jiffies), cause not found (docs/vm.md, the code
		 * generator). */
		if ((d->reg & 7) > 1)
			return K_CALL;
		if (!reg_rm) {
			if (d->seg == KAP_SOFT_FS || d->seg == KAP_SOFT_GS || !mem_ok(d, mode))
				return K_CALL;
			x->n = opsz(d);
			x->dec = d->reg & 1;
			x->mem = 3;
			return x->k = K_INCDEC;
		}
		x->n = opsz(d);
		x->dst = d->rm;
		x->dec = d->reg & 1;
		return x->k = K_INCDEC;
	case 0xf6:
	case 0xf7:
		if ((d->reg & 7) == 7 || (!reg_rm && !mem_ok(d, mode)))
			return K_CALL; /* IDIV: the handler */
		x->n = opsz(d);
		x->dst = d->rm;
		if ((d->reg & 7) <= 1) { /* TEST r/m, imm (/1: exec.c's alias) */
			x->op = 8;
			x->imm = x->n == 1 ? d->imm : imm_z(d);
			x->mem = reg_rm ? 0 : 2;
			return x->k = K_ALU;
		}
		x->op = d->reg & 7;
		if (x->op >= 4) {
			x->src = d->rm;
			x->mem = !reg_rm;
			return x->k = x->op == 6 ? K_DIV : K_MUL;
		}
		x->mem = reg_rm ? 0 : 3;
		return x->k = K_UNARY;
	case 0x90: /* NOP, PAUSE (F3 90): exec.c's x_xchg does nothing; with REX.B, XCHG r8 */
		return (d->rex & 1) ? K_CALL : (x->k = K_NOP);
	case 0x88:
	case 0x89:
		x->n = opsz(d);
		x->dst = d->rm;
		x->src = d->reg;
		if (!reg_rm)
			return mem_ok(d, mode) ? (x->k = K_STORE) : K_CALL;
		return x->k = K_MOV;
	case 0x8a:
	case 0x8b:
		x->n = opsz(d);
		x->dst = d->reg;
		x->src = d->rm;
		if (!reg_rm)
			return mem_ok(d, mode) ? (x->k = K_LOAD) : K_CALL;
		return x->k = K_MOV;
	case 0xc6:
	case 0xc7:
		if ((d->reg & 7) != 0)
			return K_CALL;
		x->n = opsz(d);
		x->dst = d->rm;
		x->imm = b == 0xc6 ? d->imm : imm_z(d);
		if (!reg_rm)
			return mem_ok(d, mode) ? (x->k = K_STORE) : K_CALL;
		return x->k = K_MOV;
	case 0x69:
	case 0x6b:
	case 0xaf | 0x100: /* 0F AF, renumbered above */
		if (b != (0xaf | 0x100)) {
			x->imm = b == 0x69 ? imm_z(d) : sext(d->imm, 1);
			x->dec = true; /* (with an immediate) */
		}
		x->n = d->osize;
		x->dst = d->reg;
		x->src = d->rm;
		if (!reg_rm) {
			if (!mem_ok(d, mode))
				return K_CALL;
			x->mem = 1;
		}
		return x->k = K_IMUL;
	case 0xc0:
	case 0xc1:
	case 0xd0:
	case 0xd1:
	case 0xd2:
	case 0xd3: {
		unsigned int op = d->reg & 7, n = opsz(d), bits = 8 * n;
		unsigned int cnt = b >= 0xd0 ? 1 : (unsigned int)d->imm & (n == 8 ? 63 : 31);
		if ((!reg_rm && !mem_ok(d, mode)) || op == 2 || op == 3)
			return K_CALL;
		if (b >= 0xd2) {
			/* by CL: 32 and 64 bits, where the masked count is below the size and
			 * the host's count mask is the guest's; 8 and 16 bits can go past the
			 * size (exec.c's choices there): the handler */
			if (n < 4)
				return K_CALL;
			x->cl = true;
		} else if (cnt == 0 || (op <= 1 ? cnt % bits == 0 : cnt >= bits)) {
			return K_CALL; /* a whole-size rotate, an over-long shift: the handler */
		}
		x->op = op;
		x->n = n;
		x->dst = d->rm;
		x->imm = op <= 1 ? cnt % bits : cnt;
		x->mem = reg_rm ? 0 : 3;
		return x->k = K_SHIFT;
	}
	case 0x63: /* MOVSXD (64-bit code only: ARPL has no handler) */
		if (mode != 8 || (!reg_rm && !mem_ok(d, mode)))
			return K_CALL;
		x->n = 4;
		x->dec = true;
		x->dst = d->reg;
		x->src = d->rm;
		x->mem = !reg_rm;
		return x->k = K_MOVX;
	case 0x8d:
		if (d->mod == 3 || d->asize == 2 || (d->rip_rel && mode != 8))
			return K_CALL;
		return x->k = K_LEA;
	case 0xeb:
	case 0xe9:
		if (mode != 8 && d->osize != 4)
			return K_CALL;
		x->imm = d->imm;
		return x->k = K_JMP;
	}
	if (b >= 0x50 && b < 0x60) {
		x->n = mode == 8 ? (d->osize == 2 ? 2 : 8) : d->osize; /* stack_osize */
		x->dst = x->src = (b & 7) | ((d->rex & 1u) << 3);
		return x->k = b < 0x58 ? K_PUSH : K_POP;
	}
	if (b >= 0xb0 && b < 0xc0) {
		x->n = b < 0xb8 ? 1 : d->osize;
		x->dst = (b & 7) | ((d->rex & 1u) << 3);
		x->imm = d->imm;
		return x->k = K_MOV;
	}
	if (b >= 0x70 && b < 0x80 && (mode == 8 || d->osize == 4)) {
		x->imm = d->imm;
		return x->k = K_JCC;
	}
	return K_CALL;
}

/* ---- compiling a block ---- */

struct jc {
	struct em e;
	struct kap_soft_cpu *cpu;
	struct kap_soft_jit *j;
	struct kap_soft_block *b;
	unsigned int mode;
	int64_t synced;	 /* cpu->rip is the block's start plus this */
	bool flags_host; /* lf_op is LF_HOST (known at compile time) */
	bool pending;	 /* a flag image in RDX not yet stored as the lazy flags */
	bool in_rflags;	 /* pending, but still in the host's RFLAGS only (a Jcc follows) */
	bool jcc_next;	 /* the next instruction is a Jcc (which ends the block) */
	bool p_logic;	 /* it is a logical operation's: AF is 0 (exec.c's choice) */
	size_t stop_fix[KAP_SOFT_BLOCK_MAX]; /* jumps to the "handler asked to stop" exit */
	unsigned int nstop;
	unsigned int nlink;
	/* The register cache: guest register r's 64 bits are also in host register
	 * cache_host[slot[r]] (slot -1: only in cpu->r[]). Write-through, so cpu->r[] is always
	 * exact; only the host's callee-saved registers, so calls keep them. */
	int8_t slot[16];
	int8_t owner[4];     /* the guest register a slot holds, or -1 */
	uint32_t used_at[4]; /* when a slot was last used: the least recent one is reused */
	uint32_t tick;
	/* A block that jumps back to its own start (a loop) is compiled twice: the first pass
	 * notes which registers the cache holds at that jump (seen, owner_at_loop); the second
	 * loads them on entry, and where the cache holds the same at the jump, it goes straight
	 * back to `warm`, after the loads. */
	bool first_pass, seen, looping;
	/* the flags on entry are overwritten before anything can look at them (flags_dead): the
	 * second pass sets lf_op to LF_HOST on entry, and the jump back merges none */
	bool entry_dead;
	/* the guest register the next instruction overwrites whole before anything can read
	 * cpu->r[] (overwrites): this one's store of it to memory is left out, or -1 */
	int skip_store;
	int8_t owner_at_loop[4];
	size_t warm;
	/* A PUSH or CALL whose store emit_access is emitting: what it does once the store is
	 * done, for the exit when that store asks to stop (stop_exit). n: the stack pointer
	 * (host register sp) moves down by n bytes, 0: none; call: RIP is then the block's start
	 * plus to, or (ind) the target in cpu->next_rip. */
	struct {
		unsigned int n, sp;
		bool call, ind;
		int64_t to;
	} push;
};

static const unsigned int cache_host[4] = {RBP, R13, R14, R15};

/* Forgets every cached register (a handler may have changed any of them). */
static void cache_drop(struct jc *c)
{
	memset(c->slot, -1, sizeof(c->slot));
	memset(c->owner, -1, sizeof(c->owner));
}

static void cache_forget(struct jc *c, unsigned int r)
{
	if (r < 16 && c->slot[r] >= 0) {
		c->owner[c->slot[r]] = -1;
		c->slot[r] = -1;
	}
}

/* The host register caching guest register r, or -1. */
static int cache_find(struct jc *c, unsigned int r)
{
	if (r >= 16 || c->slot[r] < 0)
		return -1;
	c->used_at[c->slot[r]] = ++c->tick;
	return (int)cache_host[c->slot[r]];
}

/* A host register for guest register r (which it does not hold yet): the least recently used
 * slot. */
static unsigned int cache_take(struct jc *c, unsigned int r)
{
	unsigned int k = 0;
	for (unsigned int i = 0; i < 4; i++) {
		if (c->owner[i] < 0) {
			k = i;
			break;
		}
		if (c->used_at[i] < c->used_at[k])
			k = i;
	}
	if (c->owner[k] >= 0)
		c->slot[c->owner[k]] = -1;
	c->owner[k] = (int8_t)r;
	c->slot[r] = (int8_t)k;
	c->used_at[k] = ++c->tick;
	return cache_host[k];
}

/* The host register holding guest register r's 64 bits, loading it into the cache first. */
static unsigned int cache_reg(struct jc *c, unsigned int r)
{
	int h = cache_find(c, r);
	if (h >= 0)
		return (unsigned int)h;
	unsigned int t = cache_take(c, r);
	op_mem(&c->e, W, 0x8b, t, RBX, REG_OFF(r));
	return t;
}

/* Guest register r of size n (get_reg: AH-BH without REX) into host register h. */
static void ld_reg(struct jc *c, const struct kap_soft_insn *d, unsigned int r, unsigned int n,
		   unsigned int h)
{
	struct em *e = &c->e;
	int32_t off = REG_OFF(r);
	if (n == 1) {
		if (!d->rex && r >= 4 && r < 8)
			off = REG_OFF(r - 4) + 1;
		op_mem(e, 0, 0x0fb6, h, RBX, off);
	} else if (n == 2) {
		op_mem(e, 0, 0x0fb7, h, RBX, off);
	} else { /* mov h, the cached register (32 bits: zero-extended, as a load would) */
		op_rr(e, n == 8 ? W : 0, 0x89, cache_reg(c, r), h);
	}
}

/* RAX into guest register r of size n (set_reg); for n == 4 RAX's upper half must be 0. */
static void st_reg(struct jc *c, const struct kap_soft_insn *d, unsigned int r, unsigned int n)
{
	struct em *e = &c->e;
	int32_t off = REG_OFF(r);
	if (n == 1) {
		if (!d->rex && r >= 4 && r < 8)
			off = REG_OFF(r - 4) + 1;
		op_mem(e, 0, 0x88, RAX, RBX, off);
	} else if (n == 2) {
		op_mem(e, P66, 0x89, RAX, RBX, off);
	} else {
		if ((int)r != c->skip_store)
			op_mem(e, W, 0x89, RAX, RBX, off);
		/* the cache too: the same 64 bits */
		int h = cache_find(c, r);
		op_rr(e, W, 0x89, RAX, h >= 0 ? (unsigned int)h : cache_take(c, r));
		return;
	}
	cache_forget(c, (unsigned int)(off - REG_OFF(0)) / 8);
}

/* cpu->rip += delta in the code size's width. */
static void rip_add(struct jc *c, int64_t delta)
{
	struct em *e = &c->e;
	if (!delta)
		return;
	if (c->mode == 8) {
		if (delta == (int32_t)delta) {
			op_mem(e, W, 0x81, 0, RBX, CPU_OFF(rip));
			e32(e, (uint32_t)delta);
		} else {
			mov_imm64(e, RCX, (uint64_t)delta);
			op_mem(e, W, 0x01, RCX, RBX, CPU_OFF(rip));
		}
	} else {
		/* 32-bit code: RIP's upper half is 0 (kap_soft_jit_ready checks), a dword add
		 * wraps as the interpreter's mask does and leaves it 0 */
		op_mem(e, 0, 0x81, 0, RBX, CPU_OFF(rip));
		e32(e, (uint32_t)delta);
	}
}

static void sync_rip(struct jc *c, int64_t off)
{
	rip_add(c, off - c->synced);
	c->synced = off;
}

/* Stores the flag image in RDX as the lazy flags: lf_op = LF_HOST, lf_res = the image. */
static void merge_flags(struct jc *c)
{
	struct em *e = &c->e;
	if (!c->pending)
		return;
	if (c->in_rflags) {
		e8(e, 0x9c); /* pushfq */
		e8(e, 0x5a); /* pop rdx */
		c->in_rflags = false;
	}
	if (c->p_logic) {
		op_rr(e, 0, 0x81, 4, RDX); /* and edx, ~AF */
		e32(e, ~(uint32_t)KAP_SOFT_AF);
	}
	op_mem(e, W, 0x89, RDX, RBX, CPU_OFF(lf_res));
	if (!c->flags_host) {
		op_mem(e, 0, 0xc6, 0, RBX, CPU_OFF(lf_op)); /* mov byte [lf_op], LF_HOST */
		e8(e, KAP_SOFT_LF_HOST);
	}
	c->pending = false;
	c->flags_host = true;
}

/* Leaves the block for the loop (exit -1: not linkable) or through linkable exit k. */
static void leave(struct jc *c, int k)
{
	struct em *e = &c->e;
	op_mem(e, 0, 0xc7, 0, R12, JIT_OFF(last_exit));
	e32(e, (uint32_t)k);
	mov_imm64(e, RAX, (uint64_t)(uintptr_t)c->b);
	op_mem(e, W, 0x89, RAX, R12, JIT_OFF(last));
	size_t at = jump32(e, -1);
	/* to the exit stub at the buffer's start */
	int64_t here = (int64_t)(e->buf - c->j->rw) + (int64_t)at + 4;
	uint32_t rel = (uint32_t)((int64_t)(JIT_STUB / 2) - here);
	if (at + 4 <= e->cap)
		memcpy(e->buf + at, &rel, 4);
}

/* The jump cache's slot for a block at linear address lin (exit_indirect does the same). */
static unsigned int jc_slot(uint64_t lin)
{
	return (unsigned int)(lin ^ (lin >> 10)) & (KAP_SOFT_JC_SIZE - 1);
}

#define JC_OFF(f)                                                                                  \
	((int32_t)(offsetof(struct kap_soft_jit, jc) + offsetof(struct kap_soft_jc_entry, f)))
/* A TLB entry's field, from RBX plus tlb_slot's register times 8; an entry's tag for an access
 * kind (KAP_SOFT_TLB_*) at a CPL; the physical pages, from RBX plus tlb_slot's register. */
#define TLB_OFF(f)                                                                                 \
	((int32_t)(offsetof(struct kap_soft_cpu, tlb.e) + offsetof(struct kap_soft_tlb_entry, f)))
#define TLB_TAG_OFF(kind, cpl) (TLB_OFF(tag) + (int32_t)(16 * (kind) + ((cpl) == 3 ? 8 : 0)))
#define TLB_PHYS_OFF	       ((int32_t)offsetof(struct kap_soft_cpu, tlb.phys))
_Static_assert(sizeof(struct kap_soft_jc_entry) == 32,
	       "exit_indirect indexes the jump cache by a shift");

/* dst = linear address lin's TLB slot times 8: ((lin >> 12) & (size - 1)) * 8, in 32 bits
 * (lin's low half: the slot uses bits 12-21 only). Its entry is at [rbx + dst * 8 + TLB_OFF],
 * its physical page at [rbx + dst + TLB_PHYS_OFF]. */
static void tlb_slot(struct em *e, unsigned int dst, unsigned int lin)
{
	op_rr(e, 0, 0x89, lin, dst); /* mov dst32, lin32 */
	op_rr(e, 0, 0xc1, 5, dst);   /* shr dst32, 12 - 3 */
	e8(e, 9);
	op_rr(e, 0, 0x81, 4, dst); /* and dst32, (size - 1) << 3 */
	e32(e, (KAP_SOFT_TLB_SIZE - 1) << 3);
}

/*
 * cpu->rip holds the guest's next RIP (absolute, in the code size's width), RSP and all other
 * state are stored, flags not yet merged; leave the block. Used where the next RIP is known
 * only at run time but nothing the next block depends on can have changed: the code size, the
 * CPL, CS's base and the page tables are the chain's (what changes them leaves by leave()), and
 * no block was dropped (a handler that may drop some is followed by the stop_block check). So
 * the jump cache's entry for the target's linear address is the block the loop would find when
 * its key is the chain's (jc_key: the same epoch, code size and CPL) and the TLB still maps the
 * page to the same physical page with fetch permission at this CPL (fetch_phys's lookup:
 * anything that flushes or changes a mapping clears the TLB entry, and an entry exists only
 * after a walk that allowed the fetch). Before it, the budget and the written-page flag, as a
 * link's; on a miss, to the loop.
 */
static void exit_indirect(struct jc *c)
{
	struct em *e = &c->e;
	size_t out[8];
	unsigned int no = 0;
	merge_flags(c);
	op_mem(e, 0, 0x83, 5, R12, JIT_OFF(budget)); /* sub dword [budget], 1 */
	e8(e, 1);
	out[no++] = jump32(e, 0xe); /* jle: spent */
	op_mem(e, W, 0x8b, RAX, R12, JIT_OFF(written_any));
	op_mem(e, 0, 0x80, 7, RAX, 0); /* cmp byte [rax], 0 */
	e8(e, 0);
	out[no++] = jump32(e, 0x5);
	/* RAX = the linear address: in 32-bit code CS's base plus EIP, which the cache only holds
	 * below 4 GiB (kap_soft_jit_run), so a sum that wraps never matches */
	op_mem(e, W, 0x8b, RAX, RBX, CPU_OFF(rip));
	if (c->mode != 8)
		op_mem(e, W, 0x03, RAX, RBX, CPU_OFF(seg[KAP_SOFT_CS].base));
	/* RCX = the entry's offset from j: jc_slot(lin) * 32 */
	op_rr(e, W, 0x89, RAX, RCX); /* mov rcx, rax */
	op_rr(e, W, 0xc1, 5, RCX);   /* shr rcx, 10 */
	e8(e, 10);
	op_rr(e, 0, 0x31, RAX, RCX); /* xor ecx, eax */
	op_rr(e, 0, 0xc1, 4, RCX);   /* shl ecx, 5 */
	e8(e, 5);
	op_rr(e, 0, 0x81, 4, RCX); /* and ecx, (size - 1) << 5 */
	e32(e, (KAP_SOFT_JC_SIZE - 1) << 5);
	op_rr(e, W, 0x01, R12, RCX); /* add rcx, r12 */
	op_mem(e, W, 0x3b, RAX, RCX, JC_OFF(lin));
	out[no++] = jump32(e, 0x5);
	op_mem(e, W, 0x8b, RDX, R12, JIT_OFF(jc_key));
	op_mem(e, W, 0x3b, RDX, RCX, JC_OFF(key));
	out[no++] = jump32(e, 0x5);
	/* RDX = lin's TLB slot (as emit_mem finds it); its fetch tag at this CPL */
	tlb_slot(e, RDX, RAX);
	op_rr(e, W, 0x81, 4, RAX); /* and rax, ~0xfff */
	e32(e, 0xfffff000u);
	op_sib(e, W, 0x3b, RAX, RBX, RDX, 3, TLB_TAG_OFF(KAP_SOFT_TLB_FETCH, c->b->jit.cpl));
	out[no++] = jump32(e, 0x5);
	op_sib(e, W, 0x8b, RAX, RBX, RDX, 0, TLB_PHYS_OFF);
	op_mem(e, W, 0x3b, RAX, RCX, JC_OFF(phys));
	out[no++] = jump32(e, 0x5);
	op_mem(e, 0, 0xff, 4, RCX, JC_OFF(code)); /* jmp [code] */
	for (unsigned int i = 0; i < no; i++)
		fix(e, out[i], e->pos);
	leave(c, -1);
}

/* An exit to the block's start plus t (flags merged already). */
static void exit_to(struct jc *c, int64_t t)
{
	struct em *e = &c->e;
	bool back = t == 0 && c->looping && !memcmp(c->owner, c->owner_at_loop, sizeof(c->owner)) &&
		    (!c->entry_dead || c->flags_host);
	/* a jump back with dead entry flags stores none, except on its way out to the loop
	 * (where the checks before it keep RFLAGS: a flag image still only there survives) */
	if (!back || !c->entry_dead || c->synced != t)
		merge_flags(c);
	sync_rip(c, t);
	int64_t in_page = (int64_t)(c->b->phys & 0xfff) + t;
	if (in_page < 0 || in_page >= 0x1000 || c->nlink >= 2) {
		exit_indirect(c); /* another page, or a third fixed target: the jump cache */
		return;
	}
	if (t == 0 && c->first_pass && !c->seen) {
		memcpy(c->owner_at_loop, c->owner, sizeof(c->owner));
		c->seen = true;
	}
	if (back) {
		/* Back to this block's own start, which cannot have been dropped while it runs
		 * (that leaves it at once) unless another vCPU or the VMM wrote to the page:
		 * the budget and the written-page flag, as for a link, then past the loads. None of
		 * it changes RFLAGS: the budget is 0 when spent (kap_soft_jit_kick sets 0, the
		 * other exits leave at 0 or below), so it is tested before the decrement. */
		op_mem(e, 0, 0x8b, RCX, R12, JIT_OFF(budget)); /* mov ecx, [budget] */
		e8(e, 0xe3);				       /* jrcxz spent */
		size_t spent = e->pos;
		e8(e, 0);
		op_mem(e, 0, 0x8d, RCX, RCX, -1);	       /* lea ecx, [rcx - 1] */
		op_mem(e, 0, 0x89, RCX, R12, JIT_OFF(budget)); /* mov [budget], ecx */
		op_mem(e, W, 0x8b, RAX, R12, JIT_OFF(written_any));
		op_mem(e, 0, 0x0fb6, RCX, RAX, 0); /* movzx ecx, byte [rax] */
		e8(e, 0xe3);			   /* jrcxz go: not written */
		size_t go = e->pos;
		e8(e, 0);
		fix8(e, spent, e->pos);
		merge_flags(c);
		leave(c, -1);
		fix8(e, go, e->pos);
		fix(e, jump32(e, -1), c->warm);
		return;
	}
	unsigned int k = c->nlink++;
	c->b->jit.exit_phys[k] = (c->b->phys & ~0xfffULL) + (uint64_t)in_page;
	op_mem(e, 0, 0x83, 5, R12, JIT_OFF(budget)); /* sub dword [budget], 1 */
	e8(e, 1);
	size_t out1 = jump32(e, 0xe); /* jle: spent */
	/* Another vCPU or the VMM wrote to a page this vCPU has blocks from (code_owners): the
	 * loop drops them first, as it would before the next interpreted block. */
	op_mem(e, W, 0x8b, RAX, R12, JIT_OFF(written_any));
	op_mem(e, 0, 0x80, 7, RAX, 0); /* cmp byte [rax], 0 */
	e8(e, 0);
	size_t out3 = jump32(e, 0x5);
	/* The link: to the next instruction (the way out) until kap_soft_jit_run patches it to
	 * the block that ran next, and again when that block is dropped (kap_soft_jit_drop). */
	size_t link = jump32(e, -1);
	c->b->jit.patch[k] = (uint32_t)link;
	fix(e, out1, e->pos);
	fix(e, out3, e->pos);
	fix(e, link, e->pos);
	leave(c, (int)k);
}

/* The interpreter's handler for op o at offset off. */
static void emit_call(struct jc *c, const struct kap_soft_op *o, int64_t off, bool check_stop)
{
	struct em *e = &c->e;
	merge_flags(c);
	sync_rip(c, off);
	/* next_rip = rip + len in the code size's width */
	op_mem(e, c->mode == 8 ? W : 0, 0x8b, RAX, RBX, CPU_OFF(rip));
	op_rr(e, c->mode == 8 ? W : 0, 0x83, 0, RAX);
	e8(e, o->d.len);
	op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(next_rip));
	op_rr(e, W, 0x89, RBX, RDI);
	mov_imm64(e, RSI, (uint64_t)(uintptr_t)&o->d);
	if (!o->fn) {
		call_abs(e, (const void *)kap_soft_unimplemented);
		e8(e, 0x0f); /* ud2: not reached */
		e8(e, 0x0b);
		return;
	}
	call_abs(e, (const void *)o->fn);
	cache_drop(c); /* it may have written any register */
	if (o->d.op == 0x07 || o->d.op == 0x17 || o->d.op == 0x1f) {
		op_mem(e, 0, 0xc6, 0, R12, JIT_OFF(flat)); /* POP ES/SS/DS: not known flat */
		e8(e, 0);
	}
	op_mem(e, W, 0x8b, RAX, RBX, CPU_OFF(next_rip));
	op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(rip));
	c->synced = off + o->d.len;
	c->flags_host = false;
	if (!check_stop)
		return;
	op_mem(e, 0, 0x80, 7, RBX, CPU_OFF(stop_block)); /* cmp byte [stop_block], 0 */
	e8(e, 0);
	c->stop_fix[c->nstop++] = jump32(e, 0x5);
}

static unsigned int size_fl(unsigned int n)
{
	return n == 2 ? P66 : n == 8 ? W : 0;
}

/* Whether the flags are overwritten from op `first` on before anything can look at them. */
static bool flags_dead_from(const struct kap_soft_block *b, unsigned int first)
{
	for (unsigned int k = first; k < b->n; k++) {
		struct inl x;
		enum kind kd = classify(&b->ops[k], b->mode, &x);
		if (x.mem == 3)
			return false; /* read-modify-write: may fault */
		if (((kd == K_ALU && x.op != 2 && x.op != 3) || kd == K_IMUL) && !x.mem)
			return true; /* all overwritten, no fault (ADC, SBB read CF) */
		if (kd == K_SHIFT) {
			if (x.cl)
				return false; /* a count of 0 keeps them */
			if (x.op > 1)
				return true; /* shifts set them all */
			continue;	     /* rotates set CF and OF, the others pass through */
		}
		if (kd == K_UNARY) {
			if (x.op == 3)
				return true; /* NEG sets them all */
			continue;	     /* NOT none */
		}
		if (kd != K_MOV && kd != K_LEA && kd != K_NOP && (kd != K_MOVX || x.mem))
			return false;
	}
	return false;
}

/* Whether the flags op i sets are overwritten before anything can look at them. */
static bool flags_dead(const struct kap_soft_block *b, unsigned int i)
{
	return flags_dead_from(b, i + 1);
}

/*
 * The guest register op k (if any) overwrites whole (32 or 64 bits) without a call, a fault or
 * a read of cpu->r[] for it before: the op before it need not store it to memory, only to the
 * register cache, where op k finds it (op k reads it, if at all, before it loads any other
 * register, so nothing evicts it first). -1: none.
 */
static int overwrites(const struct kap_soft_block *b, unsigned int k)
{
	if (k >= b->n)
		return -1;
	struct inl x;
	const struct kap_soft_insn *d = &b->ops[k].d;
	switch (classify(&b->ops[k], b->mode, &x)) {
	case K_ALU:
		return !x.mem && x.op != 7 && x.op != 8 && x.n >= 4 ? (int)x.dst : -1;
	case K_MOV:
		return x.n >= 4 ? (int)x.dst : -1;
	case K_LEA:
		return d->osize >= 4 && d->base != d->reg && d->index != d->reg ? (int)d->reg : -1;
	case K_IMUL:
		return !x.mem && x.n >= 4 && (x.dec || x.src == x.dst) ? (int)x.dst : -1;
	case K_SHIFT:
		return !x.mem && !x.cl && x.n >= 4 && (x.op > 1 || flags_dead(b, k)) ? (int)x.dst
										     : -1;
	default:
		return -1;
	}
}

/* ---- memory operands ---- */

#define SEG_OFF(s, f)                                                                              \
	((int32_t)(offsetof(struct kap_soft_cpu, seg) + (s) * sizeof(struct kap_soft_seg) +        \
		   offsetof(struct kap_soft_seg, f)))
_Static_assert(sizeof(atomic_bool) == 1, "exit_to compares the written-page flag as a byte");
_Static_assert(sizeof(struct kap_soft_tlb_entry) == 64 && sizeof(uint64_t) == 8,
	       "emit_lookup indexes the TLB by a scale of 8 on tlb_slot's slot times 8");
_Static_assert(offsetof(struct kap_soft_seg, present) == offsetof(struct kap_soft_seg, type) + 2 &&
		   sizeof(bool) == 1,
	       "emit_mem reads a segment's type, DPL and present flag as one dword");

/* dst = the stack pointer in host register sp plus delta, in the stack's width: 64 bits in
 * 64-bit code, else 32 (inline only while SS is flat, which includes 32 bits: flat). */
static void sp_lea(struct jc *c, unsigned int dst, unsigned int sp, int32_t delta)
{
	op_mem(&c->e, c->mode == 8 ? W : 0, 0x8d, dst, sp, delta);
}

/*
 * The exit when a store asked to stop (stop_block: it wrote to a page with translations): RIP
 * past the instruction (the block's start plus next), as run_block leaves it. A PUSH's or
 * CALL's store is done then, so what the instruction does after it is done here first: the
 * stack pointer moved, RIP the CALL's target.
 */
static void stop_exit(struct jc *c, int64_t next)
{
	struct em *e = &c->e;
	if (c->push.n) {
		sp_lea(c, RAX, c->push.sp, -(int32_t)c->push.n);
		op_mem(e, W, 0x89, RAX, RBX, REG_OFF(4));
		if (c->push.ind) {
			op_mem(e, W, 0x8b, RAX, RBX, CPU_OFF(next_rip));
			op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(rip));
			leave(c, -1);
			return;
		}
		if (c->push.call)
			next = c->push.to;
	}
	rip_add(c, next - c->synced);
	leave(c, -1);
}

/* RSI = the effective address's offset (ea()) of the instruction at off. */
static void emit_ea(struct jc *c, const struct kap_soft_insn *d, int64_t off)
{
	struct em *e = &c->e;
	if (d->base != KAP_SOFT_NOREG && !d->rip_rel && !d->disp && d->index == KAP_SOFT_NOREG &&
	    d->asize == 4) {
		op_rr(e, 0, 0x89, cache_reg(c, d->base), RSI); /* mov esi, r32: zero-extended */
		return;
	}
	if (d->base != KAP_SOFT_NOREG && !d->rip_rel) {
		op_rr(e, W, 0x89, cache_reg(c, d->base), RSI);
		if (d->disp == (int32_t)d->disp && d->disp) {
			op_rr(e, W, 0x81, 0, RSI); /* add rsi, simm32 */
			e32(e, (uint32_t)d->disp);
		} else if (d->disp) {
			mov_imm64(e, RCX, (uint64_t)d->disp);
			op_rr(e, W, 0x01, RCX, RSI);
		}
	} else {
		mov_imm64(e, RSI, (uint64_t)d->disp);
	}
	if (d->rip_rel) { /* next_rip: the block's start + off + len */
		op_mem(e, W, 0x03, RSI, RBX, CPU_OFF(rip));
		op_rr(e, W, 0x81, 0, RSI);
		e32(e, (uint32_t)(off - c->synced + d->len));
	}
	if (d->base != KAP_SOFT_NOREG && d->rip_rel)
		op_rr(e, W, 0x01, cache_reg(c, d->base), RSI);
	if (d->index != KAP_SOFT_NOREG) {
		op_rr(e, W, 0x89, cache_reg(c, d->index), RCX);
		if (d->scale) {
			op_rr(e, W, 0xc1, 4, RCX);
			e8(e, d->scale);
		}
		op_rr(e, W, 0x01, RCX, RSI);
	}
	if (d->asize == 4)
		op_rr(e, 0, 0x89, RSI, RSI); /* mov esi, esi */
}

/* With several vCPUs, after a store: the code-page check (kap_soft_stored's first look, its
 * fence first): ZF clear when the page has translations. R11 = the page's RAM index, loaded
 * here from the TLB entry at slot RCX when load_idx. */
static void code_check(struct em *e, bool load_idx)
{
	e8(e, 0x0f); /* mfence */
	e8(e, 0xae);
	e8(e, 0xf0);
	if (load_idx)
		op_sib(e, 0, 0x8b, 11, RBX, RCX, 3, TLB_OFF(idx)); /* mov r11d, [idx] */
	op_mem(e, W, 0x8b, RAX, RBX, CPU_OFF(code_owners));
	e8(e, 0x4a); /* cmp qword [rax + r11 * 8], 0 */
	e8(e, 0x83);
	e8(e, 0x3c);
	e8(e, 0xd8);
	e8(e, 0x00);
}

/*
 * emit_access's fast path up to the access: the segment checks, then the TLB entry's tag for
 * the access's kind (a write's for a store or a read-modify-write) at this block's CPL against
 * the page of the access's last byte, which a page-crossing access never matches, nor a tag
 * whose access the page does not allow (KAP_SOFT_TLB_NONE). Leaves *lin = the register holding
 * the linear address (RSI, the offset, where that is it; else RDI), RDX = the entry's addend, so
 * the host address is [rdx + *lin], RCX = the TLB slot times 8 (tlb_slot); the jumps to the slow
 * path go into slow (returns how many).
 */
static unsigned int emit_lookup(struct jc *c, unsigned int s, unsigned int n, bool write,
				size_t *slow, unsigned int *lin)
{
	struct em *e = &c->e;
	unsigned int ns = 0, l = RDI;
	if (c->mode == 8) {
		if (s == KAP_SOFT_FS || s == KAP_SOFT_GS) {
			op_rr(e, W, 0x89, RSI, RDI); /* mov rdi, rsi */
			op_mem(e, W, 0x03, RDI, RBX, SEG_OFF(s, base));
		} else {
			l = RSI;
		}
	} else if (s == KAP_SOFT_ES || s == KAP_SOFT_SS || s == KAP_SOFT_DS) {
		/* a flat segment (kap_soft_jit_run looked): the linear address is the offset */
		op_mem(e, 0, 0x80, 7, R12, JIT_OFF(flat)); /* cmp byte [flat], 0 */
		e8(e, 0);
		slow[ns++] = jump32(e, 0x4); /* je */
		l = RSI;		     /* (an offset in 32-bit code: upper half 0) */
	} else {
		/* type, dpl, present in one load: present, writable expand-up data */
		op_mem(e, 0, 0x8b, RCX, RBX, SEG_OFF(s, type));
		op_rr(e, 0, 0x81, 4, RCX); /* and ecx, present byte | type's code, expand-down,
					      writable bits */
		e32(e, 0x00ff000e);
		op_rr(e, 0, 0x81, 7, RCX); /* cmp ecx, present 1, writable */
		e32(e, 0x00010002);
		slow[ns++] = jump32(e, 0x5);
		op_mem(e, W, 0x8d, RCX, RSI, (int32_t)n - 1); /* lea rcx, [rsi + n - 1] */
		op_mem(e, 0, 0x8b, RDX, RBX, SEG_OFF(s, limit));
		op_rr(e, W, 0x39, RDX, RCX); /* cmp rcx, rdx */
		slow[ns++] = jump32(e, 0x7); /* ja */
		op_mem(e, W, 0x8b, RDI, RBX, SEG_OFF(s, base));
		op_rr(e, W, 0x01, RSI, RDI);
		op_rr(e, 0, 0x89, RDI, RDI); /* mov edi, edi */
	}
	tlb_slot(e, RCX, l);
	op_mem(e, W, 0x8d, RDX, l, (int32_t)n - 1); /* lea rdx, [lin + n - 1] */
	op_rr(e, W, 0x81, 4, RDX);		    /* and rdx, ~0xfff */
	e32(e, 0xfffff000u);
	unsigned int kind = write ? KAP_SOFT_TLB_WRITE : KAP_SOFT_TLB_READ;
	op_sib(e, W, 0x3b, RDX, RBX, RCX, 3, TLB_TAG_OFF(kind, c->b->jit.cpl));
	slow[ns++] = jump32(e, 0x5);
	op_sib(e, W, 0x8b, RDX, RBX, RCX, 3, TLB_OFF(addend)); /* mov rdx, [addend] */
	*lin = l;
	return ns;
}

/*
 * An n-byte access at offset RSI in segment s by the len-byte instruction at off: a load into
 * RAX (zero-extended), or a store of R8.
 * The fast path is kap_soft_read/write's TLB path done inline: the segment checks of
 * seg_linear for a present, writable, expand-up data segment (32-bit code; else the slow path
 * decides), the TLB entry's tag for the access at this block's CPL (emit_lookup); then the
 * host access, and for a store the dirty log's check and, with several vCPUs, the code-page
 * check (kap_soft_stored when the log is on or the page has translations; with one vCPU no
 * entry allows writes to such a page: tlb_fill, mark_code). Anything else calls
 * kap_soft_read/write, which do it all (faults included: RIP is the instruction's). A store may end
 * the block (stop_block): RIP is then past it.
 */
static void emit_access(struct jc *c, unsigned int s, unsigned int n, bool write, int64_t off,
			unsigned int len)
{
	struct em *e = &c->e;
	size_t slow[8];
	size_t logged = 0; /* a store: the jump to kap_soft_stored when the dirty log is on */
	unsigned int lin;
	unsigned int ns = emit_lookup(c, s, n, write, slow, &lin);
	if (!write) { /* from [rdx + lin] */
		if (n == 1)
			op_sib(e, 0, 0x0fb6, RAX, RDX, lin, 0, 0);
		else if (n == 2)
			op_sib(e, 0, 0x0fb7, RAX, RDX, lin, 0, 0);
		else
			op_sib(e, n == 8 ? W : 0, 0x8b, RAX, RDX, lin, 0, 0);
	} else {
		if (n == 1)
			op_sib(e, 0, 0x88, 8, RDX, lin, 0, 0); /* mov [rdx + lin], r8b */
		else
			op_sib(e, size_fl(n), 0x89, 8, RDX, lin, 0, 0);
		/* the dirty log (snapshots, migration: kap_mem_log_store), when on: the store
		 * goes through kap_soft_stored, which logs it */
		mov_imm64(e, RAX, (uint64_t)(uintptr_t)&c->cpu->vm->mem.soft_log);
		e8(e, 0x80); /* cmp byte [rax], 0 */
		e8(e, 0x38);
		e8(e, 0x00);
		/* the code-page check (kap_soft_stored's first look, its fence first), with
		 * several vCPUs: with one, a page with translations has no write tag (tlb_fill) */
		if (c->cpu->vm->ncpus > 1) {
			logged = jump32(e, 0x5); /* jne */
			code_check(e, true);
		}
	}
	size_t done = jump32(e, write ? 0x4 : -1); /* a store: je, unless logged or code */
	size_t stop_check = 0;
	if (write) { /* kap_soft_stored logs the store, drops the page's translations */
		if (logged)
			fix(e, logged, e->pos);
		op_sib(e, W, 0x8d, RSI, RDX, lin, 0,
		       0); /* lea rsi, [rdx + lin]: the host address */
		op_rr(e, W, 0x89, RBX, RDI);
		call_abs(e, (const void *)kap_soft_stored);
		stop_check = jump32(e, -1);
	}
	for (unsigned int i = 0; i < ns; i++)
		fix(e, slow[i], e->pos);
	/* the slow path: kap_soft_read(cpu, seg, off, n) or kap_soft_write(..., R8), with RIP
	 * the instruction's (a fault, an MMIO handler); the fast path leaves it as it was */
	rip_add(c, off - c->synced);
	op_rr(e, W, 0x89, RSI, RDX);
	e8(e, 0xbe); /* mov esi, seg */
	e32(e, s);
	e8(e, 0xb9); /* mov ecx, n */
	e32(e, n);
	op_rr(e, W, 0x89, RBX, RDI);
	call_abs(e, write ? (const void *)kap_soft_write : (const void *)kap_soft_read);
	rip_add(c, c->synced - off);
	if (write) { /* a store to a page with translations: leave after it */
		fix(e, stop_check, e->pos);
		op_mem(e, 0, 0x80, 7, RBX, CPU_OFF(stop_block));
		e8(e, 0);
		size_t go_on = jump32(e, 0x4);
		stop_exit(c, off + len);
		fix(e, go_on, e->pos);
	}
	fix(e, done, e->pos);
}

static void emit_mem(struct jc *c, const struct kap_soft_insn *d, unsigned int n, bool write,
		     int64_t off)
{
	emit_ea(c, d, off);
	emit_access(c, ea_seg(d), n, write, off, d->len);
}

static void emit_load(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, int64_t off)
{
	merge_flags(c);
	emit_mem(c, d, x->n, false, off);
	st_reg(c, d, x->dst, x->n);
}

static void emit_store(struct jc *c, const struct kap_soft_insn *d, const struct inl *x,
		       int64_t off)
{
	merge_flags(c);
	if (x->src != KAP_SOFT_NOREG)
		ld_reg(c, d, x->src, x->n, 8);
	else
		mov_imm64(&c->e, 8, x->imm);
	emit_mem(c, d, x->n, true, off);
}

/* After a multiplication (result in RAX): the lazy flags get CF and OF from the host's, SF ZF
 * PF from the result (TEST test_op: 84 for AL, 85 for the size fl), AF 0: exec.c's mul_flags. */
static void mul_flags(struct jc *c, unsigned int fl, unsigned int test_op)
{
	struct em *e = &c->e;
	e8(e, 0x9c); /* pushfq; pop rdx */
	e8(e, 0x5a);
	op_rr(e, 0, 0x81, 4, RDX); /* and edx, CF | OF */
	e32(e, (uint32_t)(KAP_SOFT_CF | KAP_SOFT_OF));
	op_rr(e, fl, test_op, RAX, RAX); /* test eax, eax */
	e8(e, 0x9c);
	e8(e, 0x59); /* pop rcx */
	op_rr(e, 0, 0x81, 4, RCX);
	e32(e, (uint32_t)(KAP_SOFT_SF | KAP_SOFT_ZF | KAP_SOFT_PF));
	op_rr(e, 0, 0x09, RCX, RDX); /* or edx, ecx */
	c->pending = true;
	c->p_logic = false;
	merge_flags(c);
}

/* IMUL: CF and OF from the host's, SF ZF PF from the result, AF 0 (exec.c's mul_flags). */
static void emit_imul(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, bool live,
		      int64_t off)
{
	struct em *e = &c->e;
	merge_flags(c);
	if (x->mem) {
		emit_mem(c, d, x->n, false, off);
	} else {
		ld_reg(c, d, x->src, x->n, RAX);
	}
	unsigned int fl = size_fl(x->n);
	if (x->dec && x->n != 2 && x->imm == (uint64_t)(int64_t)(int32_t)x->imm) {
		op_rr(e, fl, 0x69, RAX, RAX); /* imul eax, eax, imm32 */
		e32(e, (uint32_t)x->imm);
	} else {
		if (x->dec)
			mov_imm64(e, RCX, x->imm);
		else
			ld_reg(c, d, d->reg, x->n, RCX);
		op_rr(e, fl, 0x0faf, RAX, RCX); /* imul eax, ecx */
	}
	if (live) {
		mul_flags(c, fl, 0x85);
	}
	st_reg(c, d, x->dst, x->n);
}

/* Makes the lazy flags LF_HOST at run time (kap_soft_get_flags' image when they were not), so
 * lf_res holds the guest's arithmetic flags for flags_to_host. */
static void flags_as_host(struct jc *c)
{
	struct em *e = &c->e;
	merge_flags(c);
	if (c->flags_host)
		return;
	op_mem(e, 0, 0x80, 7, RBX, CPU_OFF(lf_op)); /* cmp byte [lf_op], LF_HOST */
	e8(e, KAP_SOFT_LF_HOST);
	size_t done = jump32(e, 0x4); /* je */
	op_rr(e, W, 0x89, RBX, RDI);
	call_abs(e, (const void *)kap_soft_get_flags); /* LF_NONE, RAX = the flags */
	op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(lf_res));
	op_mem(e, 0, 0xc6, 0, RBX, CPU_OFF(lf_op)); /* mov byte [lf_op], LF_HOST */
	e8(e, KAP_SOFT_LF_HOST);
	fix(e, done, e->pos);
	c->flags_host = true;
}

/* The host's RFLAGS = the guest's arithmetic flags (lf_res, LF_HOST: flags_as_host). */
static void flags_to_host(struct jc *c)
{
	struct em *e = &c->e;
	op_mem(e, 0, 0xff, 6, RBX, CPU_OFF(lf_res)); /* push qword [lf_res] */
	op_mem(e, W, 0x81, 4, RSP, 0);		     /* and qword [rsp], arithmetic flags */
	e32(e, (uint32_t)KAP_SOFT_ARITH);
	e8(e, 0x9d); /* popfq */
}

/* Whether the host has LAHF/SAHF in 64-bit mode (CPUID 8000_0001h ECX bit 0; the first
 * x86-64 CPUs did not). */
static bool host_sahf(void)
{
	static int has = -1;
	if (has < 0) {
		unsigned int a, b, cx = 0, dx;
		has = __get_cpuid(0x80000001u, &a, &b, &cx, &dx) && (cx & 1);
	}
	return has;
}

/*
 * The host's RFLAGS made to decide condition cc (0-15, as in Jcc) as the guest's flags would,
 * from the LF_HOST image in lf_res (flags_as_host first), without a POPF (about 20 cycles):
 * SAHF loads SF ZF AF PF CF from its low byte; OF (bit 11) by BT into CF for O and NO, or for L,
 * GE, LE and G by an ADD that overflows exactly when it is set, before the SAHF, which keeps OF.
 * Returns the host condition to test (O and NO become C and NC). Uses RAX. A host without
 * SAHF in 64-bit mode gets the image through POPF.
 */
static unsigned int host_cond(struct jc *c, unsigned int cc)
{
	struct em *e = &c->e;
	if (!host_sahf()) {
		flags_to_host(c);
		return cc;
	}
	unsigned int g = cc >> 1;
	if (g == 0) {
		op_mem(e, 0, 0x0fba, 4, RBX, CPU_OFF(lf_res)); /* bt dword [lf_res], 11 */
		e8(e, 11);
		return cc & 1 ? 0x3 : 0x2; /* nc, c */
	}
	if (g >= 6) {
		op_mem(e, 0, 0x8b, RAX, RBX, CPU_OFF(lf_res));
		op_rr(e, 0, 0xc1, 5, RAX); /* shr eax, 11 */
		e8(e, 11);
		op_rr(e, 0, 0x83, 4, RAX); /* and eax, 1 */
		e8(e, 1);
		e8(e, 0x04); /* add al, 0x7f: OF = the guest's */
		e8(e, 0x7f);
	}
	op_mem(e, 0, 0x8a, 4, RBX, CPU_OFF(lf_res)); /* mov ah, [lf_res] */
	e8(e, 0x9e);				     /* sahf */
	return cc;
}

/* The guest's flags into R8 (the lazy ones worked out when not the host's). */
static void flags_to_r8(struct jc *c)
{
	struct em *e = &c->e;
	if (c->flags_host) {
		op_mem(e, W, 0x8b, 8, RBX, CPU_OFF(lf_res));
		return;
	}
	op_mem(e, 0, 0x80, 7, RBX, CPU_OFF(lf_op));
	e8(e, KAP_SOFT_LF_HOST);
	size_t other = jump32(e, 0x5);
	op_mem(e, W, 0x8b, 8, RBX, CPU_OFF(lf_res));
	size_t done = jump32(e, -1);
	fix(e, other, e->pos);
	op_rr(e, W, 0x89, RBX, RDI);
	call_abs(e, (const void *)kap_soft_get_flags);
	op_rr(e, W, 0x89, RAX, 8); /* mov r8, rax */
	fix(e, done, e->pos);
}

/*
 * Shifts and rotates (exec.c's shift()) of RAX, by a constant (already masked and non-zero) or
 * by CL (x->cl: its masked count 0 jumps past it all, returned for the caller to fix: no flag
 * and no bit changes; the count is below the size, see classify): the result and CF are the
 * host's; SHL's OF is SF ^ CF, SHR's the operand's sign, SAR's 0, AF 0. Rotates change only CF
 * and OF (ROL: the result's sign ^ CF; ROR: its two top bits), the others from R8, which holds
 * the guest's flags then (flags_to_r8). Live: the flag image in RDX, pending.
 */
static size_t shift_op(struct jc *c, const struct inl *x, bool live)
{
	struct em *e = &c->e;
	unsigned int fl = size_fl(x->n), bits = 8 * x->n, op = x->op == 6 ? 4 : x->op;
	bool rot = op <= 1;
	size_t zero = 0;
	if (x->cl) {
		op_rr(e, 0, 0x83, 4, RCX); /* and ecx, 31 or 63 */
		e8(e, x->n == 8 ? 63 : 31);
		zero = jump32(e, 0x4); /* jz */
	}
	if (live && op == 5)
		op_rr(e, W, 0x89, RAX, 9); /* mov r9, rax: the operand, for OF */
	if (x->cl) {
		op_rr(e, fl, x->n == 1 ? 0xd2 : 0xd3, op, RAX);
	} else {
		op_rr(e, fl, x->n == 1 ? 0xc0 : 0xc1, op, RAX);
		e8(e, (uint8_t)x->imm);
	}
	if (!live)
		return zero;
	if (rot) {
		e8(e, 0x0f); /* setc cl; movzx ecx, cl */
		e8(e, 0x92);
		e8(e, 0xc1);
		op_rr(e, 0, 0x0fb6, RCX, RCX);
		op_rr(e, W, 0x89, RAX, RDX);
		op_rr(e, W, 0xc1, 5, RDX); /* shr rdx, ... */
		e8(e, op == 0 ? bits - 1 : bits - 2);
		if (op == 1) { /* bit bits-1 ^ bit bits-2 */
			op_rr(e, 0, 0x89, RDX, RSI);
			op_rr(e, 0, 0xd1, 5, RSI); /* shr esi, 1 */
			op_rr(e, 0, 0x31, RSI, RDX);
		} else {
			op_rr(e, 0, 0x31, RCX, RDX); /* ^ CF */
		}
		op_rr(e, 0, 0x83, 4, RDX); /* and edx, 1 */
		e8(e, 1);
		op_rr(e, 0, 0xc1, 4, RDX); /* shl edx, 11 */
		e8(e, 11);
		op_rr(e, 0, 0x09, RCX, RDX);
		op_rr(e, W, 0x81, 4, 8); /* and r8, ~(CF | OF) */
		e32(e, ~(uint32_t)(KAP_SOFT_CF | KAP_SOFT_OF));
		op_rr(e, W, 0x09, 8, RDX);
	} else {
		e8(e, 0x9c);
		e8(e, 0x5a);
		if (op == 4) { /* OF = SF ^ CF */
			op_rr(e, 0, 0x89, RDX, RCX);
			op_rr(e, 0, 0xc1, 5, RCX);
			e8(e, 7);
			op_rr(e, 0, 0x31, RDX, RCX);
		} else if (op == 5) { /* OF = the operand's sign */
			op_rr(e, W, 0x89, 9, RCX);
			op_rr(e, W, 0xc1, 5, RCX);
			e8(e, bits - 1);
		}
		op_rr(e, 0, 0x81, 4, RDX); /* and edx, ~(OF | AF) */
		e32(e, ~(uint32_t)(KAP_SOFT_OF | KAP_SOFT_AF));
		if (op != 7) {
			op_rr(e, 0, 0x83, 4, RCX); /* and ecx, 1; shl ecx, 11 */
			e8(e, 1);
			op_rr(e, 0, 0xc1, 4, RCX);
			e8(e, 11);
			op_rr(e, 0, 0x09, RCX, RDX);
		}
	}
	c->pending = true;
	c->p_logic = false;
	return zero;
}

static void emit_shift(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, bool live)
{
	struct em *e = &c->e;
	bool rot = x->op <= 1;
	/* by CL: a count of 0 leaves lf_res as it is, so the lazy flags are the host's first */
	if (live && x->cl)
		flags_as_host(c);
	else
		merge_flags(c);
	if (live && rot)
		flags_to_r8(c);
	ld_reg(c, d, x->dst, x->n, RAX);
	if (x->cl)
		op_rr(e, 0, 0x89, cache_reg(c, 1), RCX); /* mov ecx, the cached ECX */
	size_t zero = shift_op(c, x, live);
	merge_flags(c);
	if (x->cl)
		fix(e, zero, e->pos);
	st_reg(c, d, x->dst, x->n); /* (a count of 0 too: exec.c's set_rm, 32 bits zero-extend) */
}

/* bt dword [rbx + off], 0: the host's CF = bit 0 there. */
static void bt0(struct em *e, int32_t off)
{
	op_mem(e, 0, 0x0fba, 4, RBX, off);
	e8(e, 0);
}

/* The host's RFLAGS after an operation are the guest's flags: left there for the Jcc right
 * after it (its exits capture them), else captured into RDX; either way pending, to be stored
 * as the lazy flags. logic: AF is 0 (exec.c's choice after logical operations). */
static void flags_produced(struct jc *c, bool logic)
{
	struct em *e = &c->e;
	if (c->jcc_next) {
		c->in_rflags = true;
	} else {
		e8(e, 0x9c); /* pushfq */
		e8(e, 0x5a); /* pop rdx */
	}
	c->pending = true;
	c->p_logic = logic;
}

static void emit_alu(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, bool live,
		     int64_t off)
{
	struct em *e = &c->e;
	/* op eax, imm: 80/81 /op (TEST: F6/F7 /0), the immediate as wide as the operand
	 * (sign-extended from 32 bits at 64 bits; 16-bit operands load it into RCX) */
	bool imm_direct = x->src == KAP_SOFT_NOREG && !x->mem && x->n != 2 &&
			  (x->n != 8 || x->imm == (uint64_t)(int64_t)(int32_t)x->imm);
	bool carry = x->op == 2 || x->op == 3; /* ADC, SBB: the guest's CF in, as for INC/DEC */
	if (carry)
		flags_as_host(c);
	else
		merge_flags(c);
	if (x->mem) {
		emit_mem(c, d, x->n, false, off); /* RAX = [m] */
	}
	if (x->mem == 1) {
		op_rr(e, W, 0x89, RAX, RCX); /* the source */
		ld_reg(c, d, x->dst, x->n, RAX);
	} else {
		if (!x->mem)
			ld_reg(c, d, x->dst, x->n, RAX);
		if (x->src != KAP_SOFT_NOREG)
			ld_reg(c, d, x->src, x->n, RCX);
		else if (!imm_direct)
			mov_imm64(e, RCX, x->imm);
	}
	unsigned int fl = size_fl(x->n), byte = x->n == 1 ? 0 : 1;
	if (carry)
		bt0(e, CPU_OFF(lf_res)); /* after the loads: MOVs keep it */
	if (imm_direct) {
		if (x->op == 8)
			op_rr(e, fl, x->n == 1 ? 0xf6 : 0xf7, 0, RAX);
		else
			op_rr(e, fl, x->n == 1 ? 0x80 : 0x81, x->op, RAX);
		if (x->n == 1)
			e8(e, (uint8_t)x->imm);
		else
			e32(e, (uint32_t)x->imm);
	} else if (x->op == 8) {
		op_rr(e, fl, 0x84 | byte, RCX, RAX); /* test */
	} else {
		op_rr(e, fl, (x->op << 3) | byte, RCX, RAX);
	}
	if (live)
		flags_produced(c, x->op == 1 || x->op == 4 || x->op == 6 || x->op == 8);
	if (x->op != 7 && x->op != 8 && x->mem != 2)
		st_reg(c, d, x->dst, x->n);
}

static void emit_incdec(struct jc *c, const struct kap_soft_insn *d, const struct inl *x)
{
	struct em *e = &c->e;
	merge_flags(c);
	/* CF stays: the guest's goes into the host's first, which INC/DEC keep too. */
	if (c->flags_host) {
		bt0(e, CPU_OFF(lf_res));
	} else {
		op_mem(e, 0, 0x80, 7, RBX, CPU_OFF(lf_op)); /* cmp byte [lf_op], LF_HOST */
		e8(e, KAP_SOFT_LF_HOST);
		size_t other = jump32(e, 0x5);
		bt0(e, CPU_OFF(lf_res));
		size_t done = jump32(e, -1);
		fix(e, other, e->pos);
		op_rr(e, W, 0x89, RBX, RDI);
		call_abs(e, (const void *)kap_soft_get_flags); /* LF_NONE after it */
		bt0(e, CPU_OFF(flags));
		fix(e, done, e->pos);
	}
	ld_reg(c, d, x->dst, x->n, RAX);
	op_rr(e, size_fl(x->n), x->n == 1 ? 0xfe : 0xff, x->dec ? 1 : 0, RAX);
	flags_produced(c, false);
	st_reg(c, d, x->dst, x->n);
}

/* NOT (no flags), NEG (the host's: exec.c's SUB 0 - v) of a register. */
static void emit_unary(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, bool live)
{
	struct em *e = &c->e;
	if (x->op == 3)
		merge_flags(c); /* NOT keeps RFLAGS and RDX: an image pending stays so */
	ld_reg(c, d, x->dst, x->n, RAX);
	op_rr(e, size_fl(x->n), x->n == 1 ? 0xf6 : 0xf7, x->op, RAX);
	if (x->op == 3 && live)
		flags_produced(c, false);
	st_reg(c, d, x->dst, x->n);
}

/*
 * A read-modify-write of memory (x->mem 3): ALU [m], reg/imm; NOT/NEG [m]; shifts
 * and rotates of [m]. The fast path looks the TLB up for a write (an entry grants that only
 * once the page is dirty), so nothing between the load and the store through the same host
 * pointer can fault; then the code-page check and the dirty log as emit_access's store does.
 * Anything else (a TLB miss, a page crossing, MMIO, a fault) runs the handler, with RIP the
 * instruction's: it writes no register, so the cache holds. Both paths leave the flags in
 * lf_res as LF_HOST (flags_as_host first: CF in for ADC SBB INC DEC, the others for rotates),
 * even where the next instructions overwrite them: either path may leave the block after its
 * store, where an interrupt could see them.
 */
static void emit_rmw(struct jc *c, const struct kap_soft_op *o, const struct inl *x, enum kind k,
		     bool live, int64_t off)
{
	struct em *e = &c->e;
	const struct kap_soft_insn *d = &o->d;
	unsigned int n = x->n, fl = size_fl(n), byte = n == 1 ? 0 : 1;
	bool sets = !(k == K_UNARY && x->op == 2); /* NOT sets no flag */
	bool carry = (k == K_ALU && (x->op == 2 || x->op == 3)) || k == K_INCDEC;
	bool imm_direct = k == K_ALU && x->src == KAP_SOFT_NOREG && n != 2 &&
			  (n != 8 || x->imm == (uint64_t)(int64_t)(int32_t)x->imm);
	flags_as_host(c);
	if (k == K_ALU && x->src != KAP_SOFT_NOREG)
		ld_reg(c, d, x->src, n, 8);
	else if (k == K_ALU && !imm_direct)
		mov_imm64(e, 8, x->imm);
	emit_ea(c, d, off);
	size_t slow[8];
	unsigned int lin;
	unsigned int ns = emit_lookup(c, ea_seg(d), n, true, slow, &lin);
	op_sib(e, W, 0x8d, 10, RDX, lin, 0, 0); /* lea r10, [rdx + lin]: the host address */
	if (c->cpu->vm->ncpus > 1)
		op_sib(e, 0, 0x8b, 11, RBX, RCX, 3, TLB_OFF(idx)); /* mov r11d, [idx]: the page */
	if (n == 1)
		op_mem(e, 0, 0x0fb6, RAX, 10, 0);
	else if (n == 2)
		op_mem(e, 0, 0x0fb7, RAX, 10, 0);
	else
		op_mem(e, n == 8 ? W : 0, 0x8b, RAX, 10, 0);
	size_t zero = 0;
	if (k == K_SHIFT) {
		if (live && x->op <= 1)
			op_mem(e, W, 0x8b, 8, RBX, CPU_OFF(lf_res)); /* flags_to_r8 */
		if (x->cl)
			op_mem(e, 0, 0x8b, RCX, RBX, REG_OFF(1)); /* mov ecx, guest ECX */
		zero = shift_op(c, x, live);
	} else {
		if (carry)
			bt0(e, CPU_OFF(lf_res));
		if (k == K_UNARY) {
			op_rr(e, fl, n == 1 ? 0xf6 : 0xf7, x->op, RAX);
		} else if (k == K_INCDEC) {
			op_rr(e, fl, n == 1 ? 0xfe : 0xff, x->dec ? 1 : 0, RAX);
		} else if (imm_direct) {
			op_rr(e, fl, n == 1 ? 0x80 : 0x81, x->op, RAX);
			if (n == 1)
				e8(e, (uint8_t)x->imm);
			else
				e32(e, (uint32_t)x->imm);
		} else {
			op_rr(e, fl, (x->op << 3) | byte, 8, RAX); /* op eax, r8d */
		}
		if (live && sets) {
			e8(e, 0x9c); /* pushfq; pop rdx */
			e8(e, 0x5a);
			c->pending = true;
			c->p_logic = k == K_ALU && (x->op == 1 || x->op == 4 || x->op == 6);
		}
	}
	merge_flags(c); /* lf_res (lf_op is LF_HOST already) */
	if (k == K_SHIFT && x->cl)
		fix(e, zero, e->pos);
	if (n == 1)
		op_mem(e, 0, 0x88, RAX, 10, 0); /* mov [r10], al */
	else
		op_mem(e, fl, 0x89, RAX, 10, 0);
	mov_imm64(e, RAX, (uint64_t)(uintptr_t)&c->cpu->vm->mem.soft_log);
	e8(e, 0x80); /* cmp byte [rax], 0 */
	e8(e, 0x38);
	e8(e, 0x00);
	size_t logged = 0;
	if (c->cpu->vm->ncpus > 1) {	 /* with one vCPU: no write tag on a page with code */
		logged = jump32(e, 0x5); /* jne */
		code_check(e, false);
	}
	size_t done = jump32(e, 0x4); /* je: not logged, the page has no translations */
	if (logged)
		fix(e, logged, e->pos);
	op_rr(e, W, 0x89, 10, RSI);
	op_rr(e, W, 0x89, RBX, RDI);
	call_abs(e, (const void *)kap_soft_stored);
	size_t stop_check = jump32(e, -1);
	/* the slow path: the handler, at the instruction's RIP */
	for (unsigned int i = 0; i < ns; i++)
		fix(e, slow[i], e->pos);
	rip_add(c, off - c->synced);
	op_mem(e, c->mode == 8 ? W : 0, 0x8b, RAX, RBX, CPU_OFF(rip));
	op_rr(e, c->mode == 8 ? W : 0, 0x83, 0, RAX);
	e8(e, d->len);
	op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(next_rip));
	op_rr(e, W, 0x89, RBX, RDI);
	mov_imm64(e, RSI, (uint64_t)(uintptr_t)d);
	call_abs(e, (const void *)o->fn);
	if (sets) { /* its lazy flags as the image: LF_HOST, as on the fast path */
		if (live) {
			op_rr(e, W, 0x89, RBX, RDI);
			call_abs(e, (const void *)kap_soft_get_flags);
			op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(lf_res));
		}
		op_mem(e, 0, 0xc6, 0, RBX, CPU_OFF(lf_op)); /* (dead: any image will do) */
		e8(e, KAP_SOFT_LF_HOST);
	}
	rip_add(c, c->synced - off);
	/* a store to a page with translations (either path): leave after it */
	fix(e, stop_check, e->pos);
	op_mem(e, 0, 0x80, 7, RBX, CPU_OFF(stop_block));
	e8(e, 0);
	size_t go_on = jump32(e, 0x4);
	rip_add(c, off + d->len - c->synced);
	leave(c, -1);
	fix(e, go_on, e->pos);
	fix(e, done, e->pos);
	if (live && sets && c->jcc_next && !host_sahf()) { /* else the Jcc reads lf_res */
		op_mem(e, W, 0x8b, RDX, RBX, CPU_OFF(lf_res));
		flags_to_host(c);
		c->pending = true;
		c->p_logic = false;
	}
}

/* RCX = the one-operand group's r/m operand (x->n bytes, zero-extended), read once. */
static void operand_to_rcx(struct jc *c, const struct kap_soft_insn *d, const struct inl *x,
			   int64_t off)
{
	if (x->mem) {
		emit_mem(c, d, x->n, false, off);
		op_rr(&c->e, W, 0x89, RAX, RCX);
	} else {
		ld_reg(c, d, x->src, x->n, RCX);
	}
}

/*
 * DIV (exec.c's x_grp3): AX or rDX:rAX by the operand; no flag changes (the host's are
 * undefined after it: none pending then). A zero divisor or a quotient too big for the size
 * (the high half not below the divisor) raises #DE at the instruction's RIP, as the handler
 * does, without reading the operand again.
 */
static void emit_div(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, int64_t off)
{
	struct em *e = &c->e;
	unsigned int n = x->n, fl = size_fl(n);
	merge_flags(c);
	operand_to_rcx(c, d, x, off);
	if (n == 1) {
		ld_reg(c, d, 0, 2, RAX);
	} else {
		ld_reg(c, d, 0, n, RAX);
		ld_reg(c, d, 2, n, RDX);
	}
	op_rr(e, fl, n == 1 ? 0x84 : 0x85, RCX, RCX); /* test ecx, ecx */
	size_t de0 = jump32(e, 0x4);		      /* jz */
	if (n == 1)
		op_rr(e, 0, 0x38, RCX, RSP); /* cmp ah, cl */
	else
		op_rr(e, fl, 0x39, RCX, RDX);	    /* cmp edx, ecx */
	size_t de1 = jump32(e, 0x3);		    /* jae */
	op_rr(e, fl, n == 1 ? 0xf6 : 0xf7, 6, RCX); /* div ecx */
	size_t ok = jump32(e, -1);
	fix(e, de0, e->pos);
	fix(e, de1, e->pos);
	rip_add(c, off - c->synced);
	op_rr(e, W, 0x89, RBX, RDI);
	e8(e, 0xbe); /* mov esi, #DE */
	e32(e, KAP_SOFT_XDE);
	op_rr(e, 0, 0x31, RDX, RDX); /* xor edx, edx: no error code */
	op_rr(e, 0, 0x31, RCX, RCX);
	call_abs(e, (const void *)kap_soft_raise);
	e8(e, 0x0f); /* ud2: not reached */
	e8(e, 0x0b);
	fix(e, ok, e->pos);
	if (n == 1) {
		st_reg(c, d, 0, 2); /* AL the quotient, AH the remainder */
		return;
	}
	op_rr(e, W, 0x89, RDX, 9); /* mov r9, rdx: the remainder */
	st_reg(c, d, 0, n);
	op_rr(e, W, 0x89, 9, RAX);
	st_reg(c, d, 2, n);
}

/*
 * MUL and one-operand IMUL (exec.c's x_grp3): AX, or rDX:rAX, = rAX times the operand; CF and
 * OF the host's (the high half not zero, not the low half's sign extension), SF ZF PF from the
 * low half and AF 0 (exec.c's mul_flags).
 */
static void emit_mul(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, bool live,
		     int64_t off)
{
	struct em *e = &c->e;
	unsigned int n = x->n, fl = size_fl(n);
	merge_flags(c);
	operand_to_rcx(c, d, x, off);
	ld_reg(c, d, 0, n, RAX);
	op_rr(e, fl, n == 1 ? 0xf6 : 0xf7, x->op, RCX); /* mul ecx */
	op_rr(e, W, 0x89, RDX, 9);			/* mov r9, rdx: the high half */
	if (live) {
		mul_flags(c, fl, n == 1 ? 0x84 : 0x85);
	}
	if (n == 1) {
		st_reg(c, d, 0, 2); /* AX: the whole product */
		return;
	}
	st_reg(c, d, 0, n);
	op_rr(e, W, 0x89, 9, RAX);
	st_reg(c, d, 2, n);
}

static void emit_mov(struct jc *c, const struct kap_soft_insn *d, const struct inl *x)
{
	struct em *e = &c->e;
	if (x->src != KAP_SOFT_NOREG) {
		ld_reg(c, d, x->src, x->n, RAX);
	} else if (x->n == 4) {
		e8(e, 0xb8); /* mov eax, imm32: zero-extends */
		e32(e, (uint32_t)x->imm);
	} else {
		mov_imm64(e, RAX, x->imm);
	}
	st_reg(c, d, x->dst, x->n);
}

/* MOVZX/MOVSX/MOVSXD (exec.c's x_movx): the x->n-byte source zero-extended into RAX, sign-
 * extended to 64 bits for MOVSX, then set_reg at the operand size (32 bits: upper half 0). */
static void emit_movx(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, int64_t off)
{
	struct em *e = &c->e;
	if (x->mem) {
		merge_flags(c); /* the address arithmetic changes the host's flags */
		emit_mem(c, d, x->n, false, off);
	} else {
		ld_reg(c, d, x->src, x->n, RAX);
	}
	if (x->dec) {
		if (x->n == 4)
			op_rr(e, W, 0x63, RAX, RAX); /* movsxd rax, eax */
		else
			op_rr(e, W, x->n == 1 ? 0x0fbe : 0x0fbf, RAX, RAX);
		if (d->osize == 4)
			op_rr(e, 0, 0x89, RAX, RAX); /* mov eax, eax */
	}
	st_reg(c, d, x->dst, d->osize);
}

/* CMOVcc (exec.c's x_cmovcc): the source read (and a fault taken) either way; a 32-bit
 * destination's upper half zeroed either way, as the host's 32-bit CMOVcc does. */
static void emit_cmov(struct jc *c, const struct kap_soft_insn *d, const struct inl *x, int64_t off)
{
	struct em *e = &c->e;
	flags_as_host(c);
	if (x->mem)
		emit_mem(c, d, x->n, false, off);
	else
		ld_reg(c, d, x->src, x->n, RAX);
	ld_reg(c, d, x->dst, x->n, RCX);
	op_rr(e, W, 0x89, RAX, RDX); /* mov rdx, rax: host_cond takes RAX */
	unsigned int cc = host_cond(c, x->op);
	op_rr(e, x->n == 8 ? W : 0, 0x0f40 | cc, RCX, RDX); /* cmovcc ecx, edx */
	op_rr(e, W, 0x89, RCX, RAX);
	st_reg(c, d, x->dst, x->n);
}

/* SETcc to a register or through the inline store path. */
static void emit_setcc(struct jc *c, const struct kap_soft_insn *d, const struct inl *x,
		       int64_t off)
{
	struct em *e = &c->e;
	flags_as_host(c);
	op_rr(e, 0, 0x0f90 | host_cond(c, x->op), 0, RAX); /* setcc al */
	if (!x->mem) {
		st_reg(c, d, x->dst, 1);
		return;
	}
	op_rr(e, 0, 0x0fb6, 8, RAX); /* movzx r8d, al */
	emit_mem(c, d, 1, true, off);
}

/* LEA (ea(): base + index << scale + disp, RIP-relative in 64-bit code). */
static void emit_lea(struct jc *c, const struct kap_soft_insn *d, int64_t off)
{
	struct em *e = &c->e;
	merge_flags(c); /* the address arithmetic changes the host's flags */
	mov_imm64(e, RAX, (uint64_t)d->disp);
	if (d->rip_rel) {
		op_mem(e, W, 0x03, RAX, RBX, CPU_OFF(rip)); /* add rax, [rip] */
		int64_t rel = off + d->len - c->synced;
		mov_imm64(e, RCX, (uint64_t)rel);
		op_rr(e, W, 0x01, RCX, RAX);
	}
	if (d->base != KAP_SOFT_NOREG)
		op_rr(e, W, 0x01, cache_reg(c, d->base), RAX);
	if (d->index != KAP_SOFT_NOREG) {
		op_rr(e, W, 0x89, cache_reg(c, d->index), RCX);
		if (d->scale) {
			op_rr(e, W, 0xc1, 4, RCX); /* shl rcx, scale */
			e8(e, d->scale);
		}
		op_rr(e, W, 0x01, RCX, RAX);
	}
	if (d->asize == 4 || d->osize == 4)
		op_rr(e, 0, 0x89, RAX, RAX); /* mov eax, eax */
	st_reg(c, d, d->reg, d->osize);
}

/* ---- the stack ---- */

/*
 * 32-bit code: the stack instructions are inline while SS is flat and 32-bit (kap_soft_jit_run
 * looked, POP SS clears it); else their handler, out of line (stack_alt_end). Returns the jump
 * there, or 0 in 64-bit code (SS: no checks).
 */
static size_t stack_alt(struct jc *c)
{
	struct em *e = &c->e;
	if (c->mode == 8)
		return 0;
	merge_flags(c);
	op_mem(e, 0, 0x80, 7, R12, JIT_OFF(flat)); /* cmp byte [flat], 0 */
	e8(e, 0);
	return jump32(e, 0x4); /* je */
}

/* The handler path stack_alt jumps to, after the inline code of op o at off (its RIP state
 * on entry: synced). An instruction that ends the block leaves it after the handler; one that
 * does not comes back with the state the inline code left: RIP as the block's code expects it,
 * the cached registers reloaded (the handler wrote cpu->r[]; the flags it keeps). */
static void stack_alt_end(struct jc *c, const struct kap_soft_op *o, int64_t off, size_t at,
			  int64_t synced, bool ends)
{
	struct em *e = &c->e;
	if (!at)
		return;
	size_t done = ends ? 0 : jump32(e, -1);
	fix(e, at, e->pos);
	int64_t synced_after = c->synced;
	bool host = c->flags_host;
	int8_t slot[16], owner[4];
	memcpy(slot, c->slot, sizeof(slot));
	memcpy(owner, c->owner, sizeof(owner));
	c->synced = synced;
	emit_call(c, o, off, !ends);
	if (ends) {
		leave(c, -1);
		return;
	}
	sync_rip(c, synced_after);
	memcpy(c->slot, slot, sizeof(slot));
	memcpy(c->owner, owner, sizeof(owner));
	for (unsigned int k = 0; k < 4; k++)
		if (owner[k] >= 0)
			op_mem(e, W, 0x8b, cache_host[k], RBX, REG_OFF(owner[k]));
	c->flags_host = host;
	fix(e, done, e->pos);
}

/* Pushes R8's low n bytes for the instruction d at off: the store at SS:RSP - n through
 * emit_access, and only once it is done RSP moved (exec.c's push: a fault leaves it). */
static void push_r8(struct jc *c, const struct kap_soft_insn *d, unsigned int n, int64_t off)
{
	unsigned int sp = cache_reg(c, 4);
	sp_lea(c, RSI, sp, -(int32_t)n);
	c->push.n = n;
	c->push.sp = sp;
	emit_access(c, KAP_SOFT_SS, n, true, off, d->len);
	memset(&c->push, 0, sizeof(c->push));
	sp_lea(c, RAX, cache_reg(c, 4), -(int32_t)n);
	st_reg(c, d, 4, 8);
}

/* Pops n bytes for the instruction d at off into RAX (zero-extended): the load at SS:RSP, RSP
 * left as it was (the caller moves it once it has what it needs). */
static void pop_rax(struct jc *c, const struct kap_soft_insn *d, unsigned int n, int64_t off)
{
	op_rr(&c->e, c->mode == 8 ? W : 0, 0x89, cache_reg(c, 4), RSI); /* mov rsi, rsp */
	emit_access(c, KAP_SOFT_SS, n, false, off, d->len);
}

/* PUSH reg/imm: the value first (PUSH RSP pushes the old RSP). */
static void emit_push(struct jc *c, const struct kap_soft_op *o, const struct inl *x, int64_t off)
{
	const struct kap_soft_insn *d = &o->d;
	int64_t synced = c->synced;
	size_t alt = stack_alt(c);
	merge_flags(c); /* the address arithmetic changes the host's flags */
	if (x->src != KAP_SOFT_NOREG)
		ld_reg(c, d, x->src, x->n, 8);
	else
		mov_imm64(&c->e, 8, x->imm);
	push_r8(c, d, x->n, off);
	stack_alt_end(c, o, off, alt, synced, false);
}

/* POP reg: RSP moved, then the register set (POP RSP: RSP is the value loaded). */
static void emit_pop(struct jc *c, const struct kap_soft_op *o, const struct inl *x, int64_t off)
{
	struct em *e = &c->e;
	const struct kap_soft_insn *d = &o->d;
	int64_t synced = c->synced;
	size_t alt = stack_alt(c);
	merge_flags(c);
	pop_rax(c, d, x->n, off);
	op_rr(e, W, 0x89, RAX, RDX);
	sp_lea(c, RAX, cache_reg(c, 4), (int32_t)x->n);
	st_reg(c, d, 4, 8);
	op_rr(e, W, 0x89, RDX, RAX);
	st_reg(c, d, x->dst, x->n);
	stack_alt_end(c, o, off, alt, synced, false);
}

/* The return address (the block's start plus end, in the code size's width) into R8. */
static void ret_addr_r8(struct jc *c, int64_t end)
{
	struct em *e = &c->e;
	unsigned int fl = c->mode == 8 ? W : 0;
	op_mem(e, fl, 0x8b, 8, RBX, CPU_OFF(rip));
	op_rr(e, fl, 0x81, 0, 8); /* add r8, end - synced */
	e32(e, (uint32_t)(end - c->synced));
}

/* CALL rel: the return address pushed, then the direct exit (linkable in the page). */
static void emit_callrel(struct jc *c, const struct kap_soft_op *o, const struct inl *x,
			 int64_t off, int64_t end)
{
	int64_t synced = c->synced;
	bool host = c->flags_host;
	size_t alt = stack_alt(c);
	merge_flags(c);
	ret_addr_r8(c, end);
	c->push.call = true;
	c->push.to = end + (int64_t)x->imm;
	push_r8(c, &o->d, x->n, off);
	exit_to(c, end + (int64_t)x->imm);
	c->flags_host = host;
	stack_alt_end(c, o, off, alt, synced, true);
}

/* RET (imm16): the target popped into cpu->rip, RSP past it and the immediate. */
static void emit_ret(struct jc *c, const struct kap_soft_op *o, const struct inl *x, int64_t off)
{
	struct em *e = &c->e;
	int64_t synced = c->synced;
	bool host = c->flags_host;
	size_t alt = stack_alt(c);
	merge_flags(c);
	pop_rax(c, &o->d, x->n, off);
	op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(rip)); /* (4 bytes: zero-extended) */
	sp_lea(c, RAX, cache_reg(c, 4), (int32_t)(x->n + x->imm));
	st_reg(c, &o->d, 4, 8);
	exit_indirect(c);
	c->flags_host = host;
	stack_alt_end(c, o, off, alt, synced, true);
}

/* CALL, JMP r/m64 (64-bit code): the target read first (a fault there leaves all as it was),
 * kept in cpu->next_rip while a CALL pushes. */
static void emit_ind(struct jc *c, const struct kap_soft_op *o, const struct inl *x, int64_t off,
		     int64_t end)
{
	struct em *e = &c->e;
	merge_flags(c);
	if (x->mem)
		emit_mem(c, &o->d, 8, false, off);
	else
		op_rr(e, W, 0x89, cache_reg(c, x->src), RAX);
	if (!x->dec) {
		op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(rip));
		exit_indirect(c);
		return;
	}
	op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(next_rip));
	ret_addr_r8(c, end);
	c->push.call = c->push.ind = true;
	push_r8(c, &o->d, 8, off);
	op_mem(e, W, 0x8b, RAX, RBX, CPU_OFF(next_rip));
	op_mem(e, W, 0x89, RAX, RBX, CPU_OFF(rip));
	exit_indirect(c);
}

static void emit_jcc(struct jc *c, const struct kap_soft_insn *d, int64_t end, uint64_t imm)
{
	struct em *e = &c->e;
	unsigned int cc = d->op & 0xf;
	size_t taken;
	if (c->pending) {
		taken = jump32(e, (int)cc); /* the host's flags are the guest's */
	} else if (host_sahf()) {
		flags_as_host(c);
		taken = jump32(e, (int)host_cond(c, cc));
	} else {
		op_rr(e, W, 0x89, RBX, RDI);
		e8(e, 0xbe); /* mov esi, cc */
		e32(e, cc);
		call_abs(e, (const void *)kap_soft_cond);
		op_rr(e, 0, 0x84, RAX, RAX); /* test al, al */
		taken = jump32(e, 0x5);
		c->flags_host = false; /* it may have worked the flags out: LF_NONE */
	}
	bool pending = c->pending, logic = c->p_logic, host = c->flags_host, rfl = c->in_rflags;
	int64_t synced = c->synced;
	merge_flags(c);
	exit_to(c, end);
	fix(e, taken, e->pos);
	c->pending = pending;
	c->p_logic = logic;
	c->synced = synced;
	c->flags_host = host;
	c->in_rflags = rfl;
	exit_to(c, end + (int64_t)imm); /* merges the flags, unless they are dead there */
}

/* Whether o, ending a block, is a near branch: its handler leaves RIP at the target and
 * changes nothing else the next block depends on (exit_indirect): RET near, CALL/JMP near
 * through r/m, LOOP/JCXZ, and CALL/JMP/Jcc rel where the handler runs them. */
static bool near_branch(const struct kap_soft_op *o)
{
	unsigned int map = o->d.op >> 8, op = o->d.op & 0xff;
	if (map == KAP_SOFT_MAP_0F)
		return op >= 0x80 && op < 0x90;
	if (map != KAP_SOFT_MAP_1)
		return false;
	return op == 0xc3 || op == 0xc2 || (op >= 0xe0 && op <= 0xe3) || op == 0xe8 || op == 0xe9 ||
	       op == 0xeb || (op >= 0x70 && op < 0x80) ||
	       (op == 0xff && ((o->d.reg & 7) == 2 || (o->d.reg & 7) == 4));
}

static void body(struct jc *cp)
{
	struct jc c = *cp;
	struct kap_soft_block *b = c.b;
	int64_t off = 0;
	bool ended = false;
	for (unsigned int i = 0; i < b->n && !ended; i++) {
		const struct kap_soft_op *o = &b->ops[i];
		struct inl x;
		enum kind k = classify(o, b->mode, &x);
		bool last = i + 1 == b->n;
		int64_t end = off + o->d.len;
		c.skip_store = overwrites(b, i + 1);
		struct inl nx;
		c.jcc_next = i + 1 < b->n && classify(&b->ops[i + 1], b->mode, &nx) == K_JCC;
		if (x.mem == 3) {
			/* the flags stored even when dead: its store may leave the block
			 * (stop_block), where an interrupt could see them */
			emit_rmw(&c, o, &x, k, true, off);
			off = end;
			continue;
		}
		switch (k) {
		case K_ALU:
			emit_alu(&c, &o->d, &x, !flags_dead(b, i), off);
			break;
		case K_INCDEC:
			emit_incdec(&c, &o->d, &x);
			break;
		case K_UNARY:
			emit_unary(&c, &o->d, &x, !flags_dead(b, i));
			break;
		case K_NOP:
			break;
		case K_DIV:
			emit_div(&c, &o->d, &x, off);
			break;
		case K_MUL:
			emit_mul(&c, &o->d, &x, !flags_dead(b, i), off);
			break;
		case K_MOV:
			emit_mov(&c, &o->d, &x);
			break;
		case K_LEA:
			emit_lea(&c, &o->d, off);
			break;
		case K_LOAD:
			emit_load(&c, &o->d, &x, off);
			break;
		case K_STORE:
			emit_store(&c, &o->d, &x, off);
			break;
		case K_IMUL:
			emit_imul(&c, &o->d, &x, !flags_dead(b, i), off);
			break;
		case K_SHIFT:
			emit_shift(&c, &o->d, &x, !flags_dead(b, i));
			break;
		case K_MOVX:
			emit_movx(&c, &o->d, &x, off);
			break;
		case K_CMOV:
			emit_cmov(&c, &o->d, &x, off);
			break;
		case K_SETCC:
			emit_setcc(&c, &o->d, &x, off);
			break;
		case K_JCC:
			emit_jcc(&c, &o->d, end, x.imm);
			ended = true;
			break;
		case K_JMP:
			merge_flags(&c);
			exit_to(&c, end + (int64_t)x.imm);
			ended = true;
			break;
		case K_PUSH:
			emit_push(&c, o, &x, off);
			break;
		case K_POP:
			emit_pop(&c, o, &x, off);
			break;
		case K_CALLR: /* these end blocks (kap_soft_insn_ends_block) */
			emit_callrel(&c, o, &x, off, end);
			ended = true;
			break;
		case K_RET:
			emit_ret(&c, o, &x, off);
			ended = true;
			break;
		case K_IND:
			emit_ind(&c, o, &x, off, end);
			ended = true;
			break;
		default: {
			bool ends = last && kap_soft_insn_ends_block(&o->d);
			bool call_rel = o->d.op == 0xe8 && (b->mode == 8 || o->d.osize == 4);
			bool near = ends && o->fn && near_branch(o);
			emit_call(&c, o, off, !ends || call_rel || near);
			if (!o->fn) {
				ended = true;
			} else if (ends) {
				/* RIP is what the handler made it: CALL rel's target is known */
				if (call_rel) {
					c.synced = end + (int64_t)o->d.imm;
					exit_to(&c, c.synced);
				} else if (near) {
					exit_indirect(&c);
				} else {
					leave(&c, -1);
				}
				ended = true;
			}
			break;
		}
		}
		off = end;
	}
	if (!ended) { /* cut at 64 instructions or a page end: falls through */
		merge_flags(&c);
		exit_to(&c, off);
	}
	/* a handler asked to stop (RIP is past it): to the loop */
	size_t stop = c.e.pos;
	for (unsigned int i = 0; i < c.nstop; i++)
		fix(&c.e, c.stop_fix[i], stop);
	if (c.nstop)
		leave(&c, -1);
	*cp = c;
}

static bool compile(struct kap_soft_cpu *cpu, struct kap_soft_jit *j, struct kap_soft_block *b)
{
	struct jc c = {.cpu = cpu, .j = j, .b = b, .mode = b->mode, .first_pass = true};
	b->jit.cpl = (uint8_t)cpu->cpl; /* before the code: its TLB checks are for this CPL */
	cache_drop(&c);
	c.e.buf = j->rw + j->used;
	c.e.cap = j->size - j->used;
	body(&c);
	if (c.e.full)
		return false;
	if (c.seen) { /* it loops: again, with the registers it holds there loaded on entry */
		int8_t at_loop[4];
		memcpy(at_loop, c.owner_at_loop, sizeof(at_loop));
		c = (struct jc){.cpu = cpu, .j = j, .b = b, .mode = b->mode, .looping = true};
		cache_drop(&c);
		c.e.buf = j->rw + j->used;
		c.e.cap = j->size - j->used;
		memcpy(c.owner_at_loop, at_loop, sizeof(at_loop));
		for (unsigned int k = 0; k < 4; k++) {
			if (at_loop[k] < 0)
				continue;
			c.owner[k] = at_loop[k];
			c.slot[at_loop[k]] = (int8_t)k;
			op_mem(&c.e, W, 0x8b, cache_host[k], RBX, REG_OFF(at_loop[k]));
		}
		c.entry_dead = flags_dead_from(b, 0);
		if (c.entry_dead) { /* nothing sees lf_res before it is stored */
			op_mem(&c.e, 0, 0xc6, 0, RBX,
			       CPU_OFF(lf_op)); /* mov byte [lf_op], LF_HOST */
			e8(&c.e, KAP_SOFT_LF_HOST);
			c.flags_host = true;
		}
		c.warm = c.e.pos;
		body(&c);
		if (c.e.full)
			return false;
	}
	b->jit.code = j->rx + j->used;
	j->compiled++;
	j->used += (c.e.pos + 15) & ~(size_t)15;
	return true;
}

/* Drops every compiled block (the buffer is full): they are interpreted until hot again. */
static void flush(struct kap_soft_cpu *cpu, struct kap_soft_jit *j)
{
	struct kap_soft_cache *cache = cpu->cache;
	/* No generated code runs now (this is the loop, between blocks), and none of the old is
	 * run again: the links go with it, unpatched (all of the code is), and forgotten, so no
	 * later drop writes into what the buffer holds next. */
	for (size_t i = 0; i < KAP_SOFT_HASH; i++)
		for (struct kap_soft_block *b = cache->hash[i]; b; b = b->next) {
			b->jit.code = NULL, b->jit.runs = 0;
			memset(b->jit.out, 0, sizeof(b->jit.out));
			b->jit.in = NULL;
		}
	for (struct kap_soft_block *b = cache->garbage; b; b = b->next) {
		b->jit.code = NULL;
		memset(b->jit.out, 0, sizeof(b->jit.out));
		b->jit.in = NULL;
	}
	cache->epoch++; /* voids the jump cache's entries and the loop's record of the last exit */
	j->used = j->code_start;
	j->last = NULL;
	j->flushes++;
	kap_debug("vm: soft vCPU %u: code buffer full, compiled blocks dropped", cpu->id);
}

bool kap_soft_jit_ready(struct kap_soft_cpu *cpu, struct kap_soft_block *b)
{
	if (b->mode != 8 && (cpu->rip >> 32))
		return false; /* (not seen: handlers mask RIP) the interpreter's masking */
	if (b->jit.code)
		return b->jit.cpl == cpu->cpl;
	if (b->jit.failed || ++b->jit.runs < cpu->jit->hot)
		return false;
	struct kap_soft_jit *j = cpu->jit;
	if (b->mode == 2) { /* 16-bit code: boot code, interpreted */
		b->jit.failed = true;
		return false;
	}
	size_t need = (size_t)b->n * 256 + 1024;
	if (j->used + need > j->size)
		flush(cpu, j);
	if (!compile(cpu, j, b)) {
		b->jit.failed = true;
		return false;
	}
	return true;
}

/* Points linkable exit k of compiled block b's jump at to (NULL: the way out, after it). */
static void repatch(struct kap_soft_jit *j, struct kap_soft_block *b, unsigned int k,
		    const struct kap_soft_block *to)
{
	uint32_t p = b->jit.patch[k];
	const uint8_t *next = (const uint8_t *)b->jit.code + p + 4; /* after the jmp rel32 */
	uint32_t rel = to ? (uint32_t)((const uint8_t *)to->jit.code - next) : 0;
	memcpy(j->rw + ((const uint8_t *)b->jit.code - j->rx) + p, &rel, 4);
}

/* Undoes a link: its exit goes to the loop again, and it leaves its target's list. */
static void unlink_exit(struct kap_soft_jit *j, struct kap_soft_jit_link *l)
{
	if (!l->to)
		return;
	repatch(j, l->from, (unsigned int)(l - l->from->jit.out), NULL);
	*l->pprev = l->next;
	if (l->next)
		l->next->pprev = l->pprev;
	*l = (struct kap_soft_jit_link){0};
}

/*
 * Dropping b (a store to its page, the VMM's write to it): every exit patched to it is
 * unpatched, and so are b's own. The cache and the code buffer are this vCPU's alone, and
 * blocks are dropped only on its thread (other vCPUs and the VMM's threads mark its written-page
 * record instead): by the loop between blocks, or by a handler or a store's slow path that
 * generated code called (a store to a page with code), after which that code leaves at once
 * (stop_block) without taking another exit. So no code is running at a rewritten jump, and b's
 * code stays where it is (it may be the running block) until the buffer is flushed, which only
 * the loop does. With the links gone nothing jumps into b's code again, which is why a linked
 * exit needs no check of its own that its target still exists.
 */
void kap_soft_jit_drop(struct kap_soft_jit *j, struct kap_soft_block *b)
{
	if (!b->jit.code)
		return;
	while (b->jit.in)
		unlink_exit(j, b->jit.in);
	for (unsigned int k = 0; k < 2; k++)
		unlink_exit(j, &b->jit.out[k]);
}

#if defined(__clang__)
__attribute__((no_sanitize("function")))
#endif
struct kap_soft_block *
kap_soft_jit_run(struct kap_soft_cpu *cpu, struct kap_soft_block *b)
{
	struct kap_soft_jit *j = cpu->jit;
	uint64_t epoch = cpu->cache->epoch;
	struct kap_soft_block *l = j->last;
	/* Link the exit the last compiled block left by to b, when that exit always leads here.
	 * Nothing was dropped since l was entered (the epoch), so l and b are both in the cache:
	 * an exit already linked was left by its budget or written-page check, and leads to b. */
	if (l && j->last_exit >= 0 && j->last_epoch == epoch && l->jit.code &&
	    l->jit.exit_phys[j->last_exit] == b->phys && l->mode == b->mode &&
	    l->jit.cpl == b->jit.cpl && l->jit.out[j->last_exit].to != b) {
		struct kap_soft_jit_link *ln = &l->jit.out[j->last_exit];
		unlink_exit(j, ln); /* not seen: to another block at b's address and mode */
		repatch(j, l, (unsigned int)j->last_exit, b);
		*ln = (struct kap_soft_jit_link){
		    .from = l, .to = b, .next = b->jit.in, .pprev = &b->jit.in};
		if (b->jit.in)
			b->jit.in->pprev = &ln->next;
		b->jit.in = ln;
	}
	j->last = NULL;
	j->last_exit = -1;
	j->last_epoch = epoch;
	j->budget = KAP_SOFT_JIT_BUDGET;
	j->written_any = &cpu->vm->mem.written->rec[cpu->id].any;
	/* the jump cache's entries hold the epoch's low 32 bits: none is made past them */
	uint32_t ep = epoch <= INT32_MAX ? (uint32_t)epoch : 0xffffffffu;
	j->jc_key = (uint64_t)ep | (uint64_t)(b->mode | (unsigned int)b->jit.cpl << 4) << 32;
	/* b is what the loop found at CS:RIP: the jump cache's entry for it (exit_indirect) */
	uint64_t lin = b->mode == 8 ? cpu->rip : cpu->seg[KAP_SOFT_CS].base + cpu->rip;
	if (epoch <= INT32_MAX && (b->mode == 8 || lin >> 32 == 0)) {
		struct kap_soft_jc_entry *jc = &j->jc[jc_slot(lin)];
		*jc = (struct kap_soft_jc_entry){
		    .lin = lin, .phys = b->phys & ~0xfffULL, .code = b->jit.code, .key = j->jc_key};
	}
	j->flat = 1;
	for (unsigned int s = KAP_SOFT_ES; s <= KAP_SOFT_DS; s++) {
		const struct kap_soft_seg *g = &cpu->seg[s];
		if (s != KAP_SOFT_CS &&
		    (g->base || g->limit != 0xffffffffu || !g->present || (g->type & 0xe) != 2))
			j->flat = 0;
		if (s == KAP_SOFT_SS && !g->db)
			j->flat = 0; /* a 16-bit stack pointer: the stack instructions' handlers */
	}
	j->enter(cpu, j, b->jit.code);
	return j->last;
}

struct kap_soft_jit *kap_soft_jit_new(struct kap_soft_cpu *cpu)
{
#if !defined(__x86_64__)
	(void)cpu;
	return NULL; /* it generates x86-64: elsewhere the interpreter runs everything */
#endif
	const char *env = getenv("KAPSEL_SOFT_JIT");
	if (env && (!strcmp(env, "off") || !strcmp(env, "0")))
		return NULL;
	unsigned int hot = KAP_SOFT_JIT_HOT;
	if (env && *env) {
		char *end;
		unsigned long v = strtoul(env, &end, 10);
		if (*end || v < 1 || v > 1000000) {
			kap_warn("vm: KAPSEL_SOFT_JIT=%s is not off, 0 or a run count 1-1000000: "
				 "compiling blocks after %u runs",
				 env, hot);
		} else {
			hot = (unsigned int)v;
		}
	}
	struct kap_soft_jit *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->hot = hot;
	int fd = memfd_create("kapsel-soft-jit", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, JIT_SIZE) < 0) {
		kap_debug("vm: soft vCPU %u: no code buffer (memfd: %m): interpreting", cpu->id);
		if (fd >= 0)
			close(fd);
		free(j);
		return NULL;
	}
	j->rw = mmap(NULL, JIT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	j->rx = mmap(NULL, JIT_SIZE, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
	close(fd);
	if (j->rw == MAP_FAILED || j->rx == MAP_FAILED) {
		kap_debug("vm: soft vCPU %u: no code buffer (mmap: %m): interpreting", cpu->id);
		if (j->rw != MAP_FAILED)
			munmap(j->rw, JIT_SIZE);
		if (j->rx != MAP_FAILED)
			munmap(j->rx, JIT_SIZE);
		free(j);
		return NULL;
	}
	j->size = JIT_SIZE;
	/* The entry stub: push rbx, rbp, r12-r15 (the register cache's); sub rsp, 8; rbx = cpu,
	 * r12 = j; jmp to the code (rdx). The stack is then 16-byte aligned for the handlers the
	 * code calls. */
	static const uint8_t enter[] = {0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56,
					0x41, 0x57, 0x48, 0x83, 0xec, 0x08, 0x48, 0x89,
					0xfb, 0x49, 0x89, 0xf4, 0xff, 0xe2};
	/* The exit stub, at JIT_STUB / 2: add rsp, 8; pop r15-r12, rbp, rbx; ret. */
	static const uint8_t leave_stub[] = {0x48, 0x83, 0xc4, 0x08, 0x41, 0x5f, 0x41, 0x5e,
					     0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3};
	_Static_assert(sizeof(enter) <= JIT_STUB / 2 && sizeof(leave_stub) <= JIT_STUB / 2,
		       "the stubs fit");
	memset(j->rw, 0xcc, JIT_STUB);
	memcpy(j->rw, enter, sizeof(enter));
	memcpy(j->rw + JIT_STUB / 2, leave_stub, sizeof(leave_stub));
	void *entry = j->rx;
	memcpy(&j->enter, &entry, sizeof(entry));
	j->code_start = j->used = JIT_STUB;
	return j;
}

void kap_soft_jit_free(struct kap_soft_jit *j)
{
	if (!j)
		return;
	munmap(j->rw, j->size);
	munmap(j->rx, j->size);
	free(j);
}
