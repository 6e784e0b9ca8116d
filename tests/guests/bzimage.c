/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bzImage test kernel, entered through the 64-bit boot protocol: checks long mode, the
 * boot GDT selectors, boot_params (setup header copy, type_of_loader, cmd_line_ptr, ramdisk,
 * e820 table, acpi_rsdp_addr) against "mem=MiB" and "initrd=BYTES" on its command line.
 */
#include <asm/bootparam.h>

#include "guest.h"

/*
 * "syscall" on the command line: SYSCALL from CPL 0, SYSRET to a 64-bit CPL 3 routine,
 * which reads its CS and makes a second SYSCALL back (SDM vol. 2, SYSCALL/SYSRET).
 */
uint64_t sc_count, sc_r11, sc_user_cs, sc_resume;
extern void sc_entry(void);
__asm__(".text\n"
	"sc_entry:\n"
	"	incq sc_count(%rip)\n"
	"	cmpq $1, sc_count(%rip)\n"
	"	jne 1f\n"
	"	mov %r11, sc_r11(%rip)\n"
	"	lea sc_user(%rip), %rcx\n"
	"	mov $0x2, %r11\n"
	"	sysretq\n"
	"1:	jmp *sc_resume(%rip)\n"
	"sc_user:\n"
	"	mov %cs, %rax\n"
	"	mov %rax, sc_user_cs(%rip)\n"
	"	syscall\n"
	"	ud2\n");

static uint64_t sc_gdt[8] __attribute__((aligned(8)));

static void wrmsr_(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static uint64_t rdmsr_(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return lo | (uint64_t)hi << 32;
}

/*
 * "diff" on the command line: runs the initrd as 64-bit code for
 * tests/integration/test_vm_soft_diff.py, as the multiboot kernel's test=diff does in 32 bits:
 * RBP points at a 4 KiB scratch area filled with a pattern; the code may change any register
 * but RBP and RSP, stores RAX, RBX, RCX, RDX, RSI, RDI, R8-R15 and RFLAGS at scratch + 0xf00
 * and returns. Prints them and an FNV-1a hash of the scratch area below 0xf00.
 */
static uint32_t diff_scratch[1024] __attribute__((aligned(4096)));

static void test_diff(const struct boot_params *bp)
{
	CHECK(bp->hdr.ramdisk_size, "diff needs its code as the initrd");
	for (uint32_t i = 0; i < 1024; i++)
		diff_scratch[i] = i * 0x9e3779b9u;
	uint64_t a = (uint64_t)(uintptr_t)diff_scratch;
	uint64_t d = bp->hdr.ramdisk_image | (uint64_t)bp->ext_ramdisk_image << 32;
	__asm__ volatile("push %%rbp\n\tmov %%rax, %%rbp\n\tcall *%%rdx\n\tpop %%rbp\n\tcld"
			 : "+a"(a), "+d"(d)
			 :
			 : "rbx", "rcx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
			   "r14", "r15", "memory", "cc");
	static const char *const names[15] = {"rax", "rbx", "rcx", "rdx", "rsi",
					      "rdi", "r8",  "r9",  "r10", "r11",
					      "r12", "r13", "r14", "r15", "flags"};
	const uint64_t *out = (const uint64_t *)((const uint8_t *)diff_scratch + 0xf00);
	for (int i = 0; i < 15; i++) {
		puts_("diff ");
		puts_(names[i]);
		putc_(' ');
		putx(out[i]);
		putc_('\n');
	}
	uint32_t h = 2166136261u;
	const uint8_t *p = (const uint8_t *)diff_scratch;
	for (uint32_t i = 0; i < 0xf00; i++)
		h = (h ^ p[i]) * 16777619u;
	puts_("diff hash ");
	putx(h);
	putc_('\n');
}

static void test_syscall(void)
{
	/* User access to the first 2 MiB (code, data, stack): U/S in each level's entry. */
	uint64_t cr3;
	__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
	volatile uint64_t *pml4 = (volatile uint64_t *)(uintptr_t)(cr3 & ~0xfffULL);
	volatile uint64_t *pdpt = (volatile uint64_t *)(uintptr_t)(pml4[0] & ~0xfffULL);
	volatile uint64_t *pd = (volatile uint64_t *)(uintptr_t)(pdpt[0] & ~0xfffULL);
	pml4[0] |= 4;
	pdpt[0] |= 4;
	pd[0] |= 4;
	__asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
	/* The boot GDT, then user data (0x30) and 64-bit user code (0x38): SYSRET's order. */
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) gdtr;
	__asm__ volatile("sgdt %0" : "=m"(gdtr));
	for (int i = 0; i < 6; i++)
		sc_gdt[i] = ((const uint64_t *)(uintptr_t)gdtr.base)[i];
	sc_gdt[6] = 0x00cff2000000ffffULL;
	sc_gdt[7] = 0x00affa000000ffffULL;
	gdtr.base = (uint64_t)(uintptr_t)sc_gdt;
	gdtr.limit = sizeof(sc_gdt) - 1;
	__asm__ volatile("lgdt %0" : : "m"(gdtr));
	wrmsr_(0xc0000080, rdmsr_(0xc0000080) | 1); /* EFER.SCE */
	wrmsr_(0xc0000081, (0x28ULL << 48) | (0x10ULL << 32));
	wrmsr_(0xc0000082, (uint64_t)(uintptr_t)sc_entry);
	wrmsr_(0xc0000084, 0x200); /* FMASK: IF */
	__asm__ volatile("lea 1f(%%rip), %%rax\n\t"
			 "mov %%rax, sc_resume(%%rip)\n\t"
			 "syscall\n"
			 "1:"
			 :
			 :
			 : "rax", "rcx", "r11", "memory");
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	CHECK(sc_count == 2, "SYSCALL did not reach LSTAR twice");
	CHECK(sc_user_cs == 0x3b, "SYSRET did not enter CS 0x3b (CPL 3)");
	CHECK(cs == 0x10, "the second SYSCALL did not come back to CS 0x10");
	CHECK(sc_r11 & 2, "R11 does not hold RFLAGS");
	puts_("syscall ok\n");
}

