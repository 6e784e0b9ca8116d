/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The multiboot test kernel. One kernel, many tests, chosen by "test=NAME" on the command
 * line: each checks one VMM feature and ends the VM (PASS: debug-exit 0x2a, status 85).
 *   boot      multiboot_info: magic, flags, mem_upper ("mem=MiB"), cmdline, the initrd
 *             module ("initrd=BYTES", content "KAPSEL-INITRD..."), the memory map
 *   echo      serial input: echoes lines back until "quit"
 *   rtc       prints the CMOS date and time
 *   cmos      prints the CMOS RAM fields a BIOS reads (memory sizes, CPU count, boot order)
 *   hypercall version, console write, time; then power-off with code 7
 *   acpi      checks the tables' checksums and counts, then powers off through \_S5
 *   reset     i8042 reset (0xFE to port 0x64)
 *   smp       INIT/SIPI to all APs; every vCPU checks in
 *   smpcount, ipi, sipibad, xsmc, xlink, lockud   vCPUs together and LOCK: shared counters, IPIs,
 *             a SIPI to no one, cross-modified code, LOCK where it may not be (see smp.h)
 *   timer     PIT interrupts through the PIC, then LAPIC timer interrupts
 *   tscdl     CPUID.1:ECX TSC-deadline and x2APIC bits; with TSC-deadline, one deadline interrupt
 *   triple    triple fault;  emufail  xgetbv (KVM here cannot emulate it)
 *   unclaimed writes and reads an unclaimed port 100 times
 *   panic     reads pvpanic's events (port 0x505), then reports PANICKED as a crashing kernel
 *   flood     writes to the serial console forever
 *   spin      loops forever (host signal tests);  loop  "n=N" iterations, timed
 *   exits     "n=N" writes to an unclaimed port (bench/vm-exits)
 *   blk       virtio-blk over virtio-mmio ("mode=rw|ro|bad|code", "serial=S"): see test_blk
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
 *   dirty     count's lines while writing to "dirty_mib=N" MiB of RAM from 16 MiB on (default
 *             32, clipped to RAM), 16 pages per iteration, round and round: a guest whose
 *             working set keeps changing, for live migration's pre-copy rounds
 *   cpuid     prints the feature registers ("cpuid L.S R=HEX" lines) for --cpu-model tests
 *   s3        --acpi full: suspend to RAM through \_S3 with a real-mode waking vector that
 *             prints "s3 woke" and checks WAK_STS ("vector=N" sets another vector)
 *   acpifull  --acpi full: the FADT's FACS, PM1a and PM timer fields, the timer's rate against
 *             the RTC's seconds, then power-off through PM1a_CNT (SLP_TYP from \_S5, SLP_EN)
 *   hyperv    the Hyper-V leaves and MSRs under --cpu-features hv-*: see test_hyperv
 *   balloon   virtio-balloon: inflates, deflates, statistics, free page reporting: see balloon.h
 *   kbd       the i8042's PS/2 keyboard as firmware and Linux probe it, IRQ 1: see kbd.h
 *   memwalk   "mb=N passes=P stride=S": P passes over N MiB of RAM, one write every S bytes,
 *             then PASS (bench/vm-mem; passes=0 is its boot-cost baseline)
 *   ud        #UD reaches the guest's IDT: UD2, then twice MOVBE (not in the soft CPU's baseline)
 *   fpu       x87, MMX, SSE: results as bit patterns, #NM/#UD/#MF/#XM/#GP, FXSAVE's layout
 *             (fpu.h)
 *   smc       self-modifying code: a rewritten routine and an instruction rewriting the next
 *   linksmc   code rewritten under blocks linked to it, from outside and by the running block
 *   linkirq   PIT interrupts (IRET) arrive while the CPU spins in a loop of two linked blocks
 *   alu       the integer instructions over edge operands in 8, 16 and 32 bits: prints a hash
 *             of every result and every flag the SDM defines ("alu hash N"), for comparing
 *             accelerators (test_vm_soft.py)
 *   paging    2-level paging with CR0.WP: #PF error codes and CR2 for a missing page and a
 *             write to a read-only one, accessed and dirty bits, a 4 MiB PSE page;
 *             "triple=1": a triple fault once paging is on
 *   diff      runs the module as code and prints the registers, flags and a memory hash it
 *             left (test_vm_soft_diff.py's generated instruction sequences): see test_diff
 *   tlb       the TLB's flushes: INVLPG (4 KiB and 4 MiB pages), CR3 and CR4 writes, A/D bits set
 *             again after INVLPG: see test_tlb
 *   jcache    indirect branches to one linear address remapped (INVLPG, CR3), rewritten, made
 *             not present, reached through another CS base: see test_jcache
 *   segs      privilege checks on segment loads at CPL 0: a far JMP to a DPL 3 code segment
 *             and MOV SS of a DPL 3 data segment are #GP with the selector; MOV DS of it works;
 *             VERR/VERW of a data, a code and an out-of-limit selector
 *   chaos     "seed=S n=N": runs N pieces of random code (64 bytes each, HLT bytes made NOPs),
 *             every exception resuming at the next; for the accelerator's robustness, not
 *             the guest's: any end but a crash of kapsel is fine
 */
#include "acpi.h"
#include "guest.h"
#include "virtio.h"
#include "virtio-dev.h"
#include "virtio-pci.h"
#include "virtiofs.h"
#include "blkbench.h"
#include "fwcfg.h"
#include "balloon.h"
#include "kbd.h"
#include "mips.h"
#include "smp.h"

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

/* QEMU's CMOS layout (hw/i386/pc.c pc_cmos_init), as SeaBIOS reads it (src/hw/rtc.h). */
static void test_cmos(void)
{
	puts_("cmos: ext ");
	putu(cmos(0x30) | (uint64_t)cmos(0x31) << 8);
	puts_(" ext17 ");
	putu(cmos(0x17) | (uint64_t)cmos(0x18) << 8);
	puts_(" above16m ");
	putu(cmos(0x34) | (uint64_t)cmos(0x35) << 8);
	puts_(" above4g ");
	putu(cmos(0x5b) | (uint64_t)cmos(0x5c) << 8 | (uint64_t)cmos(0x5d) << 16);
	puts_(" cpus-1 ");
	putu(cmos(0x5f));
	puts_(" boot ");
	putu(cmos(0x3d));
	putc_(' ');
	putu(cmos(0x38));
	putc_('\n');
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

/*
 * test=pwrbtn: what an OS's ACPI GED and button drivers do with kapsel's power button: finds
 * \_SB.PWRB (PNP0C0C) and \_SB.GED0 (ACPI0013) in the DSDT and the GED's interrupt, prints
 * "pwrbtn: waiting on GSI N", polls the master 8259's IRR (an edge latches there whether the
 * line is masked or not) until the button's edge arrives, prints "pwrbtn: pressed" and powers
 * off through \_S5.
 */
static void test_pwrbtn(void)
{
	struct acpi_info a;
	const char *bad = acpi_scan(&a);
	CHECK(!bad, bad);
	static const uint8_t pwrb[] = {'P', 'W', 'R',  'B',  0x08, '_',	 'H',
				       'I', 'D', 0x0c, 0x41, 0xd0, 0x0c, 0x0c};
	static const uint8_t ged[] = {'G', 'E', 'D', '0', 0x08, '_', 'H', 'I', 'D', 0x0d,
				      'A', 'C', 'P', 'I', '0',	'0', '1', '3', 0};
	uint32_t len = rd32(a.dsdt + 4), gsi = 0xffffffffu;
	int have_pwrb = 0, in_ged = 0;
	for (uint32_t i = 36; i + sizeof(ged) < len; i++) {
		if (!memcmp_(a.dsdt + i, pwrb, sizeof(pwrb)))
			have_pwrb = 1;
		if (!memcmp_(a.dsdt + i, ged, sizeof(ged)))
			in_ged = 1;
		/* Extended Interrupt, one GSI: 89 06 00 flags 01 GSI(4). */
		if (in_ged && gsi == 0xffffffffu && a.dsdt[i] == 0x89 && a.dsdt[i + 1] == 6 &&
		    a.dsdt[i + 2] == 0 && a.dsdt[i + 4] == 1) {
			CHECK(a.dsdt[i + 3] == 0x03, "pwrbtn: the GED's interrupt is not an edge");
			gsi = rd32(a.dsdt + i + 5);
		}
	}
	CHECK(have_pwrb, "pwrbtn: no \\_SB.PWRB (PNP0C0C) in the DSDT");
	CHECK(gsi < 8, "pwrbtn: no GED0 interrupt on the master 8259");
	puts_("pwrbtn: waiting on GSI ");
	putu(gsi);
	putc_('\n');
	outb(0x20, 0x0a); /* OCW3: read the IRR */
	while (!(inb(0x20) & (1u << gsi)))
		;
	puts_("pwrbtn: pressed\n");
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

extern volatile uint32_t ud_count, ud_resume;
extern void isr_ud(void);
extern int smc_inline(void);

/* Runs insn; the #UD handler (entry32.S) resumes after it at label 1. */
#define EXPECT_UD(insn) __asm__ volatile("movl $1f, ud_resume\n\t" insn "\n1:" : : : "memory")

static void test_ud(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	set_gate(6, isr_ud);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	EXPECT_UD("ud2");
	CHECK(ud_count == 1, "ud2 did not raise #UD");
	/* CPUID.1:ECX.MOVBE[bit 22] clear: MOVBE is an instruction this CPU does not have. */
	uint32_t a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	if (!(c & (1u << 22))) {
		EXPECT_UD("movbe (%%esp), %%eax");
		EXPECT_UD("movbe (%%esp), %%eax");
		CHECK(ud_count == 3, "movbe without MOVBE did not raise #UD");
		puts_("ud: movbe twice\n");
	}
	/* Undefined x87 register forms (DF F8-FF, DB F8-FF, DD F0-FF): #UD, as on hardware. */
	uint32_t ud_x87 = ud_count;
	EXPECT_UD(".byte 0xdf, 0xfe");
	EXPECT_UD(".byte 0xdb, 0xf9");
	EXPECT_UD(".byte 0xdd, 0xf3");
	CHECK(ud_count == ud_x87 + 3, "an undefined x87 register form did not raise #UD");
	puts_("ud ok\n");
	pass();
}

#include "fpu.h"

/*
 * The alu test: each instruction runs from two flag states (all arithmetic flags clear, all
 * set) over edge operands; its result and the flags the SDM defines for it (mask) are hashed.
 * Undefined flags (AF after logic ops, OF after multi-bit shifts, SF/ZF/AF/PF after MUL...)
 * are masked out: CPUs differ there.
 */
static uint32_t alu_hash = 2166136261u, alu_count;

static void alu_mix(uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		alu_hash ^= (v >> (8 * i)) & 0xff;
		alu_hash *= 16777619u;
	}
}

static void alu_rec(uint32_t r, uint32_t f, uint32_t mask)
{
	alu_mix(r);
	alu_mix(f & mask);
	alu_count++;
}

#define FL_ALL	0x8d5u /* CF PF AF ZF SF OF */
#define FL_NOAF 0x8c5u
#define FL_CFOF 0x801u

/* r = r OP b, 32/16/8 bits; fin: the flags before. */
#define ALU_RR(name, i32, i16, i8)                                                                 \
	static void name(uint32_t a, uint32_t b, uint32_t fin, uint32_t mask)                      \
	{                                                                                          \
		uint32_t r = a, f;                                                                 \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i32                                   \
				 " %[b], %[r]\n\tpushfl\n\tpopl %[f]"                              \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : [b] "q"(b), [fin] "r"(fin)                                      \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
		r = a;                                                                             \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i16                                   \
				 " %w[b], %w[r]\n\tpushfl\n\tpopl %[f]"                            \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : [b] "q"(b), [fin] "r"(fin)                                      \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
		r = a;                                                                             \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i8                                    \
				 " %b[b], %b[r]\n\tpushfl\n\tpopl %[f]"                            \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : [b] "q"(b), [fin] "r"(fin)                                      \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
	}

/* r = OP r (one operand). */
#define ALU_R(name, i32, i16, i8)                                                                  \
	static void name(uint32_t a, uint32_t fin, uint32_t mask)                                  \
	{                                                                                          \
		uint32_t r = a, f;                                                                 \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i32 " %[r]\n\tpushfl\n\tpopl %[f]"    \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : [fin] "r"(fin)                                                  \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
		r = a;                                                                             \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i16 " %w[r]\n\tpushfl\n\tpopl %[f]"   \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : [fin] "r"(fin)                                                  \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
		r = a;                                                                             \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i8 " %b[r]\n\tpushfl\n\tpopl %[f]"    \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : [fin] "r"(fin)                                                  \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
	}

/* r = r SHIFT cl. */
#define ALU_SH(name, i32, i16, i8)                                                                 \
	static void name(uint32_t a, uint32_t c, uint32_t fin, uint32_t mask)                      \
	{                                                                                          \
		uint32_t r = a, f;                                                                 \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i32                                   \
				 " %%cl, %[r]\n\tpushfl\n\tpopl %[f]"                              \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : "c"(c), [fin] "r"(fin)                                          \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
		r = a;                                                                             \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i16                                   \
				 " %%cl, %w[r]\n\tpushfl\n\tpopl %[f]"                             \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : "c"(c), [fin] "r"(fin)                                          \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
		r = a;                                                                             \
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\t" i8                                    \
				 " %%cl, %b[r]\n\tpushfl\n\tpopl %[f]"                             \
				 : [r] "+q"(r), [f] "=&r"(f)                                       \
				 : "c"(c), [fin] "r"(fin)                                          \
				 : "cc");                                                          \
		alu_rec(r, f, mask);                                                               \
	}

ALU_RR(alu_add, "addl", "addw", "addb")
ALU_RR(alu_adc, "adcl", "adcw", "adcb")
ALU_RR(alu_sub, "subl", "subw", "subb")
ALU_RR(alu_sbb, "sbbl", "sbbw", "sbbb")
ALU_RR(alu_cmp, "cmpl", "cmpw", "cmpb")
ALU_RR(alu_and, "andl", "andw", "andb")
ALU_RR(alu_or, "orl", "orw", "orb")
ALU_RR(alu_xor, "xorl", "xorw", "xorb")
ALU_RR(alu_test, "testl", "testw", "testb")
ALU_RR(alu_xadd, "xaddl", "xaddw", "xaddb")
ALU_R(alu_inc, "incl", "incw", "incb")
ALU_R(alu_dec, "decl", "decw", "decb")
ALU_R(alu_neg, "negl", "negw", "negb")
ALU_R(alu_not, "notl", "notw", "notb")
ALU_SH(alu_shl, "shll", "shlw", "shlb")
ALU_SH(alu_shr, "shrl", "shrw", "shrb")
ALU_SH(alu_sar, "sarl", "sarw", "sarb")
ALU_SH(alu_rol, "roll", "rolw", "rolb")
ALU_SH(alu_ror, "rorl", "rorw", "rorb")
ALU_SH(alu_rcl, "rcll", "rclw", "rclb")
ALU_SH(alu_rcr, "rcrl", "rcrw", "rcrb")

/* Flags after a shift or rotate by c (< 8 here): none change at 0, OF only at 1. */
static uint32_t shift_mask(uint32_t c, int rotate)
{
	if (c == 0)
		return FL_ALL;
	uint32_t m = rotate ? FL_ALL : FL_NOAF;
	return c == 1 ? m : m & ~0x800u;
}

static void alu_wide(uint32_t a, uint32_t b, uint32_t fin)
{
	uint32_t lo, hi, f;
	/* MUL, IMUL (one operand, two, three): CF and OF only. */
	__asm__ volatile("pushl %[fin]\n\tpopfl\n\tmull %[b]\n\tpushfl\n\tpopl %[f]"
			 : "=a"(lo), "=d"(hi), [f] "=&r"(f)
			 : "a"(a), [b] "r"(b), [fin] "r"(fin)
			 : "cc");
	alu_rec(lo, f, FL_CFOF);
	alu_mix(hi);
	__asm__ volatile("pushl %[fin]\n\tpopfl\n\timull %[b]\n\tpushfl\n\tpopl %[f]"
			 : "=a"(lo), "=d"(hi), [f] "=&r"(f)
			 : "a"(a), [b] "r"(b), [fin] "r"(fin)
			 : "cc");
	alu_rec(lo, f, FL_CFOF);
	alu_mix(hi);
	lo = a;
	__asm__ volatile("pushl %[fin]\n\tpopfl\n\timulw %w[b], %w[r]\n\tpushfl\n\tpopl %[f]"
			 : [r] "+r"(lo), [f] "=&r"(f)
			 : [b] "r"(b), [fin] "r"(fin)
			 : "cc");
	alu_rec(lo, f, FL_CFOF);
	__asm__ volatile("pushl %[fin]\n\tpopfl\n\timull $-3, %[b], %[r]\n\tpushfl\n\tpopl %[f]"
			 : [r] "=r"(lo), [f] "=&r"(f)
			 : [b] "r"(b), [fin] "r"(fin)
			 : "cc");
	alu_rec(lo, f, FL_CFOF);
	/* DIV, IDIV: no flags defined; only quotients that fit. */
	if (b) {
		uint32_t q, r;
		__asm__ volatile("divl %[b]"
				 : "=a"(q), "=d"(r)
				 : "a"(a), "d"(0), [b] "r"(b)
				 : "cc");
		alu_mix(q);
		alu_mix(r);
		if (!(b == 0xffffffffu && a == 0x80000000u)) {
			__asm__ volatile("cltd\n\tidivl %[b]"
					 : "=a"(q), "=d"(r)
					 : "a"(a), [b] "r"(b)
					 : "cc");
			alu_mix(q);
			alu_mix(r);
		}
		/* BSF, BSR: ZF and the index, for a non-zero source. */
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\tbsfl %[b], %[r]\n\tpushfl\n\tpopl %[f]"
				 : [r] "=r"(lo), [f] "=&r"(f)
				 : [b] "r"(b), [fin] "r"(fin)
				 : "cc");
		alu_rec(lo, f, 0x40);
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\tbsrl %[b], %[r]\n\tpushfl\n\tpopl %[f]"
				 : [r] "=r"(lo), [f] "=&r"(f)
				 : [b] "r"(b), [fin] "r"(fin)
				 : "cc");
		alu_rec(lo, f, 0x40);
	}
	/* BT, BTS, BTR, BTC: CF (ZF unaffected). */
	lo = a;
	__asm__ volatile("pushl %[fin]\n\tpopfl\n\tbtsl %[b], %[r]\n\tpushfl\n\tpopl %[f]"
			 : [r] "+r"(lo), [f] "=&r"(f)
			 : [b] "r"(b & 31), [fin] "r"(fin)
			 : "cc");
	alu_rec(lo, f, 0x41);
	lo = a;
	__asm__ volatile("pushl %[fin]\n\tpopfl\n\tbtcl %[b], %[r]\n\tpushfl\n\tpopl %[f]"
			 : [r] "+r"(lo), [f] "=&r"(f)
			 : [b] "r"(b & 31), [fin] "r"(fin)
			 : "cc");
	alu_rec(lo, f, 0x41);
	/* SHLD, SHRD by 1 and 5; SETcc and CMOVcc after a CMP. */
	for (uint32_t c = 1; c < 8; c += 4) {
		lo = a;
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\tshldl %%cl, %[b], %[r]\n\tpushfl\n\t"
				 "popl %[f]"
				 : [r] "+r"(lo), [f] "=&r"(f)
				 : [b] "r"(b), "c"(c), [fin] "r"(fin)
				 : "cc");
		alu_rec(lo, f, shift_mask(c, 0));
		lo = a;
		__asm__ volatile("pushl %[fin]\n\tpopfl\n\tshrdl %%cl, %[b], %[r]\n\tpushfl\n\t"
				 "popl %[f]"
				 : [r] "+r"(lo), [f] "=&r"(f)
				 : [b] "r"(b), "c"(c), [fin] "r"(fin)
				 : "cc");
		alu_rec(lo, f, shift_mask(c, 0));
	}
	uint8_t cc[8];
	__asm__ volatile("cmpl %[b], %[a]\n\tseto %[c0]\n\tsetb %[c1]\n\tsete %[c2]\n\t"
			 "setbe %[c3]\n\tsets %[c4]\n\tsetp %[c5]\n\tsetl %[c6]\n\tsetle %[c7]"
			 : [c0] "=m"(cc[0]), [c1] "=m"(cc[1]), [c2] "=m"(cc[2]), [c3] "=m"(cc[3]),
			   [c4] "=m"(cc[4]), [c5] "=m"(cc[5]), [c6] "=m"(cc[6]), [c7] "=m"(cc[7])
			 : [a] "r"(a), [b] "r"(b)
			 : "cc");
	for (int i = 0; i < 8; i++)
		alu_mix(cc[i]);
	lo = 0;
	__asm__ volatile("cmpl %[b], %[a]\n\tcmovgl %[a], %[r]"
			 : [r] "+r"(lo)
			 : [a] "r"(a), [b] "r"(b)
			 : "cc");
	alu_mix(lo);
}

