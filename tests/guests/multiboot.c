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
 *   tscdl     CPUID.1:ECX TSC-deadline and x2APIC bits; with TSC-deadline, one deadline interrupt
 *   triple    triple fault;  emufail  xgetbv (KVM here cannot emulate it)
 *   unclaimed writes and reads an unclaimed port 100 times
 *   panic     reads pvpanic's events (port 0x505), then reports PANICKED as a crashing kernel
 *   flood     writes to the serial console forever
 *   spin      loops forever (host signal tests);  loop  "n=N" iterations, timed
 *   exits     "n=N" writes to an unclaimed port (bench/vm-exits)
 *   blk       virtio-blk over virtio-mmio ("mode=rw|ro|bad", "serial=S"): see test_blk
 *   rng       virtio-rng: 64 bytes of entropy
 *   net, vcon, vsock   virtio-net, virtio-console, virtio-vsock: see virtio-dev.h
 *   virtiofs  virtio-fs: reads a file from the share, then sends hostile FUSE requests and
 *             prints the errors (see virtiofs.h)
 *   pci       bus 0 through 0xCF8/0xCFC: lists the functions, sizes and moves BAR 0, walks the
 *             virtio capabilities
 *   pci-blk   virtio-blk over virtio-pci ("mode=rw|ro", "irq=msix|intx|level"): see
 *             test_pci_blk
 *   pci-rng   virtio-rng over virtio-pci ("irq=msix|intx")
 *   blkbench  virtio-blk read throughput for bench/vm-blk: see blkbench.h
 *   count     counts forever, printing "count N clock MS" every 100 ms of kvmclock time (the
 *             guest's clock: a pause must not show in it), or every 2^20 iterations with
 *             "clock -" when the hypervisor offers no kvmclock
 *   fwcfg     QEMU's fw_cfg ("cpus=N mem=MiB", "initrd=BYTES"): see fwcfg.h
 *   touch     writes to 32 MiB of RAM, says "touched", spins (huge-page backing)
 *   cpuid     prints the feature registers ("cpuid L.S R=HEX" lines) for --cpu-model tests
 *   acpifull  --acpi full: the FADT's FACS, PM1a and PM timer fields, the timer's rate against
 *             the RTC's seconds, then power-off through PM1a_CNT (SLP_TYP from \_S5, SLP_EN)
 *   hyperv    the Hyper-V leaves and MSRs under --cpu-features hv-*: see test_hyperv
 */
#include "acpi.h"
#include "guest.h"
#include "virtio.h"
#include "virtio-dev.h"
#include "virtio-pci.h"
#include "virtiofs.h"
#include "blkbench.h"
#include "fwcfg.h"

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

/*
 * CPUID.1:ECX[24] (TSC-deadline) and [21] (x2APIC) as "cpuid: tsc-deadline N x2apic N"; with
 * the bit, one interrupt from the LAPIC timer in TSC-deadline mode (SDM vol. 3A 11.5.4.1:
 * LVT timer mode 10b, the deadline written to IA32_TSC_DEADLINE, MSR 0x6e0).
 */
static uint64_t rdtsc_(void);
static void test_tscdl(void)
{
	uint32_t a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
	puts_("cpuid: tsc-deadline ");
	putu((c >> 24) & 1);
	puts_(" x2apic ");
	putu((c >> 21) & 1);
	putc_('\n');
	if (!(c & (1u << 24)))
		pass();
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	for (int i = 0x20; i < 0x100; i++)
		set_gate(i, isr_spurious);
	set_gate(0x30, isr_lapic);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	LAPIC(0xf0) = 0x1ff;
	LAPIC(0x320) = 0x30 | (2u << 17);
	uint64_t when = rdtsc_() + 1000000;
	__asm__ volatile("wrmsr" : : "c"(0x6e0), "a"((uint32_t)when), "d"((uint32_t)(when >> 32)));
	wait_ticks(&lapic_ticks, 1);
	puts_("tsc-deadline: interrupt ok\n");
	pass();
}

/*
 * Hyper-V enlightenments (--cpu-features hv-*): the leaves (TLFS 6.0, 2.4) as "hyperv: max
 * HEX vendor V interface HEX", "hyperv: privileges HEX recommendations HEX", "hyperv: kvm
 * leaves 0x40000100 N"; the hypercall page (3.13) stays off without a guest OS ID and turns
 * on with one; with AccessPartitionReferenceCounter the reference count (12.4) advances;
 * with AccessPartitionReferenceTsc the TSC page (12.7) is enabled and its sequence printed.
 */
static uint8_t hv_hypercall_page[4096] __attribute__((aligned(4096)));
static volatile uint32_t hv_tsc_page[1024] __attribute__((aligned(4096)));

static uint64_t rdmsr_(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static void wrmsr_(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

/*
 * With AccessSyntheticTimerRegs: SynIC on (SCONTROL 0x40000080, the message page SIMP
 * 0x40000083), SINT2 (0x40000092) to vector 0x30, synthetic timer 0 one-shot 10 ms of
 * reference time ahead (COUNT 0x400000b1 absolute, then CONFIG 0x400000b0: enable, SINTx 2;
 * SINTx 0 would disable it, TLFS 6.0 12.1); the interrupt, then the message in SINT2's slot
 * of the page: HVMSG_TIMER_EXPIRED (0x80000010, TLFS 11.10.1) as "hyperv: stimer message".
 */
static uint8_t hv_simp_page[4096] __attribute__((aligned(4096)));
static void hv_stimer(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	for (int i = 0x20; i < 0x100; i++)
		set_gate(i, isr_spurious);
	set_gate(0x30, isr_lapic);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	LAPIC(0xf0) = 0x1ff;
	wrmsr_(0x40000083, (uint32_t)(uintptr_t)hv_simp_page | 1);
	wrmsr_(0x40000092, 0x30);
	wrmsr_(0x40000080, 1);
	CHECK(rdmsr_(0x40000080) & 1, "SynIC not enabled");
	wrmsr_(0x400000b1, rdmsr_(0x40000020) + 100000);
	wrmsr_(0x400000b0, 1 | (2u << 16));
	wait_ticks(&lapic_ticks, 1);
	volatile uint32_t *msg = (volatile uint32_t *)(hv_simp_page + 2 * 256);
	puts_("hyperv: stimer message ");
	putx(msg[0]);
	putc_('\n');
	CHECK(msg[0] == 0x80000010, "no HVMSG_TIMER_EXPIRED in SINT2's slot");
}

static void test_hyperv(void)
{
	uint32_t a, b, c, d;
	char vendor[13];
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000), "c"(0));
	__builtin_memcpy(vendor, &b, 4);
	__builtin_memcpy(vendor + 4, &c, 4);
	__builtin_memcpy(vendor + 8, &d, 4);
	vendor[12] = 0;
	puts_("hyperv: max ");
	putx(a);
	puts_(" vendor ");
	puts_(vendor);
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000001), "c"(0));
	puts_(" interface ");
	putx(a);
	putc_('\n');
	CHECK(a == 0x31237648, "no Hv#1 interface");
	uint32_t priv;
	__asm__ volatile("cpuid" : "=a"(priv), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000003), "c"(0));
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000004), "c"(0));
	puts_("hyperv: privileges ");
	putx(priv);
	puts_(" recommendations ");
	putx(a);
	putc_('\n');
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000100), "c"(0));
	puts_("hyperv: kvm leaves 0x40000100 ");
	putu(b == 0x4b4d564b);
	putc_('\n');

	/* HV_X64_MSR_HYPERCALL (0x40000001) is ignored until HV_X64_MSR_GUEST_OS_ID is set. */
	uint64_t page = (uint32_t)(uintptr_t)hv_hypercall_page;
	wrmsr_(0x40000001, page | 1);
	CHECK(!(rdmsr_(0x40000001) & 1), "hypercall page enabled without a guest OS ID");
	wrmsr_(0x40000000, 0x8100000000000000ull); /* Linux's vendor id, TLFS 2.6 */
	CHECK(rdmsr_(0x40000000) == 0x8100000000000000ull, "guest OS ID not kept");
	wrmsr_(0x40000001, page | 1);
	uint64_t hc = rdmsr_(0x40000001);
	puts_("hyperv: hypercall enabled ");
	putu(hc & 1);
	putc_('\n');
	CHECK((hc & 1) && (hc & ~0xfffull) == page, "hypercall page not enabled");

	if (priv & (1u << 1)) {
		/* HV_X64_MSR_TIME_REF_COUNT: 100 ns units since the partition started. */
		uint64_t t0 = rdmsr_(0x40000020), t1 = t0;
		for (uint32_t i = 0; i < 100000000 && t1 == t0; i++)
			t1 = rdmsr_(0x40000020);
		puts_("hyperv: time ref count ");
		putu(t0);
		puts_(" then ");
		putu(t1);
		putc_('\n');
		CHECK(t1 > t0, "time ref count does not advance");
	}
	if (priv & (1u << 9)) {
		/* HV_X64_MSR_REFERENCE_TSC: the page's GPA and enable bit; sequence at offset 0. */
		uint64_t tp = (uint32_t)(uintptr_t)hv_tsc_page;
		hv_tsc_page[0] = 0xdeadbeef;
		wrmsr_(0x40000021, tp | 1);
		CHECK(rdmsr_(0x40000021) == (tp | 1), "reference TSC page MSR not kept");
		puts_("hyperv: tsc page sequence ");
		putx(hv_tsc_page[0]);
		putc_('\n');
	}
	if (priv & (1u << 3))
		hv_stimer();
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
	/*
	 * Up to 30 s by the host's clock (hypercall 2: CLOCK_MONOTONIC in ns), not a number of
	 * iterations: under nested TCG eight vCPUs on two host CPUs start slowly. The clock is
	 * read once per 2^20 spins: with a hypercall every spin, the emulating CI KVM once saw
	 * 1 of 7 APs counted after 30 s. One read of the count decides the line and the check.
	 */
	int64_t t0 = hypercall(2, 1, 0);
	for (uint32_t spin = 1; *count < a.ncpus - 1; spin++)
		if ((spin & 0xfffff) == 0 && hypercall(2, 1, 0) - t0 >= 30000000000LL)
			break;
	uint32_t seen = *count;
	puts_("smp: ");
	putu(seen + 1);
	putc_('/');
	putu(a.ncpus);
	puts_(" cpus checked in, mask ");
	putx(mask[0] | 1);
	putc_('\n');
	CHECK(seen == a.ncpus - 1, "not every AP checked in");
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