/*
 * "rep" on the command line: REP MOVS and REP STOS in long mode across page ends, checked
 * against the element-by-element result computed here: a long MOVSB, STOSQ, overlapping
 * forward MOVSB and MOVSQ (each element sees the ones before: a MOVSB one byte up repeats the
 * first byte), the final RSI/RDI/RCX, and a MOVSB over code that already ran (the new code
 * must run). The soft CPU does these a page at a time with host memcpy (exec.c, string_run).
 */
static uint8_t rep_a[3 * 4096 + 64] __attribute__((aligned(4096)));
static uint8_t rep_b[3 * 4096 + 64] __attribute__((aligned(4096)));
static uint8_t rep_ref[3 * 4096 + 64];
static uint8_t rep_code[4096] __attribute__((aligned(4096)));

static void rep_movs(void *dst, const void *src, uint64_t n, unsigned int size, uint64_t *regs)
{
	uint64_t d = (uint64_t)(uintptr_t)dst, s = (uint64_t)(uintptr_t)src;
	if (size == 1)
		__asm__ volatile("cld; rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	else
		__asm__ volatile("cld; rep movsq" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	regs[0] = d;
	regs[1] = s;
	regs[2] = n;
}

static void test_rep(void)
{
	uint64_t r[3];
	for (unsigned int i = 0; i < sizeof(rep_a); i++)
		rep_a[i] = (uint8_t)(i * 131 + 7);
	/* 9000 bytes from 5 bytes into one page to 3001 bytes into another: page ends in both. */
	rep_movs(rep_b + 3001, rep_a + 5, 9000, 1, r);
	CHECK(!memcmp_(rep_b + 3001, rep_a + 5, 9000), "REP MOVSB copied wrong");
	CHECK(r[0] == (uint64_t)(uintptr_t)(rep_b + 12001) &&
		  r[1] == (uint64_t)(uintptr_t)(rep_a + 9005) && r[2] == 0,
	      "REP MOVSB left RDI/RSI/RCX wrong");
	/* STOSQ, 1500 quadwords from 12 bytes into a page. */
	uint64_t d = (uint64_t)(uintptr_t)(rep_b + 12), n = 1500, v = 0x0123456789abcdefULL;
	__asm__ volatile("cld; rep stosq" : "+D"(d), "+c"(n) : "a"(v) : "memory");
	for (unsigned int i = 0; i < 1500; i++) {
		uint64_t q;
		for (unsigned int k = 0; k < 8; k++)
			((uint8_t *)&q)[k] = rep_b[12 + 8 * i + k];
		CHECK(q == v, "REP STOSQ stored wrong");
	}
	CHECK(d == (uint64_t)(uintptr_t)(rep_b + 12 + 12000) && n == 0, "REP STOSQ left RDI/RCX");
	/* Overlapping forward copies: the reference moves one element at a time. */
	static const unsigned int delta[] = {1, 3, 8, 4000};
	for (unsigned int t = 0; t < 4; t++) {
		for (unsigned int size = 1; size <= 8; size += 7) {
			uint64_t count = 8000 / size;
			for (unsigned int i = 0; i < sizeof(rep_a); i++)
				rep_a[i] = rep_ref[i] = (uint8_t)(i * 7 + t);
			for (uint64_t e = 0; e < count; e++) {
				uint8_t tmp[8];
				for (unsigned int k = 0; k < size; k++)
					tmp[k] = rep_ref[100 + e * size + k];
				for (unsigned int k = 0; k < size; k++)
					rep_ref[100 + delta[t] + e * size + k] = tmp[k];
			}
			rep_movs(rep_a + 100 + delta[t], rep_a + 100, count, size, r);
			CHECK(!memcmp_(rep_a, rep_ref, sizeof(rep_a)),
			      "overlapping REP MOVS differs from element by element");
		}
	}
	/* Code that ran, overwritten by REP MOVSB, runs anew: xor %eax,%eax; ret, then mov $1. */
	static const uint8_t ret0[] = {0x31, 0xc0, 0xc3}, ret1[] = {0xb8, 1, 0, 0, 0, 0xc3};
	for (unsigned int i = 0; i < sizeof(ret0); i++)
		rep_code[i] = ret0[i];
	int (*fn)(void) = (int (*)(void))(uintptr_t)rep_code;
	CHECK(fn() == 0, "the code page did not run");
	rep_movs(rep_code, ret1, sizeof(ret1), 1, r);
	CHECK(fn() == 1, "code overwritten by REP MOVSB ran its old bytes");
	puts_("rep ok\n");
}

/*
 * "stackpf" on the command line: PUSH, PUSH imm, CALL rel, CALL r/m64 and POP whose stack
 * access faults (the 2 MiB page at 64 MiB made not present, then read-only under CR0.WP), the
 * #PF taken on IST1 (a good stack: delivering on the faulting one would double-fault). The
 * frame must show RSP and RIP still at the instruction, CR2 the stack access, the error code
 * its kind: what the interpreter leaves, compiled or not (test_vm_soft_jit.py).
 */
uint64_t pf_count, pf_code, pf_rip, pf_rsp, pf_cr2, pf_resume, pf_at, sp_saved;
extern void pf_entry(void);
__asm__(".text\n"
	"pf_entry:\n"
	"	popq pf_code(%rip)\n"
	"	push %rax\n"
	"	mov 8(%rsp), %rax\n"
	"	mov %rax, pf_rip(%rip)\n"
	"	mov 32(%rsp), %rax\n"
	"	mov %rax, pf_rsp(%rip)\n"
	"	mov %cr2, %rax\n"
	"	mov %rax, pf_cr2(%rip)\n"
	"	mov pf_resume(%rip), %rax\n"
	"	mov %rax, 8(%rsp)\n"
	"	incq pf_count(%rip)\n"
	"	pop %rax\n"
	"	iretq\n");

static uint64_t pf_gdt[8] __attribute__((aligned(8)));
static uint64_t pf_idt[512] __attribute__((aligned(16)));
static uint32_t pf_tss[26] __attribute__((aligned(16)));
static uint8_t pf_stack[4096] __attribute__((aligned(16)));

/* Runs insn with RSP at sp (after setup); the #PF handler resumes after it, at label 1. */
#define STACK_PF(sp, setup, insn)                                                                  \
	__asm__ volatile("mov %%rsp, sp_saved(%%rip)\n\tlea 1f(%%rip), %%rax\n\t"                  \
			 "mov %%rax, pf_resume(%%rip)\n\tlea 2f(%%rip), %%rax\n\t"                 \
			 "mov %%rax, pf_at(%%rip)\n\t" setup "\n\tmov $" #sp ", %%rsp\n2:\t" insn  \
			 "\n1:\tmov sp_saved(%%rip), %%rsp"                                        \
			 :                                                                         \
			 :                                                                         \
			 : "rax", "rcx", "memory")

static void stack_pf_check(uint64_t n, uint64_t code, uint64_t sp, uint64_t cr2, const char *what)
{
	if (pf_count == n && pf_code == code && pf_rsp == sp && pf_rip == pf_at && pf_cr2 == cr2)
		return;
	puts_("stackpf: ");
	puts_(what);
	puts_(": #PF count ");
	putu(pf_count);
	puts_(" code ");
	putx(pf_code);
	puts_(" RSP ");
	putx(pf_rsp);
	puts_(" RIP ");
	putx(pf_rip);
	puts_(" (the instruction ");
	putx(pf_at);
	puts_(") CR2 ");
	putx(pf_cr2);
	putc_('\n');
	CHECK(0, "a faulting stack access left the wrong state");
}

/* Loads gdt (n entries): the running GDT's first six, what the caller put after them, and a
 * 64-bit TSS at entry tss (two entries) whose IST1 is pf_stack's top; then an IDT whose
 * vector 14 is pf_entry on IST1. */
static void pf_tables(uint64_t *gdt, unsigned int n, unsigned int tss)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) dt;
	__asm__ volatile("sgdt %0" : "=m"(dt));
	for (int i = 0; i < 6; i++)
		gdt[i] = ((const uint64_t *)(uintptr_t)dt.base)[i];
	uint64_t top = (uint64_t)(uintptr_t)(pf_stack + sizeof(pf_stack));
	pf_tss[9] = (uint32_t)top; /* IST1, at byte 36 */
	pf_tss[10] = (uint32_t)(top >> 32);
	uint64_t b = (uint64_t)(uintptr_t)pf_tss;
	gdt[tss] = (sizeof(pf_tss) - 1) | (b & 0xffffff) << 16 | 0x89ULL << 40 |
		   ((b >> 24) & 0xff) << 56; /* a 64-bit TSS, available */
	gdt[tss + 1] = b >> 32;
	dt.base = (uint64_t)(uintptr_t)gdt;
	dt.limit = (uint16_t)(n * 8 - 1);
	__asm__ volatile("lgdt %0\n\tltr %w1" : : "m"(dt), "r"(tss * 8) : "memory");
	uint64_t h = (uint64_t)(uintptr_t)pf_entry;
	pf_idt[28] = (h & 0xffff) | 0x10ULL << 16 | 1ULL << 32 | 0x8eULL << 40 |
		     ((h >> 16) & 0xffff) << 48; /* vector 14: an interrupt gate on IST1 */
	pf_idt[29] = h >> 32;
	dt.base = (uint64_t)(uintptr_t)pf_idt;
	dt.limit = sizeof(pf_idt) - 1;
	__asm__ volatile("lidt %0" : : "m"(dt));
}

