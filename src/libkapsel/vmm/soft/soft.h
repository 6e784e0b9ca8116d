/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft accelerator: kapsel's own x86 CPU, for machines without usable KVM (docs/vm.md,
 * Accelerators; docs/DESIGN.md, The soft CPU). Guest code is decoded once (decode.c) into
 * blocks of pre-decoded instructions, each carrying the handler that runs it (exec.c), cached
 * by guest-physical address and dropped when the guest writes a page they came from (cpu.c).
 * The devices, boot loaders and guest RAM are the KVM path's own: port I/O and MMIO go through
 * the same buses (bus.c).
 */
#pragma once
#include <linux/kvm.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>
#include <kapsel/vm.h>

#include "vmm/soft/decode.h"

struct kap_vm;
struct kap_vcpu;
struct kap_boot_entry;

/* ---- vm.c's hooks (cpu.c) ---- */

/* What in this config the soft CPU cannot do yet (a phrase for an error), or NULL. */
const char *kap_soft_unsupported(const struct kapsel_vm_config *c);
/* Creates vCPU id's soft state, the BSP from the boot protocol's entry state. */
int kap_soft_vcpu_create(struct kap_vm *vm, unsigned int id, const struct kap_boot_entry *entry,
			 struct kapsel_error **err);
void kap_soft_vcpu_destroy(struct kap_vcpu *v);
/* The vCPU thread's body: runs guest code until the VM stops. */
void kap_soft_vcpu_run(struct kap_vcpu *v);
/* ACPI S3 wake (pause.c, with the vCPU parked): the BSP in real mode at the FACS waking
 * vector, an AP waiting for INIT and STARTUP, as kap_x86_vcpu_wake leaves KVM's vCPUs. */
struct kap_soft_cpu;
void kap_soft_vcpu_wake(struct kap_soft_cpu *cpu, uint32_t vector, bool bsp);
/* An interrupt may have become deliverable: halted vCPUs look again now. Any thread. */
void kap_soft_wake(struct kap_vm *vm);
/* The same for vCPU id alone (an IPI, a message to its local APIC). */
void kap_soft_kick(struct kap_vm *vm, unsigned int id);

/* ---- the CPU (cpu.c, exec.c) ---- */

struct kap_soft_seg {
	uint64_t base;
	uint32_t limit; /* in bytes */
	uint16_t sel;
	uint8_t type, dpl;
	bool present, s, db, l, g;
};

/* Lazy flags (exec.c): what the last flag-setting operation was. */
enum kap_soft_lf {
	KAP_SOFT_LF_NONE, /* the arithmetic flags are in cpu->flags */
	KAP_SOFT_LF_ADD,
	KAP_SOFT_LF_ADC,
	KAP_SOFT_LF_SUB,
	KAP_SOFT_LF_SBB,
	KAP_SOFT_LF_LOGIC,
	KAP_SOFT_LF_INC,
	KAP_SOFT_LF_DEC,
	KAP_SOFT_LF_HOST, /* generated code (jit.c): lf_res is the host's RFLAGS, exact for the
			     arithmetic bits */
};

struct kap_soft_block;
struct kap_soft_cache;
struct kap_soft_jit;

/*
 * The TLB (cpu.c, see its top): direct-mapped by linear page number, one per vCPU, inside
 * struct kap_soft_cpu so that generated code finds it at a fixed offset from the vCPU (jit.c).
 * An entry exists only for a RAM page and only after a walk that set the accessed bits. Per
 * access kind and privilege it holds a tag: the linear page address when that access is
 * allowed, else KAP_SOFT_TLB_NONE, which has low bits set and so never equals a page address.
 * A lookup is then one compare of the tag its kind and CPL select with the page of the
 * access's last byte (a page-crossing access never matches), as QEMU's softmmu does it. Writes
 * are allowed only once the walk found or set the dirty bit, so the first write through a clean
 * page still walks and sets it. tag[KAP_SOFT_TLB_READ][0] (supervisor reads, which need nothing
 * but the mapping) is the entry's page, NONE when the entry is empty.
 */
#define KAP_SOFT_TLB_SIZE 1024
#define KAP_SOFT_TLB_NONE (~0ULL)
enum { KAP_SOFT_TLB_READ, KAP_SOFT_TLB_WRITE, KAP_SOFT_TLB_FETCH };

struct kap_soft_tlb_entry {
	uint64_t tag[3][2]; /* [KAP_SOFT_TLB_*][user]: the linear page, or KAP_SOFT_TLB_NONE */
	uint64_t addend;    /* host address of the page minus its linear address */
	uint32_t idx;	    /* its RAM page index (code_owners) */
	uint8_t shift;	    /* log2 of the mapping's page size: INVLPG of a large page drops all */
	bool global;	    /* G in the leaf with CR4.PGE: a CR3 write keeps it */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct kap_soft_tlb_entry) == 64, "jit.c indexes the TLB by a shift");

