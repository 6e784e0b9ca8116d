/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The multiboot kernel's tests of several vCPUs working together (the smp test, the AP check-in,
 * is in multiboot.c). The APs start through the 32-bit AP entry of entry32.S (INIT, then
 * STARTUP vector 0x12) and run ap_main with the job the BSP set:
 *   smpcount  every vCPU adds 1 to shared counters "n=N" times each: LOCK XADD, a LOCK CMPXCHG
 *             loop, an XCHG spinlock around a plain increment, LOCK CMPXCHG8B on a 64-bit
 *             counter (N/4 times) and LOCK ADD on a counter that crosses a page (N/16 times);
 *             every total must be exact
 *   ipi       ("model=flat|cluster": the logical destination model the APs set up) the APs
 *             wait in HLT; a fixed IPI to APIC id 1 (physical) wakes that AP alone, a
 *             logical one (flat model) AP 2 alone, a lowest-priority one to every AP exactly
 *             one of them, the I/O APIC's pin 4 (the UART) routed to APIC id 1 that AP
 *             alone, all-but-self every AP and not the BSP; then, with the APs halted
 *             with IF clear, a fixed IPI to AP 1 stays pending and an NMI wakes it. The ICR's
 *             delivery status reads idle after each
 *   sipibad   INIT and STARTUP to APIC id 0x20, which no vCPU has: nothing starts; then the
 *             same to APIC id 1, which starts; a STARTUP alone to it again is ignored, INIT
 *             and STARTUP start it again
 *   lockud    LOCK where it may not be (a register destination, MOV, XCHG between registers)
 *             raises #UD, and the instruction does nothing
 *   xsmc      cross-modifying code: AP 1 runs a function (1), the BSP rewrites its immediate
 *             and then tells the AP, which runs it again and must get the new value (2),
 *             "n=N" rounds (SDM vol. 3 §9.1.3)
 *   xlink     the same with linked blocks: AP 1 spins in a loop on the rewritten code's page
 *             until the BSP's round comes, then runs xlink_fn's linked loop, whose block the
 *             BSP rewrote (its immediate r + 1) before: it must return 16 * (r + 1)
 */
#pragma once
#include <stdint.h>

#include "acpi.h"
#include "guest.h"

#define SMP_LAPIC(off) (*(volatile uint32_t *)(uintptr_t)(0xfee00000u + (off)))
#define AP32_BASE      0x12000u
#define SPLIT_CTR      ((volatile uint32_t *)(uintptr_t)0x900ffeu) /* crosses a page */

extern const uint8_t ap32_tramp_start[], ap32_tramp_end[], ap32_gdtr[];
extern const uint8_t ap_tramp_start[], ap_tramp_end[], ap_tramp_count[];
extern volatile uint32_t ipi_hits, ipi_park, nmi_hits, ipi_parked, ipi_by[64];
void ipi_wait(void);
void isr_ipi(void);
void isr_nmi(void);
void ap_main(uint32_t id);
uint32_t xsmc_fn(void);
extern uint8_t xsmc_fn_code[] __asm__("xsmc_fn");

uint32_t xlink_wait(volatile uint32_t *round, uint32_t r);
extern uint8_t xlink_imm[];

enum { JOB_COUNT = 1, JOB_IPI, JOB_XSMC, JOB_XLINK };
static volatile uint32_t xsmc_round, xsmc_ack, xsmc_got;
static volatile uint32_t ap_job, ap_n, ap_started, ap_done, ap_ready, ap_cluster;
/* split=0: no page-crossing LOCK ADD (KVM's instruction emulator does it as a plain write). */
static volatile uint32_t ap_split = 1;
static volatile uint32_t ctr_xadd, ctr_cas, ctr_plain, ctr_lock;
static volatile uint64_t ctr_cx8 __attribute__((aligned(8)));

static struct {
	uint16_t lo, sel;
	uint8_t zero, attr;
	uint16_t hi;
} smp_idt[256];

static void smp_gate(int v, void (*fn)(void))
{
	uint32_t a = (uint32_t)(uintptr_t)fn;
	smp_idt[v].lo = (uint16_t)a;
	smp_idt[v].sel = 0x10;
	smp_idt[v].attr = 0x8e;
	smp_idt[v].hi = (uint16_t)(a >> 16);
}

static void smp_lidt(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) r = {sizeof(smp_idt) - 1, (uint32_t)(uintptr_t)smp_idt};
	__asm__ volatile("lidt %0" : : "m"(r));
}

