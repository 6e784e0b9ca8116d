/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The multiboot test kernel. One kernel, many tests, chosen by "test=NAME" on the command
 * line: each checks one VMM feature and ends the VM (PASS: debug-exit 0x2a, status 85).
 *   boot      multiboot_info: magic, flags, mem_upper ("mem=MiB"), cmdline, the initrd
 *             module ("initrd=BYTES", content "KAPSEL-INITRD..."), the memory map
 *   echo      serial input: echoes lines back until "quit"
 *   rtc       prints the CMOS date and time
 *   hypercall version, console write, time; then power-off with code 7
 *   acpi      checks the tables' checksums and counts, then powers off through \_S5
 *   reset     i8042 reset (0xFE to port 0x64)
 *   smp       INIT/SIPI to all APs; every vCPU checks in
 *   timer     PIT interrupts through the PIC, then LAPIC timer interrupts
 *   triple    triple fault;  emufail  xgetbv (KVM here cannot emulate it)
 *   unclaimed writes and reads an unclaimed port 100 times
 *   spin      loops forever (host signal tests);  loop  "n=N" iterations, timed
 *   exits     "n=N" writes to an unclaimed port (bench/vm-exits)
 */
#include "acpi.h"
#include "guest.h"

struct mb_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
	uint32_t drives_length, drives_addr, config_table, boot_loader_name;
};
struct mb_module {
	uint32_t mod_start, mod_end, string, reserved;
};
struct mb_mmap {
	uint32_t size;
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

static const char *cmdline = "";

static void test_boot(const struct mb_info *mb)
{
	char v[32];
	CHECK((mb->flags & 0x45) == 0x45, "flags lack MEMORY|CMDLINE|MEM_MAP");
	CHECK(mb->mem_lower == 639, "mem_lower is not 639 KiB");
	cmdline_get(cmdline, "mem", v, sizeof(v));
	uint64_t mib = atou(v);
	CHECK(mib && mb->mem_upper == (mib < 3072 ? mib : 3072) * 1024 - 1024,
	      "mem_upper does not match --mem");
	struct memmap_entry m[16];
	unsigned int n = 0;
	for (uint32_t off = 0; off < mb->mmap_length && n < 16; n++) {
		const struct mb_mmap *e = (const void *)(uintptr_t)(mb->mmap_addr + off);
		m[n] = (struct memmap_entry){e->addr, e->len, e->type};
		off += e->size + 4;
	}
	const char *bad = check_memmap(m, n, mib);
	CHECK(!bad, bad);
	if (cmdline_get(cmdline, "initrd", v, sizeof(v))) {
		CHECK(mb->flags & 0x8, "no MODS flag");
		CHECK(mb->mods_count == 1, "mods_count != 1");
		const struct mb_module *mod = (const void *)(uintptr_t)mb->mods_addr;
		CHECK(mod->mod_end - mod->mod_start == atou(v), "module size differs");
		CHECK((mod->mod_start & 0xfff) == 0, "module not page aligned");
		CHECK(!memcmp_((const void *)(uintptr_t)mod->mod_start, "KAPSEL-INITRD", 13),
		      "module content differs");
		puts_("initrd ok\n");
	}
	puts_("loader: ");
	puts_((const char *)(uintptr_t)mb->boot_loader_name);
	puts_("\nboot ok\n");
	pass();
}

static void test_echo(void)
{
	char line[128];
	unsigned int n = 0;
	puts_("echo ready\n");
	for (;;) {
		while (!(inb(COM1 + 5) & 1))
			;
		char c = (char)inb(COM1);
		if (c != '\n' && c != '\r' && n + 1 < sizeof(line)) {
			line[n++] = c;
			continue;
		}
		if (c == '\r')
			continue;
		line[n] = 0;
		n = 0;
		if (streq(line, "quit"))
			pass();
		puts_("echo: ");
		puts_(line);
		putc_('\n');
	}
}

static uint8_t cmos(uint8_t reg)
{
	outb(0x70, reg);
	return inb(0x71);
}
static void put2(uint8_t bcd)
{
	putc_((char)('0' + (bcd >> 4)));
	putc_((char)('0' + (bcd & 15)));
}

static void test_rtc(void)
{
	CHECK(cmos(0x0d) & 0x80, "RTC register D: battery not valid");
	CHECK(cmos(0x0b) & 0x02, "RTC not in 24-hour mode");
	puts_("rtc: ");
	put2(cmos(0x32));
	put2(cmos(0x09));
	putc_('-');
	put2(cmos(0x08));
	putc_('-');
	put2(cmos(0x07));
	putc_(' ');
	put2(cmos(0x04));
	putc_(':');
	put2(cmos(0x02));
	putc_(':');
	put2(cmos(0x00));
	putc_('\n');
	/* CMOS RAM keeps what is written. */
	outb(0x70, 0x40);
	outb(0x71, 0x5a);
	CHECK(cmos(0x40) == 0x5a, "CMOS RAM did not keep a byte");
	pass();
}

static void test_hypercall(void)
{
	static const char msg[] = "hello from a hypercall\n";
	CHECK(inl(HYPERCALL_PORT) == HC_MAGIC, "hypercall port magic");
	int64_t v = hypercall(0, 0, 0);
	puts_("hypercall version ");
	putx((uint64_t)v);
	putc_('\n');
	CHECK(v == 0x10000, "version is not 1.0");
	CHECK(hypercall(1, (uintptr_t)msg, sizeof(msg) - 1) == sizeof(msg) - 1, "console write");
	CHECK(hypercall(1, 0xbff00000ULL * 16, 8) == -14, "console write outside RAM: not EFAULT");
	int64_t t = hypercall(2, 0, 0);
	puts_("time ");
	putu(udiv((uint64_t)t, 1000000000, 0));
	putc_('\n');
	CHECK(t > 1600000000LL * 1000000000LL, "realtime clock before 2020");
	int64_t m1 = hypercall(2, 1, 0), m2 = hypercall(2, 1, 0);
	CHECK(m2 >= m1, "monotonic clock went back");
	CHECK(hypercall(2, 9, 0) == -22, "bad clock id: not EINVAL");
	CHECK(hypercall(77, 0, 0) == -38, "unknown call: not ENOSYS");
	puts_("powering off with code 7\n");
	hypercall(3, 7, 0);
	fail("still running after power-off");
}

static void test_acpi(void)
{
	struct acpi_info a;
	const char *bad = acpi_scan(&a);
	CHECK(!bad, bad);
	puts_("acpi: ");
	putu(a.ncpus);
	puts_(" cpus, ioapic ");
	putx(a.ioapic);
	puts_(", sleep control ");
	putx(a.sleep_control);
	puts_(", S5 ");
	putu(a.s5);
	putc_('\n');
	outb((uint16_t)a.sleep_control, (uint8_t)((a.s5 << 2) | 0x20));
	fail("still running after ACPI power-off");
}

volatile uint32_t pit_ticks, lapic_ticks; /* counted by entry32.S */
extern void isr_pit(void), isr_lapic(void), isr_spurious(void), triple_fault(void);
extern void wait_ticks(volatile uint32_t *counter, uint32_t target);

struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t zero, attr;
	uint16_t off_hi;
} __attribute__((packed));
static struct idt_gate idt[256];