static void test_alu(void)
{
	static const uint32_t v[] = {0,		 1,	     2,		 0x7f,	     0x80,
				     0xff,	 0x7fff,     0x8000,	 0xffff,     0x7fffffff,
				     0x80000000, 0xfffffffe, 0xffffffff, 0x12345678, 0xdeadbeef};
	static const uint32_t counts[] = {0, 1, 3, 7};
	const unsigned int n = sizeof(v) / sizeof(v[0]);
	for (unsigned int k = 0; k < 2; k++) {
		uint32_t fin = k ? 0x8d7u : 0x2u;
		for (unsigned int i = 0; i < n; i++) {
			for (unsigned int j = 0; j < n; j++) {
				uint32_t a = v[i], b = v[j];
				alu_add(a, b, fin, FL_ALL);
				alu_adc(a, b, fin, FL_ALL);
				alu_sub(a, b, fin, FL_ALL);
				alu_sbb(a, b, fin, FL_ALL);
				alu_cmp(a, b, fin, FL_ALL);
				alu_and(a, b, fin, FL_NOAF);
				alu_or(a, b, fin, FL_NOAF);
				alu_xor(a, b, fin, FL_NOAF);
				alu_test(a, b, fin, FL_NOAF);
				alu_xadd(a, b, fin, FL_ALL);
				alu_wide(a, b, fin);
			}
			uint32_t a = v[i];
			alu_inc(a, fin, FL_ALL);
			alu_dec(a, fin, FL_ALL);
			alu_neg(a, fin, FL_ALL);
			alu_not(a, fin, FL_ALL);
			for (unsigned int c = 0; c < 4; c++) {
				uint32_t s = counts[c];
				alu_shl(a, s, fin, shift_mask(s, 0));
				alu_shr(a, s, fin, shift_mask(s, 0));
				alu_sar(a, s, fin, shift_mask(s, 0));
				alu_rol(a, s, fin, shift_mask(s, 1));
				alu_ror(a, s, fin, shift_mask(s, 1));
				alu_rcl(a, s, fin, shift_mask(s, 1));
				alu_rcr(a, s, fin, shift_mask(s, 1));
			}
		}
	}
	puts_("alu hash ");
	putu(alu_hash);
	puts_(" over ");
	putu(alu_count);
	putc_('\n');
	pass();
}