static void test_stackpf(void)
{
	pf_tables(pf_gdt, 8, 6);
	/* 64-66 MiB: not present */
	uint64_t cr3, cr0;
	__asm__ volatile("mov %%cr3, %0; mov %%cr0, %1" : "=r"(cr3), "=r"(cr0));
	volatile uint64_t *pml4 = (volatile uint64_t *)(uintptr_t)(cr3 & ~0xfffULL);
	volatile uint64_t *pdpt = (volatile uint64_t *)(uintptr_t)(pml4[0] & ~0xfffULL);
	volatile uint64_t *pd = (volatile uint64_t *)(uintptr_t)(pdpt[0] & ~0xfffULL);
	uint64_t old = pd[32];
	pd[32] = 0;
	__asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
	STACK_PF(0x4200000, "", "push %%rax");
	stack_pf_check(1, 2, 0x4200000, 0x41ffff8, "PUSH to a missing page");
	STACK_PF(0x4200000, "", "pushq $-5");
	stack_pf_check(2, 2, 0x4200000, 0x41ffff8, "PUSH imm8 to a missing page");
	STACK_PF(0x4100000, "", "pushw $0x1234");
	stack_pf_check(3, 2, 0x4100000, 0x40ffffe, "PUSH imm16 to a missing page");
	STACK_PF(0x4200000, "", "call 1f");
	stack_pf_check(4, 2, 0x4200000, 0x41ffff8, "CALL rel to a missing page");
	STACK_PF(0x4200000, "lea 1f(%%rip), %%rcx", "call *%%rcx");
	stack_pf_check(5, 2, 0x4200000, 0x41ffff8, "CALL reg to a missing page");
	STACK_PF(0x4200000, "lea pf_resume(%%rip), %%rcx", "call *(%%rcx)");
	stack_pf_check(6, 2, 0x4200000, 0x41ffff8, "CALL mem to a missing page");
	STACK_PF(0x4000000, "", "pop %%rcx");
	stack_pf_check(7, 0, 0x4000000, 0x4000000, "POP from a missing page");
	STACK_PF(0x4000000, "", "ret");
	stack_pf_check(8, 0, 0x4000000, 0x4000000, "RET from a missing page");
	STACK_PF(0x3fffffc, "", "pop %%rcx");
	stack_pf_check(9, 0, 0x3fffffc, 0x4000000, "POP across into a missing page");
	/* read-only, with CR0.WP: the write faults, present */
	pd[32] = old & ~2ULL;
	__asm__ volatile("mov %0, %%cr0; mov %1, %%cr3"
			 :
			 : "r"(cr0 | 0x10000), "r"(cr3)
			 : "memory");
	STACK_PF(0x4200000, "", "push %%rax");
	stack_pf_check(10, 3, 0x4200000, 0x41ffff8, "PUSH to a read-only page");
	STACK_PF(0x4000004, "", "push %%rax");
	stack_pf_check(11, 3, 0x4000004, 0x4000000, "PUSH across into a read-only page");
	pd[32] = old;
	__asm__ volatile("mov %0, %%cr0; mov %1, %%cr3" : : "r"(cr0), "r"(cr3) : "memory");
	puts_("stackpf ok\n");
}