static struct vq vq;
struct blk_hdr {
	uint32_t type, reserved;
	uint64_t sector;
};
static struct blk_hdr hdr;
static struct vdesc ind[3] __attribute__((aligned(16)));
static uint8_t wbuf[4096], rbuf[4096] __attribute__((aligned(512)));
static uint8_t status;

/* One request: header, data (len bytes at buf, device-writable when in), status. */
static int64_t blk_req(uint32_t b, uint32_t type, uint64_t sector, void *buf, uint32_t len, int in,
		       int indirect)
{
	hdr = (struct blk_hdr){type, 0, sector};
	struct vdesc *d = indirect ? ind : vq.desc;
	d[0] = (struct vdesc){(uintptr_t)&hdr, sizeof(hdr), VD_NEXT, 1};
	d[1] = (struct vdesc){(uintptr_t)buf, len, (uint16_t)(VD_NEXT | (in ? VD_WRITE : 0)), 2};
	d[2] = (struct vdesc){(uintptr_t)&status, 1, VD_WRITE, 0};
	if (!len) {
		d[0].next = 2;
		d[1] = d[2];
		d[0].next = 1;
	}
	if (indirect)
		vq.desc[0] = (struct vdesc){(uintptr_t)ind, (len ? 3 : 2) * 16, VD_INDIRECT, 0};
	status = 0xee;
	int64_t n = vio_submit(b, &vq, 0);
	return n < 0 ? n : status;
}