/* The chaos test: xorshift32 random code, run from chaos_enter (entry32.S). */
extern void chaos_enter(void);
uint32_t chaos_prepare(void);
static uint32_t chaos_rng = 1, chaos_iters, chaos_n;
/* The code sits in the middle of INT3s: a short jump out of it traps rather than wanders. */
static uint8_t chaos_area[8192] __attribute__((aligned(4096)));
#define chaos_code (chaos_area + 4096)

uint32_t chaos_prepare(void)
{
	if (chaos_iters++ >= chaos_n) {
		puts_("chaos done\n");
		pass();
	}
	for (unsigned int i = 0; i < sizeof(chaos_area); i++) /* volatile: no memset call */
		((volatile uint8_t *)chaos_area)[i] = 0xcc;
	for (unsigned int i = 0; i < 64; i++) {
		chaos_rng ^= chaos_rng << 13;
		chaos_rng ^= chaos_rng >> 17;
		chaos_rng ^= chaos_rng << 5;
		uint8_t b = (uint8_t)chaos_rng;
		chaos_code[i] = b == 0xf4 ? 0x90 : b; /* HLT would wait for an interrupt forever */
	}
	/* mov $chaos_enter, %eax; jmp *%eax */
	uint32_t back = (uint32_t)(uintptr_t)chaos_enter;
	chaos_code[64] = 0xb8;
	for (int i = 0; i < 4; i++)
		chaos_code[65 + i] = (uint8_t)(back >> (8 * i));
	chaos_code[69] = 0xff;
	chaos_code[70] = 0xe0;
	return (uint32_t)(uintptr_t)chaos_code;
}

static void test_chaos(void)
{
	char v[24];
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	if (cmdline_get(cmdline, "seed", v, sizeof(v)))
		chaos_rng = (uint32_t)atou(v) * 2654435761u | 1;
	chaos_n = cmdline_get(cmdline, "n", v, sizeof(v)) ? (uint32_t)atou(v) : 1000;
	for (int i = 0; i < 256; i++)
		set_gate(i, chaos_enter);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	chaos_enter();
}

extern volatile uint32_t pf_count, pf_code, pf_cr2, pf_resume, de_count;
extern void isr_pf(void), isr_de(void);

/* Runs insn; the #PF handler (entry32.S) resumes after it at label 1. */
#define EXPECT_PF(insn, ...)                                                                       \
	__asm__ volatile("movl $1f, pf_resume\n\t" insn "\n1:" : : __VA_ARGS__ : "memory")

static uint32_t pg_dir[1024] __attribute__((aligned(4096)));
static uint32_t pg_tab[1024] __attribute__((aligned(4096)));

