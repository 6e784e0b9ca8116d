/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vCPU state at entry. The BSP starts directly in the protected or long mode its boot protocol
 * asks for (no firmware, no real mode): flat segments from a boot GDT (__BOOT_CS 0x10,
 * __BOOT_DS 0x18 as boot.rst requires for the 64-bit entry), and for long mode identity page
 * tables covering 4 GiB. APs stay in KVM's reset state until the guest sends INIT/SIPI.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/error.h"
#include "vmm/vmm.h"
#include "vmm/x86/x86.h"

#define CR0_PE	 (1ULL << 0)
#define CR0_ET	 (1ULL << 4)
#define CR0_PG	 (1ULL << 31)
#define CR4_PAE	 (1ULL << 5)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)

#define GDT_CODE 0x10
#define GDT_DATA 0x18
#define GDT_TSS	 0x20

/* A GDT descriptor from the fields of a kvm_segment (Intel SDM vol. 3 §3.4.5). */
static uint64_t gdt_entry(const struct kvm_segment *s)
{
	uint64_t limit = s->g ? s->limit >> 12 : s->limit;
	return (limit & 0xffffULL) | ((s->base & 0xffffffULL) << 16) | ((uint64_t)s->type << 40) |
	       ((uint64_t)s->s << 44) | ((uint64_t)s->dpl << 45) | ((uint64_t)s->present << 47) |
	       (((limit >> 16) & 0xfULL) << 48) | ((uint64_t)s->avl << 52) |
	       ((uint64_t)s->l << 53) | ((uint64_t)s->db << 54) | ((uint64_t)s->g << 55) |
	       (((s->base >> 24) & 0xffULL) << 56);
}

static void boot_segments(bool long_mode, struct kvm_segment *code, struct kvm_segment *data,
			  struct kvm_segment *tss)
{
	*code = (struct kvm_segment){
	    .base = 0,
	    .limit = 0xffffffff,
	    .selector = GDT_CODE,
	    .type = 0xb, /* exec/read, accessed */
	    .present = 1,
	    .dpl = 0,
	    .db = long_mode ? 0 : 1,
	    .s = 1,
	    .l = long_mode ? 1 : 0,
	    .g = 1,
	};
	*data = (struct kvm_segment){
	    .base = 0,
	    .limit = 0xffffffff,
	    .selector = GDT_DATA,
	    .type = 0x3, /* read/write, accessed */
	    .present = 1,
	    .dpl = 0,
	    .db = 1,
	    .s = 1,
	    .l = 0,
	    .g = 1,
	};
	/* VM entry wants a usable busy TSS in TR even though nothing switches tasks. */
	*tss = (struct kvm_segment){
	    .base = 0,
	    .limit = 0x67,
	    .selector = GDT_TSS,
	    .type = 0xb, /* 32/64-bit busy TSS */
	    .present = 1,
	    .dpl = 0,
	    .db = 0,
	    .s = 0,
	    .l = 0,
	    .g = 0,
	};
}

int kap_x86_write_boot_tables(struct kap_vm *vm, bool long_mode, uint64_t base,
			      struct kapsel_error **err)
{
	struct kvm_segment code, data, tss;
	boot_segments(long_mode, &code, &data, &tss);
	uint64_t gdt[6] = {0, 0, gdt_entry(&code), gdt_entry(&data), gdt_entry(&tss), 0};
	if (kap_mem_write(&vm->mem, base + KAP_BOOT_GDT, gdt, sizeof(gdt)) < 0)
		return kap_error_plain(err, ENOMEM, "no room for the boot GDT");
	if (!long_mode)
		return 0;
	/* PML4[0] -> PDPT; PDPT[0..3] -> four page directories of 2 MiB pages: 0..4 GiB. */
	uint64_t *pml4 = kap_mem_ptr(&vm->mem, base + KAP_BOOT_PML4, 4096);
	uint64_t *pdpt = kap_mem_ptr(&vm->mem, base + KAP_BOOT_PDPT, 4096);
	uint64_t *pd = kap_mem_ptr(&vm->mem, base + KAP_BOOT_PD, 4 * 4096);
	if (!pml4 || !pdpt || !pd)
		return kap_error_plain(err, ENOMEM, "no room for the boot page tables");
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = (base + KAP_BOOT_PDPT) | 0x3; /* present, writable */
	for (uint64_t i = 0; i < 4; i++)
		pdpt[i] = (base + KAP_BOOT_PD + i * 4096) | 0x3;
	for (uint64_t i = 0; i < 4 * 512; i++)
		pd[i] = (i << 21) | 0x83; /* present, writable, 2 MiB page */
	return 0;
}

/* The MSRs a kernel expects a BIOS to have set (the values Firecracker and kvmtool use). */
static const struct {
	uint32_t index;
	uint64_t value;
} boot_msrs[] = {
    {0x174, 0},		       /* IA32_SYSENTER_CS */
    {0x175, 0},		       /* IA32_SYSENTER_ESP */
    {0x176, 0},		       /* IA32_SYSENTER_EIP */
    {0xc0000081, 0},	       /* STAR */
    {0xc0000082, 0},	       /* LSTAR */
    {0xc0000083, 0},	       /* CSTAR */
    {0xc0000084, 0},	       /* SFMASK */
    {0xc0000102, 0},	       /* KERNEL_GS_BASE */
    {0x10, 0},		       /* TSC */
    {0x1a0, 1},		       /* IA32_MISC_ENABLE: fast strings */
    {0x2ff, (1ULL << 11) | 6}, /* MTRRdefType: MTRRs on, default write-back */
};