/*
 * mode=rw: writes 8 sectors at sector 1 (byte i of sector s is (i * 7 + s) & 0xff), flushes,
 * reads them back through an indirect descriptor, zeroes sector 9 (write-zeroes), checks the
 * serial (get-id) and prints sector 0. mode=ro: reads sector 0, a write must fail with IOERR.
 * mode=bad: a descriptor pointing outside RAM must put the device into NEEDS_RESET.
 */
static void test_blk(void)
{
	char mode[8], serial[24];
	cmdline_get(cmdline, "mode", mode, sizeof(mode));
	cmdline_get(cmdline, "serial", serial, sizeof(serial));
	uint32_t b = vio_find(2, 0);
	CHECK(b, "no virtio-blk device");
	/* INDIRECT_DESC (28) and DISCARD/WRITE_ZEROES (13, 14), FLUSH (9). */
	const char *bad = vio_init(b, &vq, (1u << 28) | (1u << 9) | (1u << 13) | (1u << 14));
	CHECK(!bad, bad);
	uint32_t cap = *vreg(b, 0x100);
	puts_("blk: capacity ");
	putu(cap);
	puts_(" sectors\n");
	if (streq(mode, "bad")) {
		vq.desc[0] = (struct vdesc){0xfff00000u, 4096, 0, 0};
		CHECK(vio_submit(b, &vq, 0) == -1, "bad descriptor completed");
		CHECK(*vreg(b, 0x70) & VIO_NEED_RST, "no DEVICE_NEEDS_RESET");
		CHECK(*vreg(b, 0x60) & 2, "no configuration-change interrupt");
		puts_("blk: needs reset\n");
		*vreg(b, 0x70) = 0;
		CHECK(*vreg(b, 0x70) == 0, "reset did not clear NEEDS_RESET");
		bad = vio_init(b, &vq, 0);
		CHECK(!bad, bad);
		CHECK(blk_req(b, 0, 0, rbuf, 512, 1, 0) == 0, "read after reset failed");
		pass();
	}
	CHECK(blk_req(b, 0, 0, rbuf, 512, 1, 0) == 0, "read sector 0 failed");
	puts_("blk: sector 0: ");
	for (int i = 0; i < 16 && rbuf[i] >= ' '; i++)
		putc_((char)rbuf[i]);
	putc_('\n');
	if (streq(mode, "ro")) {
		CHECK(*vreg(b, 0x10) & (1u << 5), "read-only disk without VIRTIO_BLK_F_RO");
		CHECK(blk_req(b, 1, 1, wbuf, 512, 0, 0) == 1, "write to read-only disk not IOERR");
		puts_("blk: write refused\n");
		pass();
	}
	for (uint32_t s = 0; s < 8; s++)
		for (uint32_t i = 0; i < 512; i++)
			wbuf[s * 512 + i] = (uint8_t)(i * 7 + s + 1);
	CHECK(blk_req(b, 1, 1, wbuf, 4096, 0, 0) == 0, "write failed");
	CHECK(blk_req(b, 4, 0, 0, 0, 0, 0) == 0, "flush failed");
	CHECK(blk_req(b, 0, 1, rbuf, 4096, 1, 1) == 0, "indirect read failed");
	CHECK(!memcmp_(rbuf, wbuf, 4096), "read back differs");
	CHECK(blk_req(b, 0, cap, rbuf, 512, 1, 0) == 1, "read past the end not IOERR");
	struct {
		uint64_t sector;
		uint32_t num, flags;
	} wz = {9, 1, 0};
	CHECK(blk_req(b, 13, 0, &wz, sizeof(wz), 0, 0) == 0, "write-zeroes failed");
	char id[21] = {0};
	CHECK(blk_req(b, 8, 0, id, 20, 1, 0) == 0, "get-id failed");
	CHECK(streq(id, serial), "serial differs");
	CHECK(blk_req(b, 99, 0, rbuf, 512, 1, 0) == 2, "unknown request not UNSUPP");
	puts_("blk ok\n");
	pass();
}