static void test_paging(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	set_gate(14, isr_pf);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	/* 0-4 MiB through 4 KiB pages; 4-8 MiB one PSE page; 0x300000 absent, 0x301000 RO. */
	for (uint32_t i = 0; i < 1024; i++)
		pg_tab[i] = (i << 12) | 3;
	pg_tab[0x300] = 0;
	pg_tab[0x301] = (0x301u << 12) | 1;
	pg_dir[0] = (uint32_t)(uintptr_t)pg_tab | 3;
	pg_dir[1] = 0x400000u | 0x83; /* present, writable, 4 MiB */
	uint32_t cr0, cr4;
	__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | 0x10)); /* PSE */
	__asm__ volatile("mov %0, %%cr3" : : "r"(pg_dir) : "memory");
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80010000u) : "memory"); /* PG, WP */
	char t[8];
	if (cmdline_get(cmdline, "triple", t, sizeof(t)))
		triple_fault(); /* with paging on: the fault message reads RIP through it */
	uint32_t v = 0;
	EXPECT_PF("movl 0x300000, %%eax", "a"(v));
	CHECK(pf_count == 1 && pf_code == 0 && pf_cr2 == 0x300000, "#PF on a missing page");
	EXPECT_PF("movl $1, 0x301004");
	CHECK(pf_count == 2 && pf_code == 3 && pf_cr2 == 0x301004, "#PF on a read-only page (WP)");
	CHECK(*(volatile uint32_t *)0x301004 == 0, "the faulting write happened");
	/* Read-modify-writes (compiled inline with a write lookup before the load): the fault is
	 * the store's, nothing written, the registers as they were. */
	uint32_t a = 0x1234, cl = 3;
	EXPECT_PF("addl %%eax, 0x301008", "a"(a));
	CHECK(pf_count == 3 && pf_code == 3 && pf_cr2 == 0x301008, "#PF on ADD [m] read-only");
	EXPECT_PF("incl 0x30100c");
	CHECK(pf_count == 4 && pf_code == 3 && pf_cr2 == 0x30100c, "#PF on INC [m] read-only");
	EXPECT_PF("shll %%cl, 0x301010", "c"(cl));
	CHECK(pf_count == 5 && pf_code == 3 && pf_cr2 == 0x301010, "#PF on SHL [m], CL read-only");
	EXPECT_PF("notb 0x301ffe");
	CHECK(pf_count == 6 && pf_code == 3 && pf_cr2 == 0x301ffe, "#PF on NOT [m] read-only");
	CHECK(a == 0x1234 && cl == 3, "a faulting read-modify-write changed a register");
	for (uint32_t k = 0x301008; k < 0x301014; k += 4)
		CHECK(*(volatile uint32_t *)k == 0, "a faulting read-modify-write wrote");
	/* DIV (compiled inline with a check): #DE for a zero divisor and a quotient too big,
	 * EAX and EDX (AX) as they were. */
	set_gate(0, isr_de);
	uint32_t lo = 5, hi = 0, z = 0;
	__asm__ volatile("movl $1f, pf_resume\n\tdivl %2\n1:" : "+a"(lo), "+d"(hi) : "r"(z));
	CHECK(de_count == 1 && lo == 5 && hi == 0, "#DE on DIV by 0");
	lo = 9, hi = 7, z = 7;
	__asm__ volatile("movl $1f, pf_resume\n\tdivl %2\n1:" : "+a"(lo), "+d"(hi) : "m"(z));
	CHECK(de_count == 2 && lo == 9 && hi == 7, "#DE on DIV [m] overflowing");
	lo = 0x0500, z = 5;
	__asm__ volatile("movl $1f, pf_resume\n\tdivb %b1\n1:" : "+a"(lo) : "c"(z));
	CHECK(de_count == 3 && lo == 0x0500, "#DE on DIV r8 overflowing");
	lo = 0x0400;
	__asm__ volatile("divb %b1" : "+a"(lo) : "c"(z));
	CHECK(de_count == 3 && lo == 0x04cc, "DIV r8: 1024 / 5 is 204 (0xcc), 4 left (AH)");
	/* POP and RET from the missing page (the #PF frame goes into the page below it): ESP and
	 * EIP stay at the instruction (the frame's EIP, at 0x2ffff4), CR2 is the stack pointer. */
	for (int ret = 0; ret < 2; ret++) {
		static uint32_t saved, sp, eip; /* not on the stack: ESP moves */
		if (ret)
			__asm__ volatile(
			    "mov %%esp, %0\n\tmovl $1f, pf_resume\n\tmov $0x300000, %%esp\n"
			    "2:\tret\n1:\tmov %%esp, %1\n\tmov %0, %%esp\n\tmovl $2b, %2"
			    : "+m"(saved), "+m"(sp), "+m"(eip)
			    :
			    : "memory");
		else
			__asm__ volatile(
			    "mov %%esp, %0\n\tmovl $1f, pf_resume\n\tmov $0x300000, %%esp\n"
			    "2:\tpop %%eax\n1:\tmov %%esp, %1\n\tmov %0, %%esp\n\tmovl $2b, %2"
			    : "+m"(saved), "+m"(sp), "+m"(eip)
			    :
			    : "eax", "memory");
		CHECK(pf_count == 7u + (uint32_t)ret && pf_code == 0 && pf_cr2 == 0x300000,
		      "#PF on a POP or RET from a missing page");
		CHECK(sp == 0x300000, "a POP or RET that faulted moved ESP");
		CHECK(*(volatile uint32_t *)0x2ffff4 == eip,
		      "the #PF of a POP or RET is not at it");
	}
	/* The CPU writes the tables behind the compiler's back: read them as volatile. */
	volatile uint32_t *pt = pg_tab, *pd = pg_dir;
	CHECK((pt[0x302] & 0x60) == 0, "A/D set before any access");
	(void)*(volatile uint32_t *)0x302000;
	CHECK((pt[0x302] & 0x60) == 0x20, "a read sets A only");
	*(volatile uint32_t *)0x302000 = 5;
	CHECK((pt[0x302] & 0x60) == 0x60, "a write sets D");
	EXPECT_PF("adcl $7, 0x301ffe"); /* from the read-only page into a writable one */
	CHECK(pf_count == 9 && pf_code == 3 && pf_cr2 == 0x301ffe, "#PF on ADC [m] across pages");
	CHECK(*(volatile uint32_t *)0x302000 == 5, "a faulting page-crossing write wrote");
	/* A page read (A set, D clear) then read-modify-written: the write lookup misses, the
	 * slow path sets D. */
	volatile uint32_t *clean = (volatile uint32_t *)0x303000;
	uint32_t c0 = clean[0], c1 = clean[1];
	CHECK((pt[0x303] & 0x60) == 0x20, "a read sets A only");
	__asm__ volatile("addl $3, 0x303000\n\tnegl 0x303004\n\tsubl $1, 0x303004" ::: "memory");
	CHECK((pt[0x303] & 0x60) == 0x60, "a read-modify-write sets D");
	CHECK(clean[0] == c0 + 3 && clean[1] == ~c1, "read-modify-writes of a clean page");
	*(volatile uint32_t *)0x500010 = 0x1234; /* through the 4 MiB page */
	CHECK((pd[1] & 0x60) == 0x60, "the PSE page's A/D");
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4));
	CHECK(*(volatile uint32_t *)0x500010 == 0x1234, "the PSE page maps 4 MiB up");
	puts_("paging ok\n");
	pass();
}

/*
 * test=tlb: what a TLB must still get right (the soft CPU has one: docs/vm.md). 0-4 MiB through
 * 4 KiB pages; linear 0x310000 is the page being remapped, 0x312000 a global page. After each
 * change of a cached mapping (remap, write-protect, clear D) the guest does what the SDM asks
 * (INVLPG or a CR3 write) and checks that the change is seen: the new page's bytes, a #PF for
 * the now read-only page, D set again by the next write, a large page's INVLPG.
 */
static void test_tlb(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	set_gate(14, isr_pf);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	for (uint32_t i = 0; i < 1024; i++)
		pg_tab[i] = (i << 12) | 3;
	*(volatile uint32_t *)0x320000 = 0xaaaa;
	*(volatile uint32_t *)0x321000 = 0xbbbb;
	pg_tab[0x310] = 0x320000u | 3;
	pg_tab[0x312] = 0x321000u | 0x103; /* global */
	pg_dir[0] = (uint32_t)(uintptr_t)pg_tab | 3;
	pg_dir[1] = 0x400000u | 0x83; /* 4 MiB pages: 4-8 and 8-12 MiB */
	pg_dir[2] = 0x800000u | 0x83;
	uint32_t cr0, cr4;
	__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | 0x90)); /* PSE, PGE */
	__asm__ volatile("mov %0, %%cr3" : : "r"(pg_dir) : "memory");
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80010000u) : "memory"); /* PG, WP */
	volatile uint32_t *pt = pg_tab, *pd = pg_dir;
	volatile uint32_t *va = (volatile uint32_t *)0x310000, *vg = (volatile uint32_t *)0x312000;
	CHECK(*va == 0xaaaa && *vg == 0xbbbb, "the first mappings");
	/* Remap: INVLPG, then CR3, show the new page. */
	pt[0x310] = 0x321000u | 3;
	__asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
	CHECK(*va == 0xbbbb, "INVLPG: the remapped page still reads the old one");
	pt[0x310] = 0x320000u | 3;
	__asm__ volatile("mov %0, %%cr3" : : "r"(pg_dir) : "memory");
	CHECK(*va == 0xaaaa, "CR3 write: the remapped page still reads the old one");
	/* Write-protect a page whose writes were cached: after INVLPG a write is #PF. */
	*va = 0xaaab;
	pt[0x310] = 0x320000u | 1;
	__asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
	pf_count = 0;
	EXPECT_PF("movl $5, 0x310000");
	CHECK(pf_count == 1 && pf_code == 3 && pf_cr2 == 0x310000,
	      "a write to a page write-protected and INVLPG'd was not #PF");
	CHECK(*va == 0xaaab, "the faulting write happened");
	/* Clear D under a cached writable mapping: the next write after INVLPG sets it again. */
	pt[0x310] = 0x320000u | 3;
	__asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
	*va = 1;
	CHECK((pt[0x310] & 0x60) == 0x60, "a write did not set A and D");
	pt[0x310] &= ~0x60u;
	__asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
	(void)*va;
	CHECK((pt[0x310] & 0x60) == 0x20, "a read after INVLPG did not set A only");
	*va = 2;
	CHECK((pt[0x310] & 0x60) == 0x60, "the first write through a clean entry did not set D");
	/* The global page survives a CR3 write only as a cache: a CR4 write drops it too. */
	pt[0x312] = 0x320000u | 0x103;
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | 0x90) : "memory");
	CHECK(*vg == 2, "CR4 write: the global page still reads the old one");
	/* A large page's INVLPG at another 4 KiB of it drops the whole mapping. */
	*(volatile uint32_t *)0x500000 = 0x11;
	*(volatile uint32_t *)0x501000 = 0x22;
	(void)*(volatile uint32_t *)0x700000;
	pd[1] = 0x800000u | 0x83; /* 4-8 MiB now shows 8-12 */
	*(volatile uint32_t *)0x0900000 = 0x33;
	*(volatile uint32_t *)0x0901000 = 0x44;
	__asm__ volatile("invlpg (%0)" : : "r"(0x700000) : "memory");
	CHECK(*(volatile uint32_t *)0x500000 == 0x33 && *(volatile uint32_t *)0x501000 == 0x44,
	      "INVLPG of a 4 MiB page kept some of it");
	/* A not-present entry is never cached: present again, it works without INVLPG. */
	pt[0x311] = 0;
	pf_count = 0;
	EXPECT_PF("movl 0x311000, %%eax", "a"(0));
	CHECK(pf_count == 1 && pf_code == 0, "#PF on a missing page");
	pt[0x311] = (0x311u << 12) | 3;
	*(volatile uint32_t *)0x311000 = 7;
	CHECK(pf_count == 1, "a page made present faulted again");
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4));
	puts_("tlb ok\n");
	pass();
}