static int64_t smp_now(void)
{
	return hypercall(2, 1, 0); /* CLOCK_MONOTONIC, ns */
}

/* Waits up to ms milliseconds (by the host's clock) for *v to reach want. */
static uint32_t smp_wait(volatile uint32_t *v, uint32_t want, int64_t ms)
{
	int64_t t0 = smp_now();
	for (uint32_t spin = 1; *v < want; spin++)
		if ((spin & 0xffff) == 0 && smp_now() - t0 >= ms * 1000000)
			break;
	return *v;
}

static void smp_sleep_ms(int64_t ms)
{
	int64_t t0 = smp_now();
	while (smp_now() - t0 < ms * 1000000)
		__asm__ volatile("pause");
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)0xfec00000u = reg;
	*(volatile uint32_t *)(uintptr_t)0xfec00010u = v;
}

/* The ICR: high half (the destination) first, then the command. */
static void icr(uint32_t dest, uint32_t cmd)
{
	SMP_LAPIC(0x310) = dest << 24;
	SMP_LAPIC(0x300) = cmd;
	CHECK(!(SMP_LAPIC(0x300) & 0x1000), "ICR delivery status not idle after sending");
}

/* INIT, then STARTUP twice (SDM vol. 3 §9.4.4.1), physical to dest or (shorthand) to all
 * but self, into the code at page vector. */
static void start_aps(uint32_t shorthand, uint32_t dest, uint32_t vector)
{
	SMP_LAPIC(0xf0) = 0x1ff;
	icr(dest, shorthand | 0x4500);
	smp_sleep_ms(1);
	for (int k = 0; k < 2; k++) {
		icr(dest, shorthand | 0x4600 | vector);
		smp_sleep_ms(1);
	}
}

/* Copies the 32-bit AP entry and gives it this GDT, then starts every AP on job. */
static uint32_t start_ap32(uint32_t job)
{
	struct acpi_info a;
	const char *bad = acpi_scan(&a);
	CHECK(!bad, bad);
	CHECK(a.ncpus >= 2 && a.ncpus <= 64, "smp tests need 2 to 64 vCPUs");
	uint8_t *dst = (uint8_t *)(uintptr_t)AP32_BASE;
	for (uint32_t i = 0; i < (uint32_t)(ap32_tramp_end - ap32_tramp_start); i++)
		dst[i] = ap32_tramp_start[i];
	__asm__ volatile("sgdt (%0)" : : "r"(dst + (ap32_gdtr - ap32_tramp_start)) : "memory");
	ap_job = job;
	start_aps(0xc0000, 0, AP32_BASE >> 12);
	uint32_t n = smp_wait(&ap_started, a.ncpus - 1, 30000);
	CHECK(n == a.ncpus - 1, "not every AP started");
	return a.ncpus;
}

static void count_work(uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint32_t one = 1;
		__asm__ volatile("lock xaddl %0, %1" : "+r"(one), "+m"(ctr_xadd) : : "memory");
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t old = ctr_cas, ok;
		do {
			uint32_t want = old + 1;
			__asm__ volatile("lock cmpxchgl %3, %1\n\tsete %b2"
					 : "+a"(old), "+m"(ctr_cas), "=q"(ok)
					 : "r"(want)
					 : "memory", "cc");
		} while (!(ok & 1));
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t taken;
		do {
			taken = 1;
			__asm__ volatile("xchgl %0, %1" : "+r"(taken), "+m"(ctr_lock) : : "memory");
			if (taken)
				__asm__ volatile("pause");
		} while (taken);
		ctr_plain = ctr_plain + 1; /* a plain load and store, under the lock */
		__asm__ volatile("" : : : "memory");
		ctr_lock = 0; /* a plain store releases it (x86-TSO) */
	}
	for (uint32_t i = 0; i < n / 4; i++) {
		uint32_t lo = (uint32_t)ctr_cx8, hi = (uint32_t)(ctr_cx8 >> 32), ok;
		do {
			uint64_t want = (((uint64_t)hi << 32) | lo) + 1;
			__asm__ volatile("lock cmpxchg8b %1\n\tsete %b2"
					 : "+a"(lo), "+m"(ctr_cx8), "=q"(ok), "+d"(hi)
					 : "b"((uint32_t)want), "c"((uint32_t)(want >> 32))
					 : "memory", "cc");
		} while (!(ok & 1));
	}
	for (uint32_t i = 0; ap_split && i < n / 16; i++)
		__asm__ volatile("lock addl $1, %0" : "+m"(*SPLIT_CTR) : : "memory");
}