static uint8_t entropy[64];

static void test_rng(void)
{
	uint32_t b = vio_find(4, 0);
	CHECK(b, "no virtio-rng device");
	const char *bad = vio_init(b, &vq, 0);
	CHECK(!bad, bad);
	vq.desc[0] = (struct vdesc){(uintptr_t)entropy, sizeof(entropy), VD_WRITE, 0};
	CHECK(vio_submit(b, &vq, 0) == sizeof(entropy), "short entropy");
	uint32_t nonzero = 0;
	for (unsigned int i = 0; i < sizeof(entropy); i++)
		nonzero += entropy[i] != 0;
	CHECK(nonzero > 32, "entropy mostly zero");
	puts_("rng ok\n");
	pass();
}

static void test_pci(void)
{
	uint32_t host = pci_read(0, 0), cls = pci_read(0, 8) >> 16;
	CHECK(host != 0xffffffffu && cls == 0x0600, "00:00.0 is not a host bridge");
	outl(0xcf8, 0x80000000u);
	CHECK(inl(0xcf8) == 0x80000000u, "CONFIG_ADDRESS does not read back");
	unsigned int nvirtio = 0;
	for (uint32_t dev = 0; dev < 32; dev++) {
		uint32_t id = pci_read(dev << 11, 0);
		if (id == 0xffffffffu)
			continue;
		puts_("pci: 00:");
		putx(dev);
		puts_(".0 ");
		putx(id);
		puts_(" class ");
		putx(pci_read(dev << 11, 8) >> 8);
		putc_('\n');
		nvirtio += (id & 0xffff) == PCI_VENDOR_VIRTIO;
	}
	CHECK(pci_read(1u << 16, 0) == 0xffffffffu, "bus 1 answers");
	struct vpci p;
	const char *bad = vpci_find(2, 0, &p);
	CHECK(!bad, bad);
	puts_("pci: blk BAR ");
	putx(p.bar);
	puts_(" size ");
	putx(p.bar_size);
	puts_(", ");
	putu(p.ncaps);
	puts_(" capabilities, notify multiplier ");
	putu(p.notify_mult);
	puts_(", line ");
	putu(p.line);
	putc_('\n');
	CHECK(p.device && p.msix_cap, "no device-specific structure or MSI-X");
	/* Decoding off: BAR 0 no longer answers (reads float high). */
	pci_write(p.bdf, 4, 0);
	CHECK(VP32(p.common + VC_DF) == 0xffffffffu, "BAR 0 answers with decoding off");
	pci_write(p.bdf, 4, 6);
	VP32(p.common + VC_DFSEL) = 1;
	CHECK(VP32(p.common + VC_DF) & 1, "VERSION_1 not offered");
	puts_("pci: ");
	putu(nvirtio);
	puts_(" virtio functions\n");
	pass();
}