/*
 * test=jcache: indirect branches to code whose linear address stays while what it maps to does
 * not (the soft CPU's compiled code finds the blocks after returns and indirect branches in a
 * jump cache by linear address, docs/vm.md): linear 0x310000 is remapped by INVLPG and by a CR3
 * switch, rewritten through another mapping and through itself, made not present (a #PF on the
 * fetch), and reached at the same EIP through a CS with another base. Each time the routine
 * called through a register (CALL r/m, its RET back) must be the one mapped there now.
 */
static uint32_t jc_dir2[1024] __attribute__((aligned(4096)));
static uint32_t jc_tab2[1024] __attribute__((aligned(4096)));
static uint64_t jc_gdt[7] __attribute__((aligned(8)));
static uint8_t jc_stub[4] = {0xff, 0xd0, 0xcb}; /* call *%eax; lret */

/* "mov $v, %eax; ret" at physical (identity-mapped) address a. */
static void jc_code(uint32_t a, uint32_t v)
{
	volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)a;
	p[0] = 0xb8;
	for (int i = 0; i < 4; i++)
		p[1 + i] = (uint8_t)(v >> (8 * i));
	p[5] = 0xc3;
}

/* The sum of n calls of the routine at fn through a register. */
static uint32_t jc_calls(uint32_t fn, int n)
{
	uint32_t s = 0;
	for (int i = 0; i < n; i++) {
		uint32_t r;
		__asm__ volatile("call *%1" : "=a"(r) : "r"(fn) : "memory", "cc");
		s += r;
	}
	return s;
}

static void test_jcache(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt}, gdtr, old;
	set_gate(14, isr_pf);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	for (uint32_t i = 0; i < 1024; i++)
		pg_tab[i] = (i << 12) | 3;
	jc_code(0x330000, 1);
	jc_code(0x331000, 2);
	jc_code(0x332000, 3);
	pg_tab[0x310] = 0x330000u | 3;
	pg_tab[0x311] = 0x332000u | 3;
	pg_dir[0] = (uint32_t)(uintptr_t)pg_tab | 3;
	for (uint32_t i = 0; i < 1024; i++)
		jc_tab2[i] = pg_tab[i];
	jc_tab2[0x310] = 0x332000u | 3;
	jc_dir2[0] = (uint32_t)(uintptr_t)jc_tab2 | 3;
	uint32_t cr0;
	__asm__ volatile("mov %0, %%cr3" : : "r"(pg_dir) : "memory");
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80000000u) : "memory");
	volatile uint32_t *pt = pg_tab;
	CHECK(jc_calls(0x310000, 20) == 20, "jcache: the first mapping");
	pt[0x310] = 0x331000u | 3;
	__asm__ volatile("invlpg (%0)" : : "r"(0x310000) : "memory");
	CHECK(jc_calls(0x310000, 20) == 40, "jcache: INVLPG: the remapped page ran the old code");
	__asm__ volatile("mov %0, %%cr3" : : "r"(jc_dir2) : "memory");
	CHECK(jc_calls(0x310000, 20) == 60,
	      "jcache: CR3 switch: the other tables' page did not run");
	__asm__ volatile("mov %0, %%cr3" : : "r"(pg_dir) : "memory");
	CHECK(jc_calls(0x310000, 20) == 40,
	      "jcache: CR3 switch back: the first tables' page did not run");
	jc_code(0x331000, 7); /* through the identity mapping */
	CHECK(jc_calls(0x310000, 20) == 140, "jcache: code rewritten elsewhere ran as it was");
	*(volatile uint8_t *)0x310001 = 9; /* through the linear address itself */
	CHECK(jc_calls(0x310000, 20) == 180, "jcache: code rewritten in place ran as it was");
	pt[0x310] = 0;
	__asm__ volatile("invlpg (%0)" : : "r"(0x310000) : "memory");
	pf_count = 0;
	EXPECT_PF("jmp *%0", "r"(0x310000));
	CHECK(pf_count == 1 && pf_code == 0 && pf_cr2 == 0x310000,
	      "jcache: a jump to a page made not present was not #PF");
	pt[0x310] = 0x330000u | 3;
	CHECK(jc_calls(0x310000, 20) == 20, "jcache: the page mapped again");
	/* CS with base 0x1000 (selector 0x30): the same EIP 0x310000 is linear 0x311000. */
	__asm__ volatile("sgdt %0" : "=m"(old));
	const uint64_t *g = (const uint64_t *)(uintptr_t)old.base;
	for (int i = 0; i < 6; i++)
		jc_gdt[i] = g[i];
	jc_gdt[6] = 0x00cf9a001000ffffULL;
	gdtr.base = (uint32_t)(uintptr_t)jc_gdt;
	gdtr.limit = sizeof(jc_gdt) - 1;
	__asm__ volatile("lgdt %0" : : "m"(gdtr));
	uint32_t cs, sum = 0;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	for (int i = 0; i < 20; i++) {
		struct {
			uint32_t off;
			uint16_t sel;
		} __attribute__((packed)) far = {(uint32_t)(uintptr_t)jc_stub, (uint16_t)cs};
		if (i & 1) {
			far.off -= 0x1000;
			far.sel = 0x30;
		}
		uint32_t r;
		__asm__ volatile("lcall *%1" : "=a"(r) : "m"(far), "a"(0x310000) : "memory", "cc");
		sum += r;
	}
	CHECK(sum == 10 * 1 + 10 * 3, "jcache: a CS base change ran the other base's code");
	__asm__ volatile("lgdt %0" : : "m"(old));
	__asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
	puts_("jcache ok\n");
	pass();
}

/*
 * test=diff: runs its multiboot module (--initrd) as 32-bit code, for
 * tests/integration/test_vm_soft_diff.py, which generates it and compares accelerators. EBP
 * points at a 4 KiB scratch area filled with a pattern; the code may change any register but
 * EBP and ESP, stores EAX, EBX, ECX, EDX, ESI, EDI and EFLAGS at scratch + 0xf00 and returns.
 * Prints them and an FNV-1a hash of the scratch area below 0xf00.
 */
static uint32_t diff_scratch[1024] __attribute__((aligned(4096)));

static void test_diff(const struct mb_info *mb)
{
	CHECK((mb->flags & 8) && mb->mods_count == 1, "test=diff needs its code as the module");
	const struct mb_module *mod = (const void *)(uintptr_t)mb->mods_addr;
	for (uint32_t i = 0; i < 1024; i++)
		diff_scratch[i] = i * 0x9e3779b9u;
	uint32_t a = (uint32_t)(uintptr_t)diff_scratch, d = mod->mod_start;
	__asm__ volatile("push %%ebp\n\tmov %%eax, %%ebp\n\tcall *%%edx\n\tpop %%ebp\n\tcld"
			 : "+a"(a), "+d"(d)
			 :
			 : "ebx", "ecx", "esi", "edi", "memory", "cc");
	static const char *const names[7] = {"eax", "ebx", "ecx", "edx", "esi", "edi", "flags"};
	for (int i = 0; i < 7; i++) {
		puts_("diff ");
		puts_(names[i]);
		putc_(' ');
		putx(diff_scratch[0xf00 / 4 + i]);
		putc_('\n');
	}
	uint32_t h = 2166136261u;
	const uint8_t *p = (const uint8_t *)diff_scratch;
	for (uint32_t i = 0; i < 0xf00; i++)
		h = (h ^ p[i]) * 16777619u;
	puts_("diff hash ");
	putx(h);
	putc_('\n');
	pass();
}

static uint8_t smc_pages[8192] __attribute__((aligned(4096)));

static uint64_t segs_gdt[11] __attribute__((aligned(8)));