/*
 * "userpf" on the command line: what the TLB allows at CPL 3 against CPL 0 (the soft CPU keeps
 * a tag per access kind and privilege in each entry; its compiled code compares one). The
 * 2 MiB page at 68 MiB changes between supervisor-only, user read-write and user read-only,
 * each change followed by INVLPG of another 4 KiB of it, and CPL 3 routines (entered by SYSRET,
 * back by SYSCALL; a #PF on IST1 resumes them at pf_resume) read, write and add to it: a user
 * access to a page a supervisor access cached faults, a page made supervisor-only again after
 * user accesses faults, a user write to a read-only page faults, and a supervisor write to it
 * faults under CR0.WP only. Faults come with CR2 and the error code; the values are checked.
 */
uint64_t up_resume, up_val;
extern void up_entry(void), up_read(void), up_write(void), up_add(void);
__asm__(".text\n"
	"up_entry:\n"
	"	jmp *up_resume(%rip)\n"
	"up_read:\n"
	"	lea 1f(%rip), %rax\n"
	"	mov %rax, pf_resume(%rip)\n"
	"	movl 0x4400008, %eax\n"
	"	mov %rax, up_val(%rip)\n"
	"1:	syscall\n"
	"up_write:\n"
	"	lea 1f(%rip), %rax\n"
	"	mov %rax, pf_resume(%rip)\n"
	"	movl $0x2222, 0x4400008\n"
	"1:	syscall\n"
	"up_add:\n"
	"	lea 1f(%rip), %rax\n"
	"	mov %rax, pf_resume(%rip)\n"
	"	addl $0x10, 0x4400008\n"
	"1:	syscall\n");