/* MSI-X and INTx both end in isr_lapic (vector 0x30), which counts in lapic_ticks. */
static void pci_irq_setup(const struct vpci *p, int msix)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	for (int i = 0x20; i < 0x100; i++)
		set_gate(i, isr_spurious);
	set_gate(0x30, isr_lapic);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	LAPIC(0xf0) = 0x1ff;
	if (msix)
		return;
	/* IOAPIC pin = the interrupt line: vector 0x30, level triggered, to APIC 0. */
	volatile uint32_t *ioapic = (volatile uint32_t *)0xfec00000u;
	ioapic[0] = 0x10 + 2 * p->line + 1;
	ioapic[4] = 0;
	ioapic[0] = 0x10 + 2 * p->line;
	ioapic[4] = 0x30 | (1u << 15);
}

static struct vpci vp;

/* After a completed request: the interrupt came (MSI-X or INTx); INTx also sets ISR. */
static void pci_check_irq(int msix, uint32_t *n)
{
	if (!msix) {
		uint8_t isr = VP8(vp.isr);
		CHECK(isr & 1, "ISR queue bit not set");
		CHECK(VP8(vp.isr) == 0, "reading ISR did not clear it");
	}
	wait_ticks(&lapic_ticks, ++*n);
}

/* Whether vector 0x30 waits in the LAPIC's IRR, after up to spins polls. */
static int lapic_irr_0x30(uint32_t spins)
{
	for (uint32_t i = 0; i < spins; i++)
		if (LAPIC(0x210) & (1u << (0x30 - 0x20)))
			return 1;
	return 0;
}

/*
 * irq=level: INTx is a level-triggered line. Taking the interrupt and sending EOI without
 * reading ISR must leave it pending again (the device re-asserts the line while ISR is set);
 * once ISR is read, the next EOI must leave nothing behind.
 */
static void pci_check_level(uint32_t *n)
{
	wait_ticks(&lapic_ticks, ++*n); /* taken and EOI'd; ISR still set */
	CHECK(lapic_irr_0x30(200000), "INTx not asserted again after EOI while ISR was set");
	puts_("pci-blk: intx stays asserted while ISR is set\n");
	CHECK(VP8(vp.isr) & 1, "ISR queue bit not set");
	wait_ticks(&lapic_ticks, ++*n); /* the pending one; now ISR is clear */
	CHECK(!lapic_irr_0x30(20000), "INTx asserted again after ISR was read");
	puts_("pci-blk: intx drops once ISR is read\n");
}

static int64_t pblk_req(uint32_t type, uint64_t sector, void *buf, uint32_t len, int in)
{
	hdr = (struct blk_hdr){type, 0, sector};
	vq.desc[0] = (struct vdesc){(uintptr_t)&hdr, sizeof(hdr), VD_NEXT, 1};
	vq.desc[1] =
	    (struct vdesc){(uintptr_t)buf, len, (uint16_t)(VD_NEXT | (in ? VD_WRITE : 0)), 2};
	vq.desc[2] = (struct vdesc){(uintptr_t)&status, 1, VD_WRITE, 0};
	status = 0xee;
	int64_t n = vpci_submit(&vp, &vq, 0);
	return n < 0 ? n : status;
}

/*
 * mode=rw: writes 8 sectors at sector 1 (the pattern of test_blk), reads them back, prints
 * sector 0. mode=ro: reads sector 0, a write must fail with IOERR. irq=msix|intx: every
 * completion must also arrive as an interrupt of that kind. irq=level: INTx, and the first
 * completion checks that the line is level-triggered (pci_check_level).
 */