static void test_segs(void)
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt}, gdtr;
	set_gate(13, isr_pf); /* records the error code like a #PF; CR2 is not looked at */
	set_gate(6, isr_ud);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	__asm__ volatile("sgdt %0" : "=m"(gdtr));
	const uint64_t *old = (const uint64_t *)(uintptr_t)gdtr.base;
	for (int i = 0; i < 6; i++)
		segs_gdt[i] = old[i];
	segs_gdt[6] = 0x00cffa000000ffffULL;  /* code, DPL 3 */
	segs_gdt[7] = 0x00cff2000000ffffULL;  /* data, DPL 3 */
	segs_gdt[8] = 0x0000890000000067ULL;  /* 32-bit TSS, available */
	segs_gdt[9] = 0x00008e0000100000ULL;  /* an interrupt gate: LAR and LSL refuse it */
	segs_gdt[10] = 0x0000920000001234ULL; /* data, DPL 0, byte-granular limit 0x1234 */
	gdtr.base = (uint32_t)(uintptr_t)segs_gdt;
	gdtr.limit = sizeof(segs_gdt) - 1;
	__asm__ volatile("lgdt %0" : : "m"(gdtr));
	pf_count = 0;
	EXPECT_PF("ljmp $0x30, $1f");
	CHECK(pf_count == 1 && pf_code == 0x30, "far JMP to DPL 3 code at CPL 0 was not #GP");
	EXPECT_PF("ljmp $0x33, $1f");
	CHECK(pf_count == 2 && pf_code == 0x30, "far JMP with RPL 3 was not #GP");
	EXPECT_PF("mov %0, %%ss", "r"(0x38));
	CHECK(pf_count == 3 && pf_code == 0x38, "MOV SS of a DPL 3 segment was not #GP");
	uint32_t ds;
	__asm__ volatile("mov %1, %%ds\n\tmov %%ds, %0\n\tmov %2, %%ds"
			 : "=r"(ds)
			 : "r"(0x3b), "r"(0x18));
	CHECK(ds == 0x3b && pf_count == 3, "MOV DS of a DPL 3 data segment failed");
	/* VERW/VERR: ZF for a writable (readable) segment; a code segment is not writable, a
	 * selector past the GDT's limit is neither. */
	uint8_t w_data, w_code, r_code, w_out;
	__asm__ volatile("verw %4; setz %0; verw %5; setz %1; verr %5; setz %2; verw %6; setz %3"
			 : "=&q"(w_data), "=&q"(w_code), "=&q"(r_code), "=&q"(w_out)
			 : "r"((uint16_t)0x3b), "r"((uint16_t)0x30), "r"((uint16_t)0x58)
			 : "cc");
	CHECK(w_data == 1 && w_code == 0 && r_code == 1 && w_out == 0, "VERR/VERW");
	CHECK(pf_count == 3, "VERR/VERW faulted");
	/*
	 * LAR, LSL: "segs lar SEL RIGHTS ZF RIGHTS16 LIMIT ZF" for selectors that work and for
	 * ones that must leave ZF clear and the register alone (a gate, RPL above DPL, null, past
	 * the limit); test_vm_soft.py works out each from the descriptors above.
	 */
	static const uint16_t lsel[] = {0x3b, 0x30, 0x40, 0x48, 0x50, 0x53, 0x00, 0x58};
	for (unsigned int i = 0; i < sizeof(lsel) / sizeof(lsel[0]); i++) {
		uint32_t ar = 0xdeadbeef, lim = 0xdeadbeef, ar16 = 0xdeadbeef;
		uint8_t zl, zs;
		__asm__ volatile("larl %3, %0; setz %1; larw %3, %w2"
				 : "+r"(ar), "=q"(zl), "+r"(ar16)
				 : "m"(lsel[i])
				 : "cc");
		__asm__ volatile("lsll %2, %0; setz %1"
				 : "+r"(lim), "=q"(zs)
				 : "m"(lsel[i])
				 : "cc");
		puts_("segs lar ");
		putx(lsel[i]);
		putc_(' ');
		putx(ar);
		putc_(' ');
		putx(zl);
		putc_(' ');
		putx(ar16);
		putc_(' ');
		putx(lim);
		putc_(' ');
		putx(zs);
		putc_('\n');
	}
	CHECK(pf_count == 3, "LAR/LSL faulted");
	/* LFS, LGS, LES, LDS, LSS: a far pointer, offset then selector. */
	struct {
		uint32_t off;
		uint16_t sel;
	} __attribute__((packed)) fp = {0x12345678, 0x3b}, fp2 = {0x9abcdef0, 0x18}, sp_fp;
	uint32_t r1, r2, r3, r4, s1, s2;
	__asm__ volatile("lfs %4, %0; mov %%fs, %2; lgs %5, %1; mov %%gs, %3"
			 : "=&r"(r1), "=&r"(r2), "=&r"(s1), "=&r"(s2)
			 : "m"(fp), "m"(fp2));
	CHECK(r1 == 0x12345678 && s1 == 0x3b && r2 == 0x9abcdef0 && s2 == 0x18, "LFS/LGS");
	__asm__ volatile("les %2, %0; lds %2, %1" : "=&r"(r3), "=&r"(r4) : "m"(fp2) : "memory");
	CHECK(r3 == 0x9abcdef0 && r4 == 0x9abcdef0, "LES/LDS");
	uint32_t esp0, esp1;
	__asm__ volatile("mov %%esp, %0" : "=r"(esp0));
	sp_fp.off = esp0;
	sp_fp.sel = 0x18;
	__asm__ volatile("lss %1, %%esp; mov %%esp, %0" : "=r"(esp1) : "m"(sp_fp) : "memory");
	CHECK(esp1 == esp0, "LSS");
	/* LSS of the null selector and of a DPL 3 stack at CPL 0: #GP (0, then the selector),
	 * ESP untouched; a register operand: #UD. */
	sp_fp.sel = 0;
	EXPECT_PF("lss %0, %%esp", "m"(sp_fp));
	CHECK(pf_count == 4 && pf_code == 0, "LSS of the null selector was not #GP(0)");
	sp_fp.sel = 0x3b;
	EXPECT_PF("lss %0, %%esp", "m"(sp_fp));
	CHECK(pf_count == 5 && pf_code == 0x38, "LSS of a DPL 3 segment was not #GP");
	__asm__ volatile("mov %%esp, %0" : "=r"(esp1));
	CHECK(esp1 == esp0, "a faulting LSS moved ESP");
	uint32_t ud0 = ud_count;
	EXPECT_UD(".byte 0x0f, 0xb4, 0xc0"); /* LFS %eax, %eax */
	CHECK(ud_count == ud0 + 1, "LFS with a register operand was not #UD");
	puts_("segs ok\n");
	pass();
}

/* Code in data: mov $1, %eax; ret. */
static uint8_t smc_buf[8] = {0xb8, 1, 0, 0, 0, 0xc3};

static void test_smc(void)
{
	int (*fn)(void) = (int (*)(void))(uintptr_t)smc_buf;
	CHECK(fn() == 1, "smc: first run");
	smc_buf[1] = 7;
	CHECK(fn() == 7, "smc: the rewritten routine ran its old code");
	CHECK(smc_inline() == 2, "smc: an instruction rewritten just before it ran as it was");
	CHECK(smc_inline() == 2, "smc: second run");
	/*
	 * An instruction across a page boundary (its immediate on the next page), then a
	 * store to only that next page: the CPU must run the new immediate.
	 */
	volatile uint8_t *x = smc_pages + 4096 - 3;
	static const uint8_t mov_ret[] = {0xb8, 0x11, 0x22, 0x33, 0x44, 0xc3};
	for (unsigned int i = 0; i < sizeof(mov_ret); i++)
		x[i] = mov_ret[i];
	int (*cross)(void) = (int (*)(void))(uintptr_t)x;
	CHECK(cross() == 0x44332211, "smc: an instruction across pages");
	x[4] = 0x55; /* on the second page */
	CHECK(cross() == 0x55332211, "smc: a store to the second page of an instruction");
	puts_("smc ok\n");
	pass();
}

extern uint32_t xlink_fn(void), xlink_self(void);
extern void xlink_spin(volatile uint32_t *n, uint32_t target);
extern void isr_linktick(void);
extern uint8_t xlink_imm[];

static void test_linksmc(void)
{
	for (int i = 0; i < 40; i++)
		CHECK(xlink_fn() == 16, "linksmc: the linked loop's sum");
	*(volatile uint32_t *)xlink_imm = 3; /* drops block 2 alone: its page2 */
	for (int i = 0; i < 40; i++)
		CHECK(xlink_fn() == 48, "linksmc: a link went to the rewritten block's old code");
	CHECK(xlink_self() == 135, "linksmc: the self-rewriting loop's first sum");
	for (int i = 0; i < 40; i++)
		CHECK(xlink_self() == 136, "linksmc: the self-rewriting loop ran stale code");
	puts_("linksmc ok\n");
	pass();
}

/* IRQ 0 (vector 0x20) to isr, the PIC's other vectors spurious, the IDT loaded; the LAPIC on
 * with LINT0 ExtINT unmasked (the PIC's output reaches the CPU), only IRQ 0 unmasked at the
 * PIC, the PIT's channel 0 at 100 Hz (mode 2). The caller sets IF. */