struct kap_soft_tlb {
	struct kap_soft_tlb_entry e[KAP_SOFT_TLB_SIZE];
	uint64_t phys[KAP_SOFT_TLB_SIZE]; /* each entry's guest-physical page (fetches only) */
};

/* An XMM register (exec-sse.c), viewed as the instruction at hand needs it. */
union kap_soft_xmm {
	uint8_t b[16];
	uint16_t w[8];
	uint32_t d[4];
	uint64_t q[2];
	int8_t sb[16];
	int16_t sw[8];
	int32_t sd[4];
	int64_t sq[2];
	float f[4];
	double fd[2];
};

/*
 * The x87/MMX/SSE state (exec-x87.c, exec-sse.c), kept as the 64-bit FXSAVE image it is
 * saved as (SDM vol. 1 §10.5.1, table 10-2): ST(i) in stack order, the abridged tag word by
 * physical register, the XMM registers. MMX register i is physical register i.
 */
struct kap_soft_fxsave {
	uint16_t fcw, fsw; /* FSW holds TOP in bits 13-11 */
	uint8_t ftw;	   /* abridged: bit i set when physical register i is not empty */
	uint8_t rsvd1;
	uint16_t fop;
	uint64_t fip, fdp;
	uint32_t mxcsr, mxcsr_mask;
	struct {
		uint64_t mant;
		uint16_t se; /* sign and exponent */
		uint16_t rsvd[3];
	} st[8];
	union kap_soft_xmm xmm[16];
	uint8_t rsvd2[96];
} __attribute__((aligned(16)));
_Static_assert(sizeof(struct kap_soft_fxsave) == 512, "FXSAVE's image is 512 bytes");

struct kap_soft_cpu {
	struct kap_vm *vm;
	struct kap_vcpu *vcpu;
	unsigned int id;

	uint64_t r[16];
	uint64_t rip, next_rip;
	uint64_t flags; /* RFLAGS; its arithmetic bits are stale while lf_op != LF_NONE */
	uint64_t lf_a, lf_b, lf_res;
	uint8_t lf_op, lf_size; /* enum kap_soft_lf; bytes */
	bool lf_cf;		/* ADC/SBB: the carry in; INC/DEC: CF, which they keep */

	struct kap_soft_seg seg[6], ldtr, tr;
	uint64_t gdt_base, idt_base;
	uint16_t gdt_limit, idt_limit;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer;
	uint64_t star, lstar, cstar, fmask, kernel_gs_base, sysenter_cs, sysenter_esp, sysenter_eip,
	    pat, apic_base, misc_enable, mtrr_def_type;
	int64_t tsc_offset;
	int64_t tsc_adjust; /* IA32_TSC_ADJUST: what WRMSRs to it and to the TSC added */
	uint64_t spec_ctrl; /* IA32_SPEC_CTRL: IBRS, kept and without effect */
	unsigned int mode;  /* code size in bytes: 2, 4 or 8 (CS.D, CS.L, EFER.LMA) */
	unsigned int cpl;

	/* Exceptions: raised with longjmp back to the run loop (cpu.c, kap_soft_raise). */
	jmp_buf jb;
	int exc_vector;
	uint32_t exc_code;
	bool exc_has_code;
	int delivering;	 /* the vector being delivered, or -1: for #DF and triple faults */
	bool ud_logged;	 /* an unimplemented instruction was logged once already */
	bool stop_block; /* a store hit a page with translations: leave the block after this */
	bool halted;
	bool wait_sipi;	  /* an AP after reset or INIT: runs nothing until a STARTUP IPI */
	bool nmi_blocked; /* an NMI is being handled: the next waits for an IRET (§6.7.1) */
	bool nmi_pending;
	bool int_shadow;   /* STI just set IF: no interrupt before the next instruction */
	unsigned int poll; /* blocks since the PIT was last polled */

	/* HLT sleeps on halt_cond until kap_soft_wake (an interrupt was raised) or a timer. */
	pthread_mutex_t halt_lock;
	pthread_cond_t halt_cond;
	bool woken;

	struct kap_soft_fxsave fpu; /* x87, MMX, SSE (exec-x87.c, exec-sse.c) */
	uint16_t fcs, fds;	    /* the x87 last instruction's and operand's selectors */

	struct kap_soft_lapic *lapic;
	struct kap_soft_cache *cache;
	struct kap_soft_jit *jit; /* the code generator (jit.c), NULL when off */
	/* Per RAM page, a bit for each vCPU with blocks from it (the VM's written record). */
	_Atomic uint64_t *code_owners;
	uint64_t npages;