static void test_pci_blk(void)
{
	char mode[8], irq[8];
	cmdline_get(cmdline, "mode", mode, sizeof(mode));
	cmdline_get(cmdline, "irq", irq, sizeof(irq));
	int msix = streq(irq, "msix"), level = streq(irq, "level");
	uint32_t nirq = 0;
	const char *bad = vpci_find(2, 0, &vp);
	CHECK(!bad, bad);
	pci_irq_setup(&vp, msix);
	bad = vpci_init(&vp, &vq, 1u << 9, msix ? 0x30 : 0);
	CHECK(!bad, bad);
	uint32_t cap = VP32(vp.device);
	puts_("pci-blk: capacity ");
	putu(cap);
	puts_(" sectors, irq ");
	puts_(msix ? "msix\n" : "intx\n");
	CHECK(pblk_req(0, 0, rbuf, 512, 1) == 0, "read sector 0 failed");
	if (level)
		pci_check_level(&nirq);
	else
		pci_check_irq(msix, &nirq);
	puts_("pci-blk: sector 0: ");
	for (int i = 0; i < 16 && rbuf[i] >= ' '; i++)
		putc_((char)rbuf[i]);
	putc_('\n');
	if (streq(mode, "ro")) {
		CHECK(pblk_req(1, 1, wbuf, 512, 0) == 1, "write to read-only disk not IOERR");
		pci_check_irq(msix, &nirq);
		puts_("pci-blk: write refused\n");
		pass();
	}
	for (uint32_t s = 0; s < 8; s++)
		for (uint32_t i = 0; i < 512; i++)
			wbuf[s * 512 + i] = (uint8_t)(i * 7 + s + 1);
	CHECK(pblk_req(1, 1, wbuf, 4096, 0) == 0, "write failed");
	pci_check_irq(msix, &nirq);
	for (uint32_t i = 0; i < 4096; i++)
		rbuf[i] = 0;
	CHECK(pblk_req(0, 1, rbuf, 4096, 1) == 0, "read back failed");
	CHECK(!memcmp_(rbuf, wbuf, 4096), "read back differs");
	puts_("pci-blk: ");
	putu(nirq);
	puts_(" interrupts\npci-blk ok\n");
	pass();
}

static void test_pci_rng(void)
{
	char irq[8];
	cmdline_get(cmdline, "irq", irq, sizeof(irq));
	int msix = streq(irq, "msix");
	uint32_t nirq = 0;
	const char *bad = vpci_find(4, 0, &vp);
	CHECK(!bad, bad);
	CHECK(!vp.device, "virtio-rng has a device-specific structure");
	pci_irq_setup(&vp, msix);
	bad = vpci_init(&vp, &vq, 0, msix ? 0x30 : 0);
	CHECK(!bad, bad);
	vq.desc[0] = (struct vdesc){(uintptr_t)entropy, sizeof(entropy), VD_WRITE, 0};
	CHECK(vpci_submit(&vp, &vq, 0) == sizeof(entropy), "short entropy");
	pci_check_irq(msix, &nirq);
	uint32_t nonzero = 0;
	for (unsigned int i = 0; i < sizeof(entropy); i++)
		nonzero += entropy[i] != 0;
	CHECK(nonzero > 32, "entropy mostly zero");
	puts_("pci-rng ok\n");
	pass();
}

/* kvmclock's per-vCPU time info (Linux Documentation/virt/kvm/x86/msr.rst, MSR_KVM_SYSTEM_TIME). */
struct pvclock {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t mul;
	int8_t shift;
	uint8_t flags, pad[2];
} __attribute__((packed));
static volatile struct pvclock pvc __attribute__((aligned(64)));

static uint64_t rdtsc_(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/* Enables kvmclock when CPUID 0x40000001 offers it; false otherwise. */
static int kvmclock_init(void)
{
	uint32_t a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000), "c"(0));
	if (b != 0x4b4d564b) /* "KVMK" of "KVMKVMKVM" */
		return 0;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000001), "c"(0));
	uint32_t msr = (a & (1u << 3)) ? 0x4b564d01 : (a & 1) ? 0x12 : 0;
	if (!msr)
		return 0;
	uint32_t addr = (uint32_t)(uintptr_t)&pvc;
	__asm__ volatile("wrmsr" : : "c"(msr), "a"(addr | 1), "d"(0));
	return 1;
}