static void pit_irq0_setup(void (*isr)(void))
{
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
	set_gate(0x20, isr);
	for (int i = 0x21; i < 0x30; i++)
		set_gate(i, isr_spurious);
	__asm__ volatile("lidt %0" : : "m"(idtr));
	LAPIC(0xf0) = 0x1ff;
	LAPIC(0x350) = 0x700;
	pic_init(0xfe);
	outb(0x43, 0x34);
	outb(0x40, 11932 & 0xff);
	outb(0x40, 11932 >> 8);
}

static void test_linkirq(void)
{
	pit_irq0_setup(isr_linktick);
	__asm__ volatile("sti");
	xlink_spin(&pit_ticks, 5); /* no I/O in the loop: only the interrupt ends it */
	__asm__ volatile("cli");
	outb(0x21, 0xff);
	puts_("linkirq: 5 ticks in a linked loop\n");
	pass();
}

static void test_timer(void)
{
	set_gate(0x30, isr_lapic);
	set_gate(0xff, isr_spurious);
	pit_irq0_setup(isr_pit);
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
/* A page of its own: mode=code's guest stores to it must be only the ones it means. */
static uint8_t codebuf[4096] __attribute__((aligned(4096)));

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
 * mode=code: runs code in a page, has the device read new code over it, runs it again.
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
	if (streq(mode, "code")) {
		/*
		 * The device overwrites code the CPU has already run: the next call must run the
		 * new bytes (a translating CPU must drop what it translated from that page).
		 * "mov eax, N; ret", N = 1 from the CPU's own stores, then 2 read from sector 1.
		 */
		static const uint8_t one[] = {0xb8, 1, 0, 0, 0, 0xc3},
				     two[] = {0xb8, 2, 0, 0, 0, 0xc3};
		typedef uint32_t (*code_fn)(void);
		for (unsigned int i = 0; i < sizeof(one); i++) {
			codebuf[i] = one[i];
			wbuf[i] = two[i];
		}
		CHECK(((code_fn)(uintptr_t)codebuf)() == 1, "code written by the CPU did not run");
		CHECK(blk_req(b, 1, 1, wbuf, 512, 0, 0) == 0, "write failed");
		CHECK(blk_req(b, 0, 1, codebuf, 512, 1, 0) == 0, "read sector 1 failed");
		CHECK(((code_fn)(uintptr_t)codebuf)() == 2,
		      "stale code ran after the device wrote it");
		puts_("blk: code read from the disk runs\n");
		pass();
	}
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

/*
 * The loops below (test=rngloop, test=blkloop) run until the VM is stopped, so that a snapshot,
 * a restore or a migration lands in the middle of their I/O. pci=1 drives the device over
 * virtio-pci with MSI-X (every completion must also interrupt), otherwise over virtio-mmio.
 * A request waits for its completion without a time limit: a migration holds the device's
 * requests until the destination serves them.
 */
static int loop_pci;
static uint32_t loop_base, loop_irqs;

static void loop_init(uint32_t type, uint32_t want_lo)
{
	char pci[4];
	cmdline_get(cmdline, "pci", pci, sizeof(pci));
	loop_pci = streq(pci, "1");
	const char *bad;
	if (loop_pci) {
		bad = vpci_find(type, 0, &vp);
		CHECK(!bad, bad);
		pci_irq_setup(&vp, 1);
		bad = vpci_init(&vp, &vq, want_lo, 0x30);
	} else {
		loop_base = vio_find(type, 0);
		CHECK(loop_base, "no virtio device of that type");
		bad = vio_init(loop_base, &vq, want_lo);
	}
	CHECK(!bad, bad);
}

static int loop_broken(void)
{
	return loop_pci ? VP8(vp.common + VC_STATUS) & VIO_NEED_RST
			: *vreg(loop_base, 0x70) & VIO_NEED_RST;
}

/* Offers the chain at descriptor 0 and waits for it; its used length, -1 on NEEDS_RESET. */
static int64_t loop_submit(void)
{
	volatile struct vq *v = &vq;
	v->avail.ring[v->avail.idx % VQ_N] = 0;
	__asm__ volatile("" ::: "memory");
	v->avail.idx = (uint16_t)(v->avail.idx + 1);
	__asm__ volatile("mfence" ::: "memory");
	if (loop_pci)
		VP16(vp.notify + VP16(vp.common + VC_QNOFF) * vp.notify_mult) = 0;
	else
		*vreg(loop_base, 0x50) = 0;
	while (v->used.idx == vq.last_used)
		if (loop_broken())
			return -1;
	uint32_t len = v->used.ring[vq.last_used % VQ_N].len;
	vq.last_used++;
	if (loop_pci)
		wait_ticks(&lapic_ticks, ++loop_irqs); /* the completion's MSI-X interrupt */
	else
		*vreg(loop_base, 0x64) = *vreg(loop_base, 0x60);
	return len;
}

static void loop_print(const char *what, uint64_t n)
{
	puts_(what);
	putu(n);
	putc_('\n');
}

/*
 * test=rngloop: entropy forever, "rngloop N" every 16 reads. The buffer has a page of its own
 * that only the device writes (the guest never clears it), so a Diff snapshot that missed the
 * device's writes would show in its memory file.
 */
static uint8_t rngloop_buf[4096] __attribute__((aligned(4096)));

static void __attribute__((noreturn)) test_rngloop(void)
{
	loop_init(4, 0);
	for (uint64_t n = 1;; n++) {
		vq.desc[0] =
		    (struct vdesc){(uintptr_t)rngloop_buf, sizeof(rngloop_buf), VD_WRITE, 0};
		CHECK(loop_submit() == sizeof(rngloop_buf), "rngloop: short entropy");
		uint32_t nonzero = 0;
		for (unsigned int i = 0; i < 64; i++)
			nonzero += rngloop_buf[i] != 0;
		CHECK(nonzero > 32, "rngloop: entropy mostly zero");
		if (n % 16 == 0)
			loop_print("rngloop ", n);
	}
}

static void blkloop_fill(uint8_t *p, uint64_t n)
{
	for (uint32_t i = 0; i < 512; i++)
		p[i] = (uint8_t)(i * 7 + n);
	for (uint32_t i = 0; i < 8; i++)
		p[i] = (uint8_t)(n >> (8 * i));
}

static int64_t blkloop_req(uint32_t type, uint64_t sector, void *buf, int in)
{
	hdr = (struct blk_hdr){type, 0, sector};
	vq.desc[0] = (struct vdesc){(uintptr_t)&hdr, sizeof(hdr), VD_NEXT, 1};
	vq.desc[1] =
	    (struct vdesc){(uintptr_t)buf, 512, (uint16_t)(VD_NEXT | (in ? VD_WRITE : 0)), 2};
	vq.desc[2] = (struct vdesc){(uintptr_t)&status, 1, VD_WRITE, 0};
	status = 0xee;
	int64_t r = loop_submit();
	return r < 0 ? r : status;
}

/*
 * test=blkloop: round n writes sector 1 + n % 32 with round n's pattern (its first 8 bytes
 * are n) and reads it back, then reads the sector of round n - 1 and checks it still holds
 * that round's pattern: across a snapshot or a migration, what the guest wrote before must be
 * on the disk after. "blkloop N" every 8 rounds.
 */
static void __attribute__((noreturn)) test_blkloop(void)
{
	loop_init(2, 0);
	for (uint64_t n = 1;; n++) {
		blkloop_fill(wbuf, n);
		CHECK(blkloop_req(1, 1 + n % 32, wbuf, 0) == 0, "blkloop: write failed");
		for (uint32_t i = 0; i < 512; i++)
			rbuf[i] = 0;
		CHECK(blkloop_req(0, 1 + n % 32, rbuf, 1) == 0, "blkloop: read failed");
		CHECK(!memcmp_(rbuf, wbuf, 512), "blkloop: read back differs");
		if (n > 1) {
			blkloop_fill(wbuf, n - 1);
			CHECK(blkloop_req(0, 1 + (n - 1) % 32, rbuf, 1) == 0,
			      "blkloop: read failed");
			CHECK(!memcmp_(rbuf, wbuf, 512),
			      "blkloop: the previous round's sector differs");
		}
		if (n % 8 == 0)
			loop_print("blkloop ", n);
	}
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

/* The soft CPU (hypervisor leaf "KapselSoftCP") has no kvmclock; its TSC counts at 1 GHz. */
static int soft_tsc(void)
{
	uint32_t a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000), "c"(0));
	return b == 0x7370614b && c == 0x6f536c65; /* "Kaps", "elSo" */
}

