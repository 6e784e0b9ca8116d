/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's code generator (jit.c; docs/DESIGN.md, The soft CPU's code generator): a block
 * that ran KAP_SOFT_JIT_HOT times interpreted is compiled into x86-64 host code, one piece per
 * decoded instruction, either inline (moves, loads and stores through the TLB, the ALU, INC/DEC,
 * IMUL, shifts, LEA, Jcc/JMP) or a call to the interpreter's handler for it. Compiled blocks
 * jump straight to each other (same guest page, links undone when their target is dropped;
 * elsewhere, after returns and indirect branches, through the jump cache) for at most
 * KAP_SOFT_JIT_BUDGET blocks, then return to cpu.c's loop, which looks at interrupts as it does
 * between interpreted blocks.
 *
 * KAPSEL_SOFT_JIT in the environment: off (or 0) turns it off, the interpreter alone (for
 * diffing); a number N compiles blocks after N runs instead of KAP_SOFT_JIT_HOT (1: every block
 * at once, how the differential tests run it).
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "vmm/soft/soft.h"

#define KAP_SOFT_JIT_HOT    16
#define KAP_SOFT_JIT_BUDGET 1024
#define KAP_SOFT_JC_SIZE    4096 /* jump cache entries (a power of two) */

struct kap_soft_block;

/*
 * The jump cache (jit.c, exit_indirect): compiled blocks by the linear address they start at,
 * direct-mapped, for exits whose target is known only at run time (returns, indirect branches,
 * exits to another page). Filled by kap_soft_jit_run with the block the loop found; an entry
 * is taken only while it still yields that block: key is the cache's epoch when filled (no
 * block dropped or code flushed since) with the code size and CPL, and the TLB must still map
 * lin's page to phys for a fetch at that CPL, as fetch_phys would find it.
 */
struct kap_soft_jc_entry {
	uint64_t lin;  /* the block's linear address (code size's width); 0 with key 0: empty */
	uint64_t phys; /* the block's physical page */
	void *code;
	uint64_t key; /* epoch | (mode | CPL << 4) << 32, as kap_soft_jit_run's jc_key */
};

/* A vCPU's code buffer and what its generated code reads and writes. */
struct kap_soft_jit {
	int32_t budget;	   /* chained blocks left before the loop; 0 sends the code back at once */
	int32_t last_exit; /* the linkable exit the last block left by, or -1 */
	struct kap_soft_block *last; /* the last compiled block that ran */
	/* the cache's epoch when the last block was entered */
	uint64_t last_epoch;
	/* ES, SS and DS are flat (base 0, 4 GiB limit, present writable expand-up data): 32-bit
	 * code's memory fast path skips their checks. Set on entry, cleared by POP ES/SS/DS. */
	uint8_t flat;
	/* this vCPU's written-page flag (cpu.c, take_written), which linked exits look at */
	const void *written_any;
	/* epoch | (mode | CPL << 4) << 32 on entry: the jump cache's entries filled since with
	 * this code size and CPL match it */
	uint64_t jc_key;
	uint8_t *rx, *rw;	       /* the buffer, executable and writable views */
	size_t size, used, code_start; /* code_start: after the entry and exit stubs */
	unsigned int hot;	       /* runs before a block is compiled */
	uint64_t compiled, flushes;    /* blocks compiled, full buffers (for --debug) */
	void (*enter)(struct kap_soft_cpu *, struct kap_soft_jit *, void *);
	struct kap_soft_jc_entry jc[KAP_SOFT_JC_SIZE];
};

/* The vCPU's generator, or NULL when KAPSEL_SOFT_JIT=off (or the buffer could not be made:
 * then the interpreter runs everything, after a debug line). */
struct kap_soft_jit *kap_soft_jit_new(struct kap_soft_cpu *cpu);
void kap_soft_jit_free(struct kap_soft_jit *j);

/* Whether b runs compiled now (compiling it once hot); false: interpret it. */
bool kap_soft_jit_ready(struct kap_soft_cpu *cpu, struct kap_soft_block *b);
/* Block b leaves the cache (cpu.c, cache_drop; on the vCPU's own thread): the links patched to
 * it go back to the loop, and its own links are forgotten. */
void kap_soft_jit_drop(struct kap_soft_jit *j, struct kap_soft_block *b);
/* Runs compiled b and what it chains to; returns the last block that ran. Exceptions longjmp
 * out as from the interpreter, with the state at the faulting instruction's start. */
struct kap_soft_block *kap_soft_jit_run(struct kap_soft_cpu *cpu, struct kap_soft_block *b);

/* Port I/O or MMIO happened: the running compiled code returns to the loop at its block's end,
 * where an interrupt it raised is taken, as between interpreted blocks. */
static inline void kap_soft_jit_kick(struct kap_soft_cpu *cpu)
{
	if (cpu->jit)
		cpu->jit->budget = 0;
}

/* exec.c: condition code cc (the low nibble of Jcc) on the current flags. */
bool kap_soft_cond(struct kap_soft_cpu *cpu, unsigned int cc);
