/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test=mips: bench/soft-mips's workloads, timed from outside the guest, so that the same file
 * runs under kapsel and under QEMU (no hypercalls; the end is the debug-exit port). Each
 * prints "mips insns N sum S": N is the number of guest instructions its loops executed
 * (exact: they are hand-written below), S a checksum both VMMs must agree on.
 *
 *   kind=loop n=N   dec; jnz: 2 instructions an iteration, nothing touches memory
 *   kind=mix n=N    N rounds over a 4 MiB buffer at 16 MiB with 2-level paging on (4 KiB
 *                   pages identity-mapping 0-64 MiB, the tables at 8 MiB): an LCG fill pass and a
 * checksum pass (one dword each step), then a page-strided read-modify-write pass over the 1024
 * pages, whose every access is a different page than the last
 */
#pragma once
#include "guest.h"

#define MIPS_BUF   0x1000000u /* 16 MiB: the guest runs with --mem 128M */
#define MIPS_WORDS (1u << 20) /* 4 MiB */
#define MIPS_PAGES (MIPS_WORDS / 1024)

/* The page directory and 16 page tables, at 8 MiB: not in bss, which would grow the kernel
 * (multiboot-low.elf lives below 640 KiB). */
#define MIPS_TABLES 0x800000u

static void mips_paging_on(void)
{
	uint32_t *mips_dir = (uint32_t *)(uintptr_t)MIPS_TABLES;
	uint32_t(*mips_tabs)[1024] = (uint32_t(*)[1024])(uintptr_t)(MIPS_TABLES + 0x1000);
	for (uint32_t t = 0; t < 16; t++) {
		for (uint32_t i = 0; i < 1024; i++)
			mips_tabs[t][i] = ((t * 1024 + i) << 12) | 3;
		mips_dir[t] = (uint32_t)(uintptr_t)mips_tabs[t] | 3;
	}
	uint32_t cr0;
	__asm__ volatile("mov %0, %%cr3" : : "r"(mips_dir) : "memory");
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80000000u) : "memory");
}

static void test_mips(const char *cmdline)
{
	char kind[8], v[24];
	cmdline_get(cmdline, "kind", kind, sizeof(kind));
	cmdline_get(cmdline, "n", v, sizeof(v));
	uint32_t n = (uint32_t)atou(v);
	uint64_t insns = 0;
	uint32_t sum = 0;
	if (streq(kind, "loop")) {
		uint32_t c = n;
		if (c) /* 2 instructions an iteration */
			__asm__ volatile("1: dec %0\n\tjnz 1b" : "+r"(c));
		insns = 2ULL * n;
	} else if (streq(kind, "mix")) {
		mips_paging_on();
		uint32_t seed = 1;
		for (uint32_t r = 0; r < n; r++) {
			uint32_t p = MIPS_BUF, end = MIPS_BUF + MIPS_WORDS * 4, t;
			/* Fill: 6 instructions a dword. */
			__asm__ volatile("1: imul $1103515245, %0, %0\n\t"
					 "add $12345, %0\n\t"
					 "mov %0, (%1)\n\t"
					 "add $4, %1\n\t"
					 "cmp %2, %1\n\t"
					 "jb 1b"
					 : "+r"(seed), "+r"(p)
					 : "r"(end)
					 : "memory", "cc");
			/* Checksum: 6 instructions a dword. */
			p = MIPS_BUF;
			__asm__ volatile("1: mov (%1), %3\n\t"
					 "add %3, %0\n\t"
					 "rol $5, %0\n\t"
					 "add $4, %1\n\t"
					 "cmp %2, %1\n\t"
					 "jb 1b"
					 : "+r"(sum), "+r"(p), "+r"(end), "=&r"(t)
					 :
					 : "memory", "cc");
			/* Page stride: 7 instructions a page (each one a different page). */
			p = MIPS_BUF + (r & 0x3ff) * 4;
			end = p + MIPS_PAGES * 4096;
			__asm__ volatile("1: mov (%1), %3\n\t"
					 "xor %0, %3\n\t"
					 "mov %3, (%1)\n\t"
					 "add %3, %0\n\t"
					 "add $4096, %1\n\t"
					 "cmp %2, %1\n\t"
					 "jb 1b"
					 : "+r"(sum), "+r"(p), "+r"(end), "=&r"(t)
					 :
					 : "memory", "cc");
		}
		insns = (uint64_t)n * (6ULL * MIPS_WORDS * 2 + 7ULL * MIPS_PAGES);
	} else {
		fail("mips: kind= is not loop or mix");
	}
	puts_("mips insns ");
	putu(insns);
	puts_(" sum ");
	putu(sum);
	putc_('\n');
	pass();
}