static uint64_t up_gdt[10] __attribute__((aligned(8)));

/* Runs fn at CPL 3 until its SYSCALL. */
static void user_run(void (*fn)(void))
{
	up_val = 0xdead;
	__asm__ volatile("lea 1f(%%rip), %%rax\n\tmov %%rax, up_resume(%%rip)\n\t"
			 "mov %0, %%rcx\n\tmov $2, %%r11\n\tsysretq\n1:"
			 :
			 : "r"(fn)
			 : "rax", "rcx", "r11", "memory");
}

/* A #PF with code and CR2 0x4400008 happened since the count was n, or none when code is 0.
 * RMW: a read-modify-write of a page it may not read either, which may report the read or the
 * write (W either way). */
#define RMW 0x100
static void user_pf_check(uint64_t n, uint64_t code, const char *what)
{
	uint64_t got = (code & RMW) ? pf_code & ~2ULL : pf_code;
	if (code ? pf_count == n + 1 && got == (code & 0xff) && pf_cr2 == 0x4400008 : pf_count == n)
		return;
	puts_("userpf: ");
	puts_(what);
	puts_(": #PF count ");
	putu(pf_count);
	puts_(" code ");
	putx(pf_code);
	puts_(" CR2 ");
	putx(pf_cr2);
	putc_('\n');
	CHECK(0, "a user or write-protect check through the TLB went wrong");
}