	/* A LOCK'd instruction in progress (atomic.c). */
	struct kap_soft_locked {
		int state;     /* KAP_SOFT_LK_* */
		uint8_t *host; /* the aligned RAM operand */
		uint64_t old;  /* the value read from it */
		unsigned int n;
		/* The registers before it: a retry or an exception starts from them again. */
		uint64_t r[16], flags, lf_a, lf_b, lf_res, next_rip;
		uint8_t lf_op, lf_size;
		bool lf_cf;
	} lk;

	struct kap_soft_tlb tlb; /* linear page -> host page of RAM (cpu.c, The TLB) */
};

/* Executes a LOCK-prefixed instruction (or XCHG with memory) atomically (atomic.c). */
void kap_soft_exec_locked(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);
/* An exception left a locked instruction: drops the split-lock mutex if it was taken. */
void kap_soft_locked_abort(struct kap_soft_cpu *cpu);
/* Whether the instruction is executed through kap_soft_exec_locked. */
bool kap_soft_insn_locked(const struct kap_soft_insn *d);
/* The memory operand of a locked instruction: atomic.c's side of kap_soft_read/write. */
uint64_t kap_soft_locked_read(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off,
			      unsigned int n);
void kap_soft_locked_write(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n,
			   uint64_t v);
/*
 * cpu.c's side for atomic.c: the host address of [off, off + n) through seg for a write (the
 * segment and page checks and the A/D bits done), or NULL when it is not RAM or crosses a
 * page. Faults raise. After storing there, kap_soft_stored (the translated-code check).
 */
uint8_t *kap_soft_write_ptr(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off,
			    unsigned int n);
void kap_soft_stored(struct kap_soft_cpu *cpu, const uint8_t *p);
/*
 * A REP MOVS/STOS run in 64-bit mode (exec.c): RAM at seg:off as one access of the page it is
 * in would find it (through the TLB or a walk, which raises #PF and sets A/D), or NULL outside
 * RAM. *len, the bytes wanted, is cut to the end of that page.
 */
uint8_t *kap_soft_string_ptr(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off,
			     uint64_t *len, bool write);
/* Plain accesses (kap_soft_read/write without the locked-operand hook). */
uint64_t kap_soft_read_plain(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off,
			     unsigned int n);
void kap_soft_write_plain(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n,
			  uint64_t v);
enum {
	KAP_SOFT_LK_OFF,
	KAP_SOFT_LK_ARMED,
	KAP_SOFT_LK_READ,
	KAP_SOFT_LK_SPLIT,
	KAP_SOFT_LK_DONE,
	KAP_SOFT_LK_FAILED
};

typedef void (*kap_soft_exec_fn)(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);

/* The handler for a decoded instruction, or NULL when exec.c does not implement it (#UD). */
kap_soft_exec_fn kap_soft_exec_lookup(const struct kap_soft_insn *d);
/* Whether the instruction may change RIP other than to the next one (ends a block). */
bool kap_soft_insn_ends_block(const struct kap_soft_insn *d);

/* Raises exception vector (with an error code when has_code); does not return. */
_Noreturn void kap_soft_raise(struct kap_soft_cpu *cpu, int vector, uint32_t code, bool has_code);
/* #UD for an instruction exec.c does not implement: logged once per vCPU, then raised. */
_Noreturn void kap_soft_unimplemented(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d);

/* Guest virtual memory through segment seg (KAP_SOFT_ES..GS) at offset off; faults raise. */
uint64_t kap_soft_read(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n);
void kap_soft_write(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n,
		    uint64_t v);
/* Linear-address accesses (descriptor tables, the IDT, the TSS): supervisor, no segment. */
uint64_t kap_soft_read_lin(struct kap_soft_cpu *cpu, uint64_t lin, unsigned int n);
void kap_soft_write_lin(struct kap_soft_cpu *cpu, uint64_t lin, unsigned int n, uint64_t v);

/* Loads a segment register from a selector (protected mode: from the GDT/LDT, with checks). */
void kap_soft_load_seg(struct kap_soft_cpu *cpu, unsigned int seg, uint16_t sel);
/* Recomputes cpu->mode and cpu->cpl after CS, CR0 or EFER changed. */
void kap_soft_update_mode(struct kap_soft_cpu *cpu);
/* The software TLB (the block cache is physical: it stays). flush_tlb drops every entry (CR0,
 * CR4 and EFER writes); flush_tlb_cr3 keeps global pages when CR4.PGE is set (a CR3 write);
 * invlpg drops the page holding segment seg's offset off, global or not (INVLPG). */