static void set_gate(int v, void (*fn)(void))
{
	uint32_t a = (uint32_t)(uintptr_t)fn;
	idt[v] = (struct idt_gate){(uint16_t)a, 0x10, 0, 0x8e, (uint16_t)(a >> 16)};
}

#define LAPIC(off) (*(volatile uint32_t *)(uintptr_t)(0xfee00000u + (off)))

static void test_timer(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	set_gate(0x20, isr_pit);
	set_gate(0x30, isr_lapic);
	set_gate(0xff, isr_spurious);
	for (int i = 0x21; i < 0x30; i++)
		set_gate(i, isr_spurious);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	/* LAPIC on, LINT0 ExtINT unmasked: the PIC's output reaches the CPU. */
	LAPIC(0xf0) = 0x1ff;
	LAPIC(0x350) = 0x700;
	/* 8259A: vectors 0x20-0x2f, only IRQ0 unmasked. */
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	outb(0x21, 0x20);
	outb(0xa1, 0x28);
	outb(0x21, 4);
	outb(0xa1, 2);
	outb(0x21, 1);
	outb(0xa1, 1);
	outb(0x21, 0xfe);
	outb(0xa1, 0xff);
	/* PIT channel 0, mode 2, 100 Hz. */
	outb(0x43, 0x34);
	outb(0x40, 11932 & 0xff);
	outb(0x40, 11932 >> 8);
	wait_ticks(&pit_ticks, 5);
	puts_("timer: pit ok\n");
	outb(0x21, 0xff);
	/* LAPIC timer: periodic, vector 0x30, divide by 1. */
	LAPIC(0x3e0) = 0xb;
	LAPIC(0x320) = 0x30 | (1u << 17);
	LAPIC(0x380) = 1000000;
	wait_ticks(&lapic_ticks, 5);
	LAPIC(0x320) = 1u << 16;
	puts_("timer: lapic ok\n");
	pass();
}