static void test_userpf(void)
{
	up_gdt[6] = 0x00cff2000000ffffULL; /* user data, then 64-bit user code: SYSRET's order */
	up_gdt[7] = 0x00affa000000ffffULL;
	pf_tables(up_gdt, 10, 8);
	wrmsr_(0xc0000080, rdmsr_(0xc0000080) | 1); /* EFER.SCE */
	wrmsr_(0xc0000081, (0x28ULL << 48) | (0x10ULL << 32));
	wrmsr_(0xc0000082, (uint64_t)(uintptr_t)up_entry);
	wrmsr_(0xc0000084, 0x200);
	uint64_t cr3, cr0;
	__asm__ volatile("mov %%cr3, %0; mov %%cr0, %1" : "=r"(cr3), "=r"(cr0));
	volatile uint64_t *pml4 = (volatile uint64_t *)(uintptr_t)(cr3 & ~0xfffULL);
	volatile uint64_t *pdpt = (volatile uint64_t *)(uintptr_t)(pml4[0] & ~0xfffULL);
	volatile uint64_t *pd = (volatile uint64_t *)(uintptr_t)(pdpt[0] & ~0xfffULL);
	volatile uint32_t *v = (volatile uint32_t *)0x4400008;
	pml4[0] |= 4;
	pdpt[0] |= 4;
	pd[0] |= 4;
	uint64_t old = pd[34];
	pd[34] = 0x4400000 | 0x83; /* present, writable, 2 MiB; supervisor only */
	__asm__ volatile("mov %0, %%cr0; mov %1, %%cr3"
			 :
			 : "r"(cr0 | 0x10000), "r"(cr3)
			 : "memory");
	/* cached by a supervisor write: no user access */
	*v = 0x1111;
	uint64_t n = pf_count;
	user_run(up_read);
	user_pf_check(n, 5, "a user read of a supervisor page cached by a supervisor write");
	CHECK(up_val == 0xdead, "the faulting user read loaded");
	user_run(up_write);
	user_pf_check(n + 1, 7, "a user write of a supervisor page");
	user_run(up_add);
	user_pf_check(n + 2, RMW | 5, "a user ADD [m] of a supervisor page");
	CHECK(*v == 0x1111, "a faulting user store wrote");
	/* user read-write after INVLPG of another 4 KiB of the 2 MiB page */
	pd[34] |= 4;
	__asm__ volatile("invlpg (%0)" : : "r"(0x4410000) : "memory");
	n = pf_count;
	user_run(up_read);
	user_pf_check(n, 0, "a user read of a user page");
	CHECK(up_val == 0x1111, "a user read of a user page read something else");
	user_run(up_write);
	user_run(up_add);
	user_pf_check(n, 0, "a user write of a user page");
	CHECK(*v == 0x2232, "user writes of a user page went missing");
	/* supervisor-only again: the entry that allowed user accesses goes with INVLPG */
	pd[34] &= ~4ULL;
	__asm__ volatile("invlpg (%0)" : : "r"(0x4400000) : "memory");
	(void)*v; /* and is cached again by a supervisor read */
	user_run(up_read);
	user_pf_check(n, 5, "a user read of a page made supervisor-only and INVLPG'd");
	user_run(up_add);
	user_pf_check(n + 1, RMW | 5, "a user ADD [m] of a page made supervisor-only and INVLPG'd");
	/* user read-only: user reads work, writes fault, supervisor ones only under CR0.WP */
	pd[34] = (pd[34] | 4) & ~2ULL;
	__asm__ volatile("invlpg (%0)" : : "r"(0x4400000) : "memory");
	n = pf_count;
	user_run(up_read);
	user_pf_check(n, 0, "a user read of a read-only user page");
	CHECK(up_val == 0x2232, "a user read of a read-only user page read something else");
	user_run(up_write);
	user_pf_check(n, 7, "a user write of a read-only page");
	__asm__ volatile("lea 1f(%%rip), %%rax\n\tmov %%rax, pf_resume(%%rip)\n\t"
			 "movl $0x3333, 0x4400008\n1:"
			 :
			 :
			 : "rax", "memory");
	user_pf_check(n + 1, 3, "a supervisor write of a read-only page under CR0.WP");
	CHECK(*v == 0x2232, "a faulting supervisor store wrote");
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0 & ~0x10000ULL) : "memory");
	*v = 0x3333;
	user_pf_check(n + 2, 0, "a supervisor write of a read-only page without CR0.WP");
	CHECK(*v == 0x3333, "a supervisor store without CR0.WP went missing");
	user_run(up_add);
	user_pf_check(n + 2, 7, "a user ADD [m] of a read-only page without CR0.WP");
	pd[34] = old;
	__asm__ volatile("mov %0, %%cr0; mov %1, %%cr3" : : "r"(cr0), "r"(cr3) : "memory");
	puts_("userpf ok\n");
}

