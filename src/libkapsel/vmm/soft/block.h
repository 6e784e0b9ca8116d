/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's translated blocks and their per-vCPU cache (cpu.c keeps them; jit.c compiles the
 * hot blocks into host code that looks the TLB, soft.h's, up itself). See cpu.c's top comment for
 * how they are found, chained and dropped, and jit.h for the compiled form.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "vmm/soft/soft.h"

#define KAP_SOFT_BLOCK_MAX 64
/* Buckets of blocks by physical address, and by page for invalidation: a Linux boot makes about
 * 80,000 blocks, and a few thousand writes to pages with code (measured, docs/vm.md). */
#define KAP_SOFT_HASH	   32768
#define KAP_SOFT_PAGE_HASH 8192

struct kap_soft_op {
	struct kap_soft_insn d;
	kap_soft_exec_fn fn; /* NULL: not implemented, #UD when reached */
};

/* A linkable exit's patched jump (jit.c): the compiled block it goes to, and its place in that
 * block's list of incoming links, so dropping the target unpatches it. */
struct kap_soft_jit_link {
	struct kap_soft_block *from, *to; /* to: NULL while the exit goes to the loop */
	struct kap_soft_jit_link *next, **pprev;
};

/* A block's compiled form (jit.c), if it has one. */
struct kap_soft_jit_blk {
	void *code;	       /* entry point in the vCPU's code buffer, NULL: interpreted */
	uint32_t runs;	       /* interpreted runs so far: compiled at KAP_SOFT_JIT_HOT */
	uint8_t cpl;	       /* the privilege level it was compiled for (TLB permissions) */
	bool failed;	       /* the compiler declined it (16-bit code): interpreted for good */
	uint32_t patch[2];     /* per linkable exit: offset of its jmp's rel32 in the code */
	uint64_t exit_phys[2]; /* per linkable exit: the physical address it continues at */
	struct kap_soft_jit_link out[2]; /* per linkable exit: where it is patched to */
	struct kap_soft_jit_link *in;	 /* the exits of other blocks patched to this one */
};

struct kap_soft_block {
	struct kap_soft_block *next; /* hash chain, then the garbage list */
	uint64_t phys;		     /* of the first byte */
	uint64_t page2;		     /* a second page the last instruction spills into, or ~0 */
	unsigned int mode;
	unsigned int n;
	bool chain; /* it ends in a jump to a fixed target, or falls through: links are kept */
	/* In the page index: [0] by the page of phys, [1] by page2 (when there is one); pprev
	 * points at the pointer to this block, for unlinking without a walk. */
	struct kap_soft_block *pnext[2], **pprev[2];
	/* Chaining: the blocks that ran after this one, by the RIP they start at; valid while
	 * link_epoch is the cache's epoch, and only for the physical address and mode found now. */
	uint64_t link_epoch;
	uint64_t link_rip[2];
	struct kap_soft_block *link[2];
	struct kap_soft_jit_blk jit;
	struct kap_soft_op ops[];
};

struct kap_soft_cache {
	struct kap_soft_block *hash[KAP_SOFT_HASH];
	struct kap_soft_block *pages[2][KAP_SOFT_PAGE_HASH]; /* the page index (pnext) */
	struct kap_soft_block *garbage;
	uint64_t epoch; /* bumped whenever blocks are dropped: every chain link older is void */
};