static void __attribute__((noreturn)) test_count(void)
{
	int kc = kvmclock_init(), st = !kc && soft_tsc();
	uint64_t next = kc ? kvmclock_ns() : st ? rdtsc_() : 0;
	for (uint64_t n = 0;; n++) {
		if (kc || st) {
			uint64_t now = kc ? kvmclock_ns() : rdtsc_();
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
 * test=dirty: test=count's output while rewriting a window of RAM as fast as it can, each
 * write a new value, so every pre-copy round of a migration finds pages dirty again.
 */
static void __attribute__((noreturn)) test_dirty(const struct mb_info *mb)
{
	char v[32];
	cmdline_get(cmdline, "dirty_mib", v, sizeof(v));
	uint32_t mib = v[0] ? (uint32_t)atou(v) : 32;
	uint32_t top = (mb->mem_upper + 1024) / 1024; /* MiB of RAM below the hole */
	if (mib == 0 || top <= 17)
		fail("dirty: no RAM above 16 MiB");
	if (16 + mib > top - 1)
		mib = top - 17;
	uint32_t pages = mib * 256, next_page = 0;
	int kc = kvmclock_init();
	uint64_t next = kc ? kvmclock_ns() : 0;
	for (uint64_t n = 0;; n++) {
		for (int k = 0; k < 16; k++) {
			*(volatile uint32_t *)(uintptr_t)((16u << 20) + next_page * 4096u) =
			    (uint32_t)n;
			if (++next_page == pages)
				next_page = 0;
		}
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
		} else if ((n & 0xffff) == 0) {
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

/*
 * The OS's waking vector for test=s3 (16-bit real mode, at S3_VECTOR = CS 0x1000, IP 0): prints
 * "s3 woke" on COM1, then checks PM1a_STS's WAK_STS (port 0x60c, bit 15): PASS when set,
 * FAIL when not, through the debug-exit port.
 */
#define S3_VECTOR 0x10000u
static const uint8_t s3_stub[] = {
    0x8c, 0xc8,					      /*  0 mov ax, cs */
    0x8e, 0xd8,					      /*  2 mov ds, ax */
    0xbe, 0x33, 0x00,				      /*  4 mov si, msg (51) */
    0xba, 0xf8, 0x03,				      /*  7 mov dx, 0x3f8 */
    0xac,					      /* 10 lodsb */
    0x84, 0xc0,					      /* 11 test al, al */
    0x74, 0x03,					      /* 13 jz 18 */
    0xee,					      /* 15 out dx, al */
    0xeb, 0xf8,					      /* 16 jmp 10 */
    0xba, 0x0c, 0x06,				      /* 18 mov dx, 0x60c */
    0xed,					      /* 21 in ax, dx */
    0xa9, 0x00, 0x80,				      /* 22 test ax, 0x8000 */
    0x74, 0x0c,					      /* 25 jz 39 */
    0xba, 0xf4, 0x00,				      /* 27 mov dx, DEBUG_EXIT */
    0x66, 0xb8, 0x2a, 0x00, 0x00, 0x00,		      /* 30 mov eax, PASS_CODE */
    0x66, 0xef,					      /* 36 out dx, eax */
    0xf4,					      /* 38 hlt */
    0xba, 0xf4, 0x00,				      /* 39 mov dx, DEBUG_EXIT */
    0x66, 0xb8, 0x01, 0x00, 0x00, 0x00,		      /* 42 mov eax, FAIL_CODE */
    0x66, 0xef,					      /* 48 out dx, eax */
    0xf4,					      /* 50 hlt */
    's',  '3',	' ',  'w',  'o',  'k',	'e', '\n', 0, /* 51 msg */
};

/* ACPI S3 (--acpi full): the waking vector in the FACS, \_S3's SLP_TYP into PM1a_CNT. */
static void test_s3(void)
{
	const uint8_t *f = find_fadt();
	CHECK(f, "acpi: no FADT");
	uint8_t *facs = (uint8_t *)(uintptr_t)rd64(f + 132);
	CHECK(facs && !memcmp_(facs, "FACS", 4), "s3: no FACS (needs --acpi full)");
	const uint8_t *dsdt = phys(rd64(f + 140));
	uint32_t s3 = 0xff;
	for (uint32_t i = 36; i + 8 < rd32(dsdt + 4); i++)
		if (!memcmp_(dsdt + i, "_S3_", 4) && dsdt[i + 4] == 0x12 && dsdt[i + 7] == 0x0a)
			s3 = dsdt[i + 8];
	CHECK(s3 != 0xff, "s3: no \\_S3 package in the DSDT");
	uint8_t *stub = (uint8_t *)(uintptr_t)S3_VECTOR;
	for (size_t i = 0; i < sizeof(s3_stub); i++)
		stub[i] = s3_stub[i];
	char v[16];
	uint32_t vector =
	    cmdline_get(cmdline, "vector", v, sizeof(v)) ? (uint32_t)atou(v) : S3_VECTOR;
	__builtin_memcpy(facs + 12, &vector, 4); /* firmware_waking_vector */
	uint32_t cnt = rd32(f + 64);
	puts_("s3 suspending\n");
	outw_((uint16_t)cnt, (uint16_t)((s3 << 10) | (1u << 13) | 1u));
	fail("s3: still running after PM1a_CNT's SLP_EN");
}

/*
 * memwalk: "mb=N passes=P stride=S" (defaults 64, 1, 4096) walks N MiB of RAM from 16 MiB
 * on, P times, adding 1 to the 32-bit word every S bytes; then checks each word holds P and
 * PASSes. stride=4096 touches one word per 4 KiB page: every access misses the TLB, so the
 * cost is the two-dimensional page walk and what backs guest RAM on the host (4 KiB pages or
 * 2 MiB ones) decides it. stride=64 touches every cache line: bandwidth-bound. The guest runs
 * unpaged, so its own page tables play no part. passes=0 only boots: bench/vm-mem subtracts
 * that run's time.
 */
static void __attribute__((noreturn)) test_memwalk(const struct mb_info *mb)
{
	char v[16];
	uint32_t mib = cmdline_get(cmdline, "mb", v, sizeof(v)) ? (uint32_t)atou(v) : 64;
	uint32_t passes = cmdline_get(cmdline, "passes", v, sizeof(v)) ? (uint32_t)atou(v) : 1;
	uint32_t stride = cmdline_get(cmdline, "stride", v, sizeof(v)) ? (uint32_t)atou(v) : 4096;
	uint32_t top = (mb->mem_upper + 1024) / 1024; /* MiB of RAM below the hole */
	CHECK(stride >= 4 && stride <= (1u << 20) && (stride & (stride - 1)) == 0,
	      "memwalk: stride is not a power of two from 4 to 1 MiB");
	CHECK(mib >= 1 && mib <= 3072 && 16 + mib <= top,
	      "memwalk: mb=N does not fit above 16 MiB");
	volatile uint32_t *base = (volatile uint32_t *)(uintptr_t)(16u << 20);
	uint32_t n = (mib << 20) / stride, step = stride / 4;
	for (uint32_t p = 0; p < passes; p++)
		for (uint32_t i = 0; i < n; i++)
			base[i * step] = p ? base[i * step] + 1 : 1;
	for (uint32_t i = 0; passes && i < n; i++)
		CHECK(base[i * step] == passes, "memwalk: a word does not hold the pass count");
	puts_("memwalk: ");
	putu(mib);
	puts_(" MiB, ");
	putu(passes);
	puts_(" passes, stride ");
	putu(stride);
	putc_('\n');
	pass();
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
	if (streq(test, "cmos"))
		test_cmos();
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
	if (streq(test, "smpcount"))
		test_smpcount(cmdline);
	if (streq(test, "ipi"))
		test_ipi(cmdline);
	if (streq(test, "sipibad"))
		test_sipibad();
	if (streq(test, "xsmc"))
		test_xsmc(cmdline);
	if (streq(test, "xlink"))
		test_xlink(cmdline);
	if (streq(test, "lockud"))
		test_lockud();
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
	if (streq(test, "rngloop"))
		test_rngloop();
	if (streq(test, "blkloop"))
		test_blkloop();
	if (streq(test, "vsockreset"))
		test_vsockreset();
	if (streq(test, "vsockecho"))
		test_vsockecho(cmdline);
	if (streq(test, "pwrbtn"))
		test_pwrbtn();
	if (streq(test, "dirty"))
		test_dirty(mb);
	if (streq(test, "fwcfg"))
		test_fwcfg(cmdline);
	if (streq(test, "touch"))
		test_touch();
	if (streq(test, "cpuid"))
		test_cpuid();
	if (streq(test, "s3"))
		test_s3();
	if (streq(test, "acpifull"))
		test_acpifull();
	if (streq(test, "hyperv"))
		test_hyperv();
	if (streq(test, "balloon"))
		test_balloon(cmdline);
	if (streq(test, "kbd"))
		test_kbd();
	if (streq(test, "memwalk"))
		test_memwalk(mb);
	if (streq(test, "ud"))
		test_ud();
	if (streq(test, "fpu"))
		test_fpu();
	if (streq(test, "smc"))
		test_smc();
	if (streq(test, "linksmc"))
		test_linksmc();
	if (streq(test, "linkirq"))
		test_linkirq();
	if (streq(test, "diff"))
		test_diff(mb);
	if (streq(test, "tlb"))
		test_tlb();
	if (streq(test, "jcache"))
		test_jcache();
	if (streq(test, "mips"))
		test_mips(cmdline);
	if (streq(test, "alu"))
		test_alu();
	if (streq(test, "chaos"))
		test_chaos();
	if (streq(test, "paging"))
		test_paging();
	if (streq(test, "segs"))
		test_segs();
	if (streq(test, "pass"))
		pass();
	fail("unknown test");
}