void guest_main(const struct boot_params *bp);
void guest_main(const struct boot_params *bp)
{
	char v[32];
	const char *cmdline =
	    (const char *)(uintptr_t)(bp->hdr.cmd_line_ptr | (uint64_t)bp->ext_cmd_line_ptr << 32);
	puts_("bzimage guest: ");
	puts_(cmdline);
	putc_('\n');
	uint16_t cs, ds;
	uint64_t cr0, cr4;
	__asm__ volatile("mov %%cs, %0; mov %%ds, %1" : "=r"(cs), "=r"(ds));
	__asm__ volatile("mov %%cr0, %0; mov %%cr4, %1" : "=r"(cr0), "=r"(cr4));
	CHECK(cs == 0x10 && ds == 0x18, "segments are not __BOOT_CS/__BOOT_DS");
	CHECK((cr0 & 0x80000001u) == 0x80000001u && (cr4 & 0x20), "not in paged long mode");
	CHECK(bp->hdr.boot_flag == 0xaa55 && bp->hdr.header == 0x53726448, "setup header copy");
	CHECK(bp->hdr.version == 0x020f, "setup header version");
	CHECK(bp->hdr.type_of_loader == 0xff, "type_of_loader is not 0xff");
	CHECK(bp->acpi_rsdp_addr == 0xe0000, "acpi_rsdp_addr is not 0xE0000");
	/* The identity map covers 4 GiB: the LAPIC's version register reads through it. */
	CHECK((*(volatile uint32_t *)0xfee00030ULL & 0xff) != 0xff, "LAPIC not mapped");
	cmdline_get(cmdline, "mem", v, sizeof(v));
	struct memmap_entry m[16];
	unsigned int n = 0;
	for (; n < bp->e820_entries && n < 16; n++)
		m[n] = (struct memmap_entry){bp->e820_table[n].addr, bp->e820_table[n].size,
					     bp->e820_table[n].type};
	const char *bad = check_memmap(m, n, atou(v));
	CHECK(!bad, bad);
	if (cmdline_get(cmdline, "initrd", v, sizeof(v))) {
		uint64_t addr = bp->hdr.ramdisk_image | (uint64_t)bp->ext_ramdisk_image << 32;
		CHECK(bp->hdr.ramdisk_size == atou(v), "ramdisk_size differs");
		CHECK(addr + bp->hdr.ramdisk_size <= bp->hdr.initrd_addr_max + 1ULL,
		      "initrd above initrd_addr_max");
		CHECK(!memcmp_((const void *)(uintptr_t)addr, "KAPSEL-INITRD", 13),
		      "initrd content differs");
		puts_("initrd ok\n");
	}
	if (cmdline_get(cmdline, "syscall", v, sizeof(v)))
		test_syscall();
	if (cmdline_get(cmdline, "rep", v, sizeof(v)))
		test_rep();
	if (cmdline_get(cmdline, "stackpf", v, sizeof(v)))
		test_stackpf();
	if (cmdline_get(cmdline, "userpf", v, sizeof(v)))
		test_userpf();
	if (cmdline_get(cmdline, "diff", v, sizeof(v)))
		test_diff(bp);
	puts_("bzimage ok\n");
	pass();
}