static int set_msrs(int fd, struct kapsel_error **err)
{
	enum { N = sizeof(boot_msrs) / sizeof(boot_msrs[0]) };
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[N];
	} m;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = N;
	for (int i = 0; i < N; i++) {
		m.e[i].index = boot_msrs[i].index;
		m.e[i].data = boot_msrs[i].value;
	}
	int r = ioctl(fd, KVM_SET_MSRS, &m);
	if (r < 0)
		return kap_error(err, errno, "KVM_SET_MSRS");
	if (r < N)
		return kap_error_plain(err, EINVAL, "KVM_SET_MSRS: MSR 0x%x refused",
				       boot_msrs[r].index);
	return 0;
}

/* LINT0 = ExtINT (the PIC's output, for guests that run without the IOAPIC), LINT1 = NMI. */
static int set_lapic_lint(int fd, struct kapsel_error **err)
{
	struct kvm_lapic_state l;
	if (ioctl(fd, KVM_GET_LAPIC, &l) < 0)
		return kap_error(err, errno, "KVM_GET_LAPIC");
	uint32_t lvt0, lvt1;
	memcpy(&lvt0, l.regs + 0x350, 4);
	memcpy(&lvt1, l.regs + 0x360, 4);
	lvt0 = (lvt0 & ~0x700u) | (7u << 8); /* delivery mode ExtINT */
	lvt1 = (lvt1 & ~0x700u) | (4u << 8); /* delivery mode NMI */
	memcpy(l.regs + 0x350, &lvt0, 4);
	memcpy(l.regs + 0x360, &lvt1, 4);
	if (ioctl(fd, KVM_SET_LAPIC, &l) < 0)
		return kap_error(err, errno, "KVM_SET_LAPIC");
	return 0;
}

void kap_x86_boot_state(const struct kap_boot_entry *entry, struct kvm_regs *regs,
			struct kvm_sregs *sregs)
{
	struct kvm_segment code, data, tss;
	boot_segments(entry->long_mode, &code, &data, &tss);
	sregs->cs = code;
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
	sregs->tr = tss;
	sregs->ldt = (struct kvm_segment){.unusable = 1, .type = 2};
	sregs->gdt.base = entry->gdt;
	sregs->gdt.limit = 6 * 8 - 1;
	sregs->idt.base = 0;
	sregs->idt.limit = 0;
	/* Caches on (the reset value has CD/NW set), protection on. */
	sregs->cr0 = CR0_PE | CR0_ET;
	sregs->cr4 = 0;
	sregs->efer = 0;
	if (entry->long_mode) {
		sregs->cr3 = entry->cr3;
		sregs->cr4 |= CR4_PAE;
		sregs->cr0 |= CR0_PG;
		sregs->efer |= EFER_LME | EFER_LMA;
	}
	*regs = (struct kvm_regs){
	    .rflags = 0x2, /* bit 1 is reserved-one; interrupts off */
	    .rip = entry->rip,
	    .rsp = entry->rsp,
	    .rax = entry->rax,
	    .rbx = entry->rbx,
	    .rsi = entry->rsi,
	};
}

int kap_x86_vcpu_init(int fd, const struct kap_boot_entry *entry, bool bsp,
		      struct kapsel_error **err)
{
	int r = set_msrs(fd, err);
	if (r < 0)
		return r;
	struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
	if (ioctl(fd, KVM_SET_FPU, &fpu) < 0)
		return kap_error(err, errno, "KVM_SET_FPU");
	r = set_lapic_lint(fd, err);
	if (r < 0 || !bsp)
		return r;

	struct kvm_sregs sregs;
	if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
		return kap_error(err, errno, "KVM_GET_SREGS");
	struct kvm_regs regs;
	kap_x86_boot_state(entry, &regs, &sregs);
	if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0)
		return kap_error(err, errno, "KVM_SET_SREGS");
	if (ioctl(fd, KVM_SET_REGS, &regs) < 0)
		return kap_error(err, errno, "KVM_SET_REGS");
	return 0;
}

int kap_x86_vcpu_wake(int fd, uint32_t vector, bool bsp, struct kapsel_error **err)
{
	if (!bsp) {
		struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_INIT_RECEIVED};
		if (ioctl(fd, KVM_SET_MP_STATE, &mp) < 0)
			return kap_error(err, errno, "KVM_SET_MP_STATE (wake an AP)");
		return 0;
	}
	struct kvm_sregs sregs;
	if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
		return kap_error(err, errno, "KVM_GET_SREGS");
	/* SDM Vol. 3 §9.1.1: real-mode segments, 64 KiB limits, present and accessible. */
	struct kvm_segment seg = {.limit = 0xffff, .type = 3, .present = 1, .s = 1};
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg;
	sregs.cs = seg;
	sregs.cs.type = 0xb;
	sregs.cs.selector = (uint16_t)(vector >> 4);
	sregs.cs.base = (uint64_t)(vector >> 4) << 4;
	sregs.ldt = (struct kvm_segment){.limit = 0xffff, .type = 2, .present = 1};
	sregs.tr = (struct kvm_segment){.limit = 0xffff, .type = 3, .present = 1};
	sregs.gdt = (struct kvm_dtable){.limit = 0xffff};
	sregs.idt = (struct kvm_dtable){.limit = 0xffff};
	sregs.cr0 = 0x60000010; /* CD | NW | ET: the reset value */
	sregs.cr2 = sregs.cr3 = sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0)
		return kap_error(err, errno, "KVM_SET_SREGS (wake)");
	struct kvm_regs regs = {.rip = vector & 0xf, .rflags = 2};
	if (ioctl(fd, KVM_SET_REGS, &regs) < 0)
		return kap_error(err, errno, "KVM_SET_REGS (wake)");
	struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
	if (ioctl(fd, KVM_SET_MP_STATE, &mp) < 0)
		return kap_error(err, errno, "KVM_SET_MP_STATE (wake)");
	return 0;
}