/* pvclock: system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32, read consistently. */
static uint64_t kvmclock_ns(void)
{
	uint32_t v;
	uint64_t t;
	do {
		v = pvc.version;
		__asm__ volatile("" ::: "memory");
		uint64_t delta = rdtsc_() - pvc.tsc_timestamp;
		int8_t sh = pvc.shift;
		delta = sh < 0 ? delta >> -sh : delta << sh;
		uint64_t m = pvc.mul;
		t = pvc.system_time + (((delta & 0xffffffffu) * m) >> 32) + (delta >> 32) * m;
		__asm__ volatile("" ::: "memory");
	} while ((v & 1) || v != pvc.version);
	return t;
}

static void __attribute__((noreturn)) test_count(void)
{
	int kc = kvmclock_init();
	uint64_t next = kc ? kvmclock_ns() : 0;
	for (uint64_t n = 0;; n++) {
		if (kc) {
			uint64_t now = kvmclock_ns();
			if (now < next)
				continue;
			next = now + 100000000ULL;
			puts_("count ");
			putu(n);
			puts_(" clock ");
			putu(udiv(now, 1000000, 0));
			putc_('\n');
		} else if ((n & 0xfffff) == 0) {
			puts_("count ");
			putu(n);
			puts_(" clock -\n");
		}
	}
}

/*
 * The CPUID feature registers, one "cpuid LEAF.SUB REG=HEX" line each: leaf 1 ECX/EDX, 7.0
 * EBX/ECX/EDX, 7.1 EAX, 0xd.0 EAX, 0xd.1 EAX, 0x80000001 ECX/EDX. A leaf above the maximum
 * basic or extended leaf prints as 0.
 */
static void cpuid_line(uint32_t leaf, uint32_t sub, const char *reg, int which)
{
	uint32_t r[4], max;
	__asm__ volatile("cpuid"
			 : "=a"(max), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
			 : "a"(leaf & 0x80000000u), "c"(0));
	__asm__ volatile("cpuid"
			 : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
			 : "a"(leaf), "c"(sub));
	puts_("cpuid ");
	putx(leaf);
	putc_('.');
	putu(sub);
	putc_(' ');
	puts_(reg);
	putc_('=');
	putx(leaf > max ? 0 : r[which]);
	putc_('\n');
}

static void test_cpuid(void)
{
	cpuid_line(1, 0, "ecx", 2);
	cpuid_line(1, 0, "edx", 3);
	cpuid_line(7, 0, "ebx", 1);
	cpuid_line(7, 0, "ecx", 2);
	cpuid_line(7, 0, "edx", 3);
	cpuid_line(7, 1, "eax", 0);
	cpuid_line(0xd, 0, "eax", 0);
	cpuid_line(0xd, 1, "eax", 0);
	cpuid_line(0x80000001, 0, "ecx", 2);
	cpuid_line(0x80000001, 0, "edx", 3);
	pass();
}