void ap_main(uint32_t id)
{
	__asm__ volatile("lock incl %0" : "+m"(ap_started) : : "memory");
	if (ap_job == JOB_COUNT) {
		count_work(ap_n);
		__asm__ volatile("lock incl %0" : "+m"(ap_done) : : "memory");
		return;
	}
	if (ap_job == JOB_XSMC && id == 1) {
		/* Round r: run the function, report what it returned, wait for round r + 1. */
		for (uint32_t r = 1; r <= ap_n; r++) {
			while (xsmc_round < r)
				xsmc_fn(); /* keeps its translation hot meanwhile */
			xsmc_got = xsmc_fn();
			__asm__ volatile("" : : : "memory");
			xsmc_ack = r;
		}
		return;
	}
	if (ap_job == JOB_XLINK && id == 1) {
		/* Round r: wait for it inside the page, then run the rewritten loop. */
		for (uint32_t r = 1; r <= ap_n; r++) {
			xsmc_got = xlink_wait(&xsmc_round, r);
			__asm__ volatile("" : : : "memory");
			xsmc_ack = r;
		}
		return;
	}
	if (ap_job == JOB_IPI) {
		smp_lidt();
		SMP_LAPIC(0xf0) = 0x1ff;
		SMP_LAPIC(0x80) = 0;
		if (ap_cluster) { /* cluster model: cluster = APIC id, member bit 0 */
			SMP_LAPIC(0xe0) = 0x0fffffffu;
			SMP_LAPIC(0xd0) = ((id & 0xf) << 28) | (1u << 24);
		} else { /* flat model: one bit each */
			SMP_LAPIC(0xe0) = 0xffffffffu;
			SMP_LAPIC(0xd0) = id < 8 ? 1u << (24 + id) : 0;
		}
		__asm__ volatile("lock incl %0" : "+m"(ap_ready) : : "memory");
		ipi_wait();
	}
}

static void test_smpcount(const char *cmdline)
{
	char v[16];
	uint32_t n = cmdline_get(cmdline, "n", v, sizeof(v)) ? (uint32_t)atou(v) : 100000;
	ap_n = n;
	ap_split = !(cmdline_get(cmdline, "split", v, sizeof(v)) && atou(v) == 0);
	*SPLIT_CTR = 0;
	uint32_t cpus = start_ap32(JOB_COUNT);
	count_work(n);
	uint32_t done = smp_wait(&ap_done, cpus - 1, 120000);
	CHECK(done == cpus - 1, "not every AP finished");
	puts_("smpcount: ");
	putu(cpus);
	puts_(" cpus x ");
	putu(n);
	puts_(": xadd ");
	putu(ctr_xadd);
	puts_(" cmpxchg ");
	putu(ctr_cas);
	puts_(" xchg-lock ");
	putu(ctr_plain);
	puts_(" cmpxchg8b ");
	putu((uint32_t)ctr_cx8);
	puts_(" split ");
	putu(*SPLIT_CTR);
	putc_('\n');
	CHECK(ctr_xadd == cpus * n, "LOCK XADD total is off");
	CHECK(ctr_cas == cpus * n, "LOCK CMPXCHG total is off");
	CHECK(ctr_plain == cpus * n, "the XCHG spinlock let increments through");
	CHECK(ctr_cx8 == (uint64_t)cpus * (n / 4), "LOCK CMPXCHG8B total is off");
	CHECK(*SPLIT_CTR == (ap_split ? cpus * (n / 16) : 0), "the split LOCK ADD total is off");
	pass();
}