extern const uint8_t ap_tramp_start[], ap_tramp_end[], ap_tramp_mask[], ap_tramp_count[];

static void test_smp(void)
{
	struct acpi_info a;
	const char *bad = acpi_scan(&a);
	CHECK(!bad, bad);
	uint8_t *dst = (uint8_t *)0x10000;
	uint32_t len = (uint32_t)(ap_tramp_end - ap_tramp_start);
	for (uint32_t i = 0; i < len; i++)
		dst[i] = ap_tramp_start[i];
	volatile uint32_t *mask = (volatile uint32_t *)(dst + (ap_tramp_mask - ap_tramp_start));
	volatile uint32_t *count = (volatile uint32_t *)(dst + (ap_tramp_count - ap_tramp_start));
	LAPIC(0xf0) = 0x1ff;
	/* INIT, then SIPI twice (Intel SDM vol. 3 §8.4.4.1), to all but self. */
	LAPIC(0x310) = 0;
	LAPIC(0x300) = 0x000c4500;
	for (volatile int i = 0; i < 1000; i++)
		;
	for (int k = 0; k < 2; k++) {
		LAPIC(0x300) = 0x000c4600 | (0x10000 >> 12);
		for (volatile int i = 0; i < 200; i++)
			;
	}
	for (uint32_t spin = 0; *count < a.ncpus - 1 && spin < 20000000; spin++)
		;
	puts_("smp: ");
	putu(*count + 1);
	putc_('/');
	putu(a.ncpus);
	puts_(" cpus checked in, mask ");
	putx(mask[0] | 1);
	putc_('\n');
	CHECK(*count == a.ncpus - 1, "not every AP checked in");
	uint64_t want = a.ncpus >= 32 ? 0xffffffffu : (1u << a.ncpus) - 1;
	CHECK((mask[0] | 1) == want, "APIC ids differ from the MADT's");
	pass();
}

static void test_unclaimed(void)
{
	for (int i = 0; i < 100; i++)
		outb(0x3e0, (uint8_t)i);
	CHECK(inb(0x3e0) == 0xff, "unclaimed read is not 0xff");
	pass();
}

static void test_loop(void)
{
	char v[24];
	cmdline_get(cmdline, "n", v, sizeof(v));
	uint32_t n = (uint32_t)atou(v);
	int64_t t0 = hypercall(2, 1, 0);
	/* Four instructions an iteration: dec, jnz plus the loop's own two. */
	__asm__ volatile("1: dec %0\n\tjnz 1b" : "+r"(n));
	int64_t t1 = hypercall(2, 1, 0);
	puts_("loop ns ");
	putu((uint64_t)(t1 - t0));
	putc_('\n');
	pass();
}

static void test_exits(void)
{
	char v[24];
	cmdline_get(cmdline, "n", v, sizeof(v));
	uint32_t n = (uint32_t)atou(v);
	for (uint32_t i = 0; i < n; i++)
		outb(0x80 + 0x360, 0);
	debug_exit(0);
}

void guest_main(uint32_t magic, const struct mb_info *mb);
void guest_main(uint32_t magic, const struct mb_info *mb)
{
	char test[32];
	if (magic != 0x2BADB002)
		fail("EAX is not the multiboot magic");
	if (mb->flags & 4)
		cmdline = (const char *)(uintptr_t)mb->cmdline;
	cmdline_get(cmdline, "test", test, sizeof(test));
	if (!streq(test, "exits") && !streq(test, "loop")) {
		puts_("multiboot guest: ");
		puts_(cmdline);
		putc_('\n');
	}
	if (streq(test, "boot"))
		test_boot(mb);
	if (streq(test, "echo"))
		test_echo();
	if (streq(test, "rtc"))
		test_rtc();
	if (streq(test, "hypercall"))
		test_hypercall();
	if (streq(test, "acpi"))
		test_acpi();
	if (streq(test, "reset")) {
		outb(0x64, 0xfe);
		fail("still running after i8042 reset");
	}
	if (streq(test, "smp"))
		test_smp();
	if (streq(test, "timer"))
		test_timer();
	if (streq(test, "triple"))
		triple_fault();
	if (streq(test, "emufail")) {
		uint32_t lo, hi;
		__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		fail("xgetbv ran");
	}
	if (streq(test, "unclaimed"))
		test_unclaimed();
	if (streq(test, "spin")) {
		puts_("spinning\n");
		for (;;)
			__asm__ volatile("pause");
	}
	if (streq(test, "loop"))
		test_loop();
	if (streq(test, "exits"))
		test_exits();
	if (streq(test, "pass"))
		pass();
	fail("unknown test");
}