static inline void outw_(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint16_t inw_(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* The FADT through RSDP and XSDT, checksums checked; 0 when absent. */
static const uint8_t *find_fadt(void)
{
	for (uint32_t p = 0xe0000; p < 0x100000; p += 16) {
		if (memcmp_(phys(p), "RSD PTR ", 8) || !acpi_sum_ok(phys(p), 36))
			continue;
		const uint8_t *xsdt = phys(rd64(phys(p) + 24));
		for (uint32_t off = 36; off < rd32(xsdt + 4); off += 8) {
			const uint8_t *t = phys(rd64(xsdt + off));
			if (!memcmp_(t, "FACP", 4) && acpi_sum_ok(t, rd32(t + 4)))
				return t;
		}
	}
	return 0;
}

/* Waits for the RTC's seconds register to change (the start of a second). */
static void rtc_edge(void)
{
	uint8_t s = cmos(0);
	while (cmos(0) == s)
		;
}

/*
 * --acpi full (ACPI 6.4 §5.2.9, §5.2.10, §4.8.3): not hardware-reduced, a FACS, PM1a event
 * and control blocks, a 32-bit PM timer (block and X_ generic address agree); SCI_EN set; the
 * timer's ticks over one RTC second ("pmtimer: N ticks/s"); power-off through PM1a_CNT.
 */
static void test_acpifull(void)
{
	const uint8_t *f = find_fadt();
	CHECK(f, "acpi: no FADT");
	uint32_t flags = rd32(f + 112);
	CHECK(!(flags & (1u << 20)), "acpi: FADT is hardware-reduced");
	CHECK(flags & (1u << 8), "acpi: no TMR_VAL_EXT (32-bit timer)");
	uint64_t facs_a = rd64(f + 132);
	CHECK(facs_a && facs_a == rd32(f + 36), "acpi: FIRMWARE_CTRL and X_FIRMWARE_CTRL differ");
	const uint8_t *facs = phys(facs_a);
	CHECK(!(facs_a & 63) && !memcmp_(facs, "FACS", 4) && rd32(facs + 4) >= 64,
	      "acpi: FACS signature, length or alignment");
	uint32_t evt = rd32(f + 56), cnt = rd32(f + 64), tmr = rd32(f + 76);
	CHECK(evt && cnt && tmr, "acpi: a PM1a or PM timer block is 0");
	CHECK(f[88] == 4 && f[89] == 2 && f[91] == 4, "acpi: PM1_EVT/CNT/TMR lengths");
	CHECK(f[148] == 1 && rd64(f + 152) == evt && f[172] == 1 && rd64(f + 176) == cnt &&
		  f[208] == 1 && rd64(f + 212) == tmr && f[209] == 32,
	      "acpi: X_PM1a_EVT/X_PM1a_CNT/X_PM_TMR disagree with the 32-bit blocks");
	struct acpi_info a;
	puts_("fadt: pm1a_evt ");
	putx(evt);
	puts_(" pm1a_cnt ");
	putx(cnt);
	puts_(" pm_tmr ");
	putx(tmr);
	puts_(" sci ");
	putu(rd32(f + 46) & 0xffff);
	puts_(" facs ok\n");
	CHECK(inw_((uint16_t)cnt) & 1, "acpi: SCI_EN is clear (not in ACPI mode)");
	uint32_t t1 = inl((uint16_t)tmr);
	uint32_t t2 = inl((uint16_t)tmr);
	CHECK(t2 != t1 || inl((uint16_t)tmr) != t1, "pmtimer: does not advance");
	rtc_edge();
	uint32_t s0 = inl((uint16_t)tmr);
	rtc_edge();
	uint32_t s1 = inl((uint16_t)tmr);
	puts_("pmtimer: ");
	putu(s1 - s0);
	puts_(" ticks/s\n");
	/* \_S5 from the DSDT, as the OS takes it. */
	const uint8_t *dsdt = phys(rd64(f + 140));
	a.s5 = 0xff;
	for (uint32_t i = 36; i + 8 < rd32(dsdt + 4); i++)
		if (!memcmp_(dsdt + i, "_S5_", 4) && dsdt[i + 4] == 0x12 && dsdt[i + 7] == 0x0a)
			a.s5 = dsdt[i + 8];
	CHECK(a.s5 != 0xff, "acpi: no \\_S5 package in the DSDT");
	puts_("powering off through PM1a_CNT\n");
	outw_((uint16_t)cnt, (uint16_t)((a.s5 << 10) | (1u << 13) | 1u));
	fail("still running after PM1a_CNT power-off");
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
	if (streq(test, "panic")) {
		if ((inb(0x505) & 1) == 0)
			fail("pvpanic does not offer PANICKED");
		puts_("panic: reporting\n");
		outb(0x505, 1);
		fail("still running after pvpanic PANICKED");
	}
	if (streq(test, "tscdl"))
		test_tscdl();
	if (streq(test, "flood")) {
		for (;;)
			puts_("flood: guest output nobody reads, to fill the host's pipe\n");
	}
	if (streq(test, "spin")) {
		puts_("spinning\n");
		for (;;)
			__asm__ volatile("pause");
	}
	if (streq(test, "loop"))
		test_loop();
	if (streq(test, "exits"))
		test_exits();
	if (streq(test, "blk"))
		test_blk();
	if (streq(test, "rng"))
		test_rng();
	if (streq(test, "pci"))
		test_pci();
	if (streq(test, "pci-blk"))
		test_pci_blk();
	if (streq(test, "pci-rng"))
		test_pci_rng();
	if (streq(test, "blkbench"))
		test_blkbench(cmdline);
	if (streq(test, "net"))
		test_net(cmdline);
	if (streq(test, "vcon"))
		test_vcon();
	if (streq(test, "vsock"))
		test_vsock(cmdline);
	if (streq(test, "virtiofs"))
		test_virtiofs(cmdline);
	if (streq(test, "count"))
		test_count();
	if (streq(test, "fwcfg"))
		test_fwcfg(cmdline);
	if (streq(test, "touch"))
		test_touch();
	if (streq(test, "cpuid"))
		test_cpuid();
	if (streq(test, "acpifull"))
		test_acpifull();
	if (streq(test, "hyperv"))
		test_hyperv();
	if (streq(test, "pass"))
		pass();
	fail("unknown test");
}