static void test_ipi(const char *cmdline)
{
	char v[16];
	ap_cluster = cmdline_get(cmdline, "model", v, sizeof(v)) && streq(v, "cluster");
	smp_gate(0x40, isr_ipi);
	smp_gate(2, isr_nmi);
	uint32_t cpus = start_ap32(JOB_IPI);
	CHECK(smp_wait(&ap_ready, cpus - 1, 30000) == cpus - 1, "not every AP is ready");
	smp_sleep_ms(50); /* they are in HLT now */
	CHECK(ipi_hits == 0, "an AP was interrupted before any IPI");
	/* Fixed, physical, to APIC id 1: that AP alone. */
	icr(1, 0x4040);
	CHECK(smp_wait(&ipi_hits, 1, 10000) == 1, "a fixed IPI did not wake AP 1");
	smp_sleep_ms(50);
	CHECK(ipi_hits == 1 && ipi_by[1] == 1, "a fixed IPI to APIC id 1 reached another vCPU");
	uint32_t want = 1;
	if (cpus >= 3) {
		/* Logical: flat, LDR bit 2 is AP 2's; cluster, cluster 2 member 0 (0x21, which in
		 * the flat model would reach every AP: they all have bit 0). */
		icr(ap_cluster ? 0x21 : 1u << 2, 0x4840);
		want++;
		CHECK(smp_wait(&ipi_hits, want, 10000) == want, "a logical IPI woke no AP");
		smp_sleep_ms(50);
		CHECK(ipi_hits == want && ipi_by[2] == 1, "a logical IPI missed AP 2 alone");
	}
	/* Lowest priority, logical, to every AP's bit (up to 7; cluster: cluster 1's members 0
	 * and 1, AP 1 and a member no one is): exactly one takes it. */
	uint32_t bits = ap_cluster ? 0x13 : cpus >= 8 ? 0xfe : ((1u << cpus) - 1) & ~1u;
	icr(bits, 0x4940);
	want++;
	CHECK(smp_wait(&ipi_hits, want, 10000) == want, "a lowest-priority IPI woke no AP");
	smp_sleep_ms(50);
	CHECK(ipi_hits == want, "a lowest-priority IPI reached more than one AP");
	/* The I/O APIC to another vCPU: the UART's IRQ 4 (THR empty), fixed, physical, edge, to
	 * APIC id 1. */
	uint32_t before = ipi_by[1];
	ioapic_write(0x10 + 2 * 4 + 1, 1u << 24);
	ioapic_write(0x10 + 2 * 4, 0x40);
	outb(0x3f9, 0x02); /* IER: THR empty */
	CHECK(smp_wait(&ipi_by[1], before + 1, 10000) == before + 1,
	      "the I/O APIC's IRQ 4 did not reach AP 1");
	outb(0x3f9, 0);
	(void)inb(0x3fa);
	ioapic_write(0x10 + 2 * 4, 1u << 16); /* masked again */
	want++;
	smp_sleep_ms(50);
	CHECK(ipi_hits == want, "the I/O APIC's IRQ 4 reached more than AP 1");
	/* All but self, then halted with IF clear (ipi_park). */
	ipi_park = 1;
	icr(0, 0xc4040);
	want += cpus - 1;
	CHECK(smp_wait(&ipi_hits, want, 10000) == want, "all-but-self did not wake every AP");
	CHECK(smp_wait(&ipi_parked, cpus - 1, 10000) == cpus - 1, "not every AP parked");
	CHECK(ipi_by[0] == 0, "all-but-self reached the sender");
	/* AP 1 has IF clear: a fixed IPI stays pending; an NMI wakes it. */
	uint32_t by1 = ipi_by[1];
	icr(1, 0x4040);
	smp_sleep_ms(50);
	CHECK(ipi_by[1] == by1, "an AP with IF clear took a fixed IPI");
	icr(1, 0x4400);
	CHECK(smp_wait(&nmi_hits, 1, 10000) == 1, "an NMI did not wake AP 1 from cli; hlt");
	puts_("ipi: fixed, logical, lowest priority, I/O APIC; all-but-self woke ");
	putu(cpus - 1);
	putc_('/');
	putu(cpus - 1);
	puts_(" APs from hlt, nmi ");
	putu(nmi_hits);
	putc_('\n');
	pass();
}