void kap_soft_flush_tlb(struct kap_soft_cpu *cpu);
void kap_soft_flush_tlb_cr3(struct kap_soft_cpu *cpu);
void kap_soft_invlpg(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off);
/* Port I/O through the VM's port bus. */
uint32_t kap_soft_in(struct kap_soft_cpu *cpu, uint16_t port, unsigned int n);
void kap_soft_out(struct kap_soft_cpu *cpu, uint16_t port, unsigned int n, uint32_t v);
/* HLT: waits for an interrupt (IF set) or, with IF clear, until the VM stops. */
void kap_soft_halt(struct kap_soft_cpu *cpu);
/* The guest's TSC: host CLOCK_MONOTONIC in ns plus the guest's offset (docs/vm.md). */
uint64_t kap_soft_rdtsc(struct kap_soft_cpu *cpu);
/* RDMSR/WRMSR: false for an MSR the soft CPU does not have (#GP). */
bool kap_soft_rdmsr(struct kap_soft_cpu *cpu, uint32_t index, uint64_t *v);
bool kap_soft_wrmsr(struct kap_soft_cpu *cpu, uint32_t index, uint64_t v);
/* CPUID: the fixed baseline docs/vm.md describes. */
void kap_soft_cpuid(struct kap_soft_cpu *cpu, uint32_t leaf, uint32_t sub, uint32_t out[4]);

/* The x87 and SSE state after RESET/INIT as KVM gives it (FNINIT's, MXCSR 0x1f80). */
void kap_soft_fpu_reset(struct kap_soft_cpu *cpu);
/* Guest memory of any size up to a page, through segment seg: the whole access is checked
 * before any byte is stored (FXSAVE, 16-byte SSE operands). */
void kap_soft_read_buf(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, void *buf,
		       unsigned int n);
void kap_soft_write_buf(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, const void *buf,
			unsigned int n);

/* RFLAGS with the lazy flags worked out (exec.c). */
uint64_t kap_soft_get_flags(struct kap_soft_cpu *cpu);
void kap_soft_set_flags(struct kap_soft_cpu *cpu, uint64_t flags);

/* RFLAGS bits. */
#define KAP_SOFT_CF   (1ULL << 0)
#define KAP_SOFT_PF   (1ULL << 2)
#define KAP_SOFT_AF   (1ULL << 4)
#define KAP_SOFT_ZF   (1ULL << 6)
#define KAP_SOFT_SF   (1ULL << 7)
#define KAP_SOFT_TF   (1ULL << 8)
#define KAP_SOFT_IF   (1ULL << 9)
#define KAP_SOFT_DIRF (1ULL << 10) /* DF */
#define KAP_SOFT_OF   (1ULL << 11)
#define KAP_SOFT_ARITH                                                                             \
	(KAP_SOFT_CF | KAP_SOFT_PF | KAP_SOFT_AF | KAP_SOFT_ZF | KAP_SOFT_SF | KAP_SOFT_OF)

/* Exception vectors (SDM vol. 3 §6.3.1): KAP_SOFT_X<mnemonic>. */
enum {
	KAP_SOFT_XDE = 0,
	KAP_SOFT_XDB = 1,
	KAP_SOFT_XBP = 3,
	KAP_SOFT_XOF = 4,
	KAP_SOFT_XUD = 6,
	KAP_SOFT_XNM = 7,
	KAP_SOFT_XDF = 8,
	KAP_SOFT_XTS = 10,
	KAP_SOFT_XNP = 11,
	KAP_SOFT_XSS = 12,
	KAP_SOFT_XGP = 13,
	KAP_SOFT_XPF = 14,
	KAP_SOFT_XMF = 16,
	KAP_SOFT_XAC = 17,
	KAP_SOFT_XXM = 19,
};

#define KAP_SOFT_CR0_PE		(1ULL << 0)
#define KAP_SOFT_CR0_MP		(1ULL << 1)
#define KAP_SOFT_CR0_EM		(1ULL << 2)
#define KAP_SOFT_CR0_TS		(1ULL << 3)
#define KAP_SOFT_CR0_NE		(1ULL << 5)
#define KAP_SOFT_CR0_WP		(1ULL << 16)
#define KAP_SOFT_CR0_PG		(1ULL << 31)
#define KAP_SOFT_CR4_PSE	(1ULL << 4)
#define KAP_SOFT_CR4_PAE	(1ULL << 5)
#define KAP_SOFT_CR4_PGE	(1ULL << 7)
#define KAP_SOFT_CR4_OSFXSR	(1ULL << 9)
#define KAP_SOFT_CR4_OSXMMEXCPT (1ULL << 10)
#define KAP_SOFT_EFER_LME	(1ULL << 8)
#define KAP_SOFT_EFER_LMA	(1ULL << 10)
#define KAP_SOFT_EFER_NXE	(1ULL << 11)