static void test_sipibad(void)
{
	struct acpi_info a;
	const char *bad = acpi_scan(&a);
	CHECK(!bad, bad);
	CHECK(a.ncpus >= 2 && a.ncpus < 0x20, "sipibad needs 2 to 31 vCPUs");
	uint8_t *dst = (uint8_t *)0x10000;
	for (uint32_t i = 0; i < (uint32_t)(ap_tramp_end - ap_tramp_start); i++)
		dst[i] = ap_tramp_start[i];
	volatile uint32_t *count = (volatile uint32_t *)(dst + (ap_tramp_count - ap_tramp_start));
	start_aps(0, 0x20, 0x10);
	smp_sleep_ms(200);
	uint32_t stray = *count;
	start_aps(0, 1, 0x10);
	smp_wait(count, 1, 30000);
	smp_sleep_ms(50);
	uint32_t one = *count;
	/* A STARTUP without INIT reaches a vCPU that is not waiting for one: ignored. */
	icr(1, 0x4600 | 0x10);
	smp_sleep_ms(200);
	uint32_t again = *count - one;
	/* INIT puts AP 1 back to waiting; the next STARTUP runs the trampoline again. */
	start_aps(0, 1, 0x10);
	uint32_t reinit = smp_wait(count, one + again + 1, 30000) - one - again;
	puts_("sipibad: ");
	putu(stray);
	puts_(" started by a SIPI to APIC id 0x20, ");
	putu(one);
	puts_(" by one to id 1, ");
	putu(again);
	puts_(" by a SIPI without INIT, ");
	putu(reinit);
	puts_(" after INIT again\n");
	CHECK(stray == 0, "a SIPI to a missing APIC id started a vCPU");
	CHECK(one == 1, "a SIPI to APIC id 1 did not start exactly that AP");
	CHECK(again == 0, "a SIPI restarted a vCPU that was not waiting for one");
	CHECK(reinit == 1, "INIT and SIPI did not restart AP 1");
	pass();
}

static void test_xsmc(const char *cmdline)
{
	char v[16];
	uint32_t n = cmdline_get(cmdline, "n", v, sizeof(v)) ? (uint32_t)atou(v) : 100;
	ap_n = n;
	start_ap32(JOB_XSMC);
	for (uint32_t r = 1; r <= n; r++) {
		/* The immediate of "mov $imm32, %eax" is the function's bytes 1-4. */
		*(volatile uint32_t *)(xsmc_fn_code + 1) = r + 1;
		__asm__ volatile("" : : : "memory");
		xsmc_round = r;
		CHECK(smp_wait(&xsmc_ack, r, 10000) == r, "AP 1 did not answer");
		if (xsmc_got != r + 1) {
			puts_("xsmc: round ");
			putu(r);
			puts_(": AP 1 ran the old code, got ");
			putu(xsmc_got);
			putc_('\n');
			fail("cross-modified code ran stale");
		}
	}
	puts_("xsmc: ");
	putu(n);
	puts_(" rounds, AP 1 ran the new code each time\n");
	pass();
}

static void test_xlink(const char *cmdline)
{
	char v[16];
	uint32_t n = cmdline_get(cmdline, "n", v, sizeof(v)) ? (uint32_t)atou(v) : 100;
	ap_n = n;
	start_ap32(JOB_XLINK);
	for (uint32_t r = 1; r <= n; r++) {
		*(volatile uint32_t *)xlink_imm = r + 1;
		__asm__ volatile("" : : : "memory");
		xsmc_round = r;
		CHECK(smp_wait(&xsmc_ack, r, 10000) == r, "AP 1 did not answer");
		if (xsmc_got != 16 * (r + 1)) {
			puts_("xlink: round ");
			putu(r);
			puts_(": AP 1 ran the old code, got ");
			putu(xsmc_got);
			putc_('\n');
			fail("cross-modified code ran stale through a link");
		}
	}
	puts_("xlink: ");
	putu(n);
	puts_(" rounds, AP 1 ran the new code each time\n");
	pass();
}

extern volatile uint32_t ud_count, ud_resume;
void isr_ud(void);
#define SMP_EXPECT_UD(insn)                                                                        \
	__asm__ volatile("movl $1f, ud_resume\n\t" insn "\n1:" : : : "memory", "eax", "ebx")

static void test_lockud(void)
{
	smp_gate(6, isr_ud);
	smp_lidt();
	uint32_t before = ud_count, v = 7;
	SMP_EXPECT_UD("mov $1, %%eax\n\tmov $2, %%ebx\n\t.byte 0xf0, 0x01, 0xc3"); /* lock add */
	SMP_EXPECT_UD(".byte 0xf0, 0x8b, 0x03");    /* lock mov (%ebx) */
	SMP_EXPECT_UD(".byte 0xf0, 0x87, 0xc3");    /* lock xchg reg, reg */
	__asm__ volatile("lock incl %0" : "+m"(v)); /* and where it may, it works */
	puts_("lockud: ");
	putu(ud_count - before);
	puts_(" #UD, v ");
	putu(v);
	putc_('\n');
	CHECK(ud_count - before == 3, "LOCK where it may not be did not raise #UD");
	CHECK(v == 8, "LOCK INC did not add");
	pass();
}
