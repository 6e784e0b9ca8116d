/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's machine side: its state at entry (from the boot protocol's KVM register
 * state, so both accelerators start a guest identically), guest memory through segmentation
 * and paging, exception delivery through the IDT, the translated-block cache and the run loop.
 *
 * Everything the guest controls is hostile input here: descriptor tables, page tables, the
 * IDT and the code bytes themselves. Every guest-physical access goes through kap_mem_ptr
 * (bounds-checked against RAM) or the MMIO bus; a fault the guest causes becomes a guest
 * exception (and, nested three deep, a triple fault that ends the VM with the KVM path's
 * message), never a fault of kapsel's.
 *
 * Blocks: a run of decoded instructions starting at a guest-physical address, ending at the
 * first instruction that may branch, at a page boundary or after KAP_SOFT_BLOCK_MAX. They are
 * found by (physical address, code size) in a hash table. Self-modifying code: each RAM page
 * some block came from is marked; every guest store checks the mark, and a store
 * to such a page drops the page's blocks and ends the running block after the storing
 * instruction, so the next instruction is decoded from the new bytes (SDM vol. 3 §11.6).
 * Dropped blocks are freed only between blocks: the running one may be among them. With
 * several vCPUs the mark is a mask of the vCPUs with blocks from the page (code_owners), and a
 * store marks the other owners' written-page records, which they take at their block
 * boundaries (kap_soft_stored).
 *
 * Chaining: a block ending in a direct branch or falling through remembers the (up to two)
 * blocks that ran next, by RIP; the run loop takes a link only when the block's physical
 * address and code size are what RIP translates to now, and dropping any block bumps the
 * cache's epoch, which voids all links (made again on use). Interrupts, the VMM's writes and
 * the timers are looked at at every block boundary, linked or not.
 *
 * The TLB: one per vCPU, linear page -> host pointer of a RAM page, with user/supervisor read,
 * write and fetch permission as a tag per access kind and privilege (soft.h: the compiled code's
 * lookup is one compare) (MMIO pages are never cached). Filled by a page walk after it set
 * the accessed bits; writable only once the leaf's dirty bit is set, so a first write through a
 * clean page walks again and sets it. Flushed as the SDM says a TLB is (CR3 writes keep global
 * pages under CR4.PGE; CR0, CR4, EFER writes drop all; INVLPG one mapping); a guest changing a
 * PTE without INVLPG may see the old one, as on hardware. A store through it to a page with
 * translations takes the slow path (phys_access), which drops them.
 *
 * The VMM writes RAM too (virtio buffers and used rings, fw_cfg DMA, hypercall results), from
 * device threads that cannot touch this vCPU's cache. They record what they write where the
 * snapshot dirty log does (kap_mem_mark_dirty, memory.c's written bitmap); the vCPU takes the
 * record at each block boundary and drops the translations of those pages that have any.
 * Devices record a request's buffers when they take it, before writing them: a translation
 * made between the two would be of code the guest ran from a buffer the device still owned
 * (virtio 1.2 §2.7.13: the driver must not touch it), which no guest relies on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/soft/block.h"
#include "vmm/soft/irq.h"
#include "vmm/soft/jit.h"
#include "vmm/soft/soft.h"
#include "vmm/soft/state.h"
#include "vmm/vmm.h"
#include "vmm/x86/x86.h"

const char *kap_soft_unsupported(const struct kapsel_vm_config *c)
{
	if (c->cpu_features && strstr(c->cpu_features, "hv-"))
		return "Hyper-V enlightenments (--cpu-features hv-*)";
	if (c->firmware)
		return "firmware (--firmware: the BIOS ROM mapping is KVM's for now)";
	return NULL;
}

static void seg_from_kvm(struct kap_soft_seg *s, const struct kvm_segment *k)
{
	*s = (struct kap_soft_seg){.base = k->base,
				   .limit = k->limit,
				   .sel = k->selector,
				   .type = k->type,
				   .dpl = k->dpl,
				   .present = k->present && !k->unusable,
				   .s = k->s,
				   .db = k->db,
				   .l = k->l,
				   .g = k->g};
}

void kap_soft_update_mode(struct kap_soft_cpu *cpu)
{
	if (!(cpu->cr0 & KAP_SOFT_CR0_PE))
		cpu->mode = 2;
	else if ((cpu->efer & KAP_SOFT_EFER_LMA) && cpu->seg[KAP_SOFT_CS].l)
		cpu->mode = 8;
	else
		cpu->mode = cpu->seg[KAP_SOFT_CS].db ? 4 : 2;
	if (!(cpu->cr0 & KAP_SOFT_CR0_PE))
		cpu->cpl = 0;
	else if (cpu->flags & (1ULL << 17)) /* virtual-8086 */
		cpu->cpl = 3;
	else
		cpu->cpl = cpu->seg[KAP_SOFT_CS].sel & 3;
}

/* Empties an entry: every tag NONE. */
static inline void tlb_drop(struct kap_soft_tlb_entry *e)
{
	for (unsigned int k = 0; k < 3; k++)
		e->tag[k][0] = e->tag[k][1] = KAP_SOFT_TLB_NONE;
}

void kap_soft_flush_tlb(struct kap_soft_cpu *cpu)
{
	for (size_t i = 0; i < KAP_SOFT_TLB_SIZE; i++)
		tlb_drop(&cpu->tlb.e[i]);
}

void kap_soft_flush_tlb_cr3(struct kap_soft_cpu *cpu)
{
	for (size_t i = 0; i < KAP_SOFT_TLB_SIZE; i++)
		if (!cpu->tlb.e[i].global)
			tlb_drop(&cpu->tlb.e[i]);
}

void kap_soft_invlpg(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off)
{
	uint64_t lin;
	if (cpu->mode == 8)
		lin = (seg == KAP_SOFT_FS || seg == KAP_SOFT_GS) ? cpu->seg[seg].base + off : off;
	else
		lin = (cpu->seg[seg].base + off) & 0xffffffffULL;
	/* Every entry from the mapping holding lin: a large page may have many. */
	for (size_t i = 0; i < KAP_SOFT_TLB_SIZE; i++) {
		struct kap_soft_tlb_entry *e = &cpu->tlb.e[i];
		uint64_t page = e->tag[KAP_SOFT_TLB_READ][0];
		if (page != KAP_SOFT_TLB_NONE && ((page ^ lin) >> e->shift) == 0)
			tlb_drop(e);
	}
}

static void init_reset(struct kap_soft_cpu *cpu);

int kap_soft_vcpu_create(struct kap_vm *vm, unsigned int id, const struct kap_boot_entry *entry,
			 struct kapsel_error **err)
{
	struct kap_vcpu *v = &vm->vcpus[id];
	*v = (struct kap_vcpu){.vm = vm, .id = id, .fd = -EBADF};
	/* aligned as its TLB entries are: a lookup touches one cache line */
	struct kap_soft_cpu *cpu = aligned_alloc(_Alignof(struct kap_soft_cpu), sizeof(*cpu));
	if (!cpu)
		return kap_error(err, ENOMEM, "soft vCPU %u", id);
	memset(cpu, 0, sizeof(*cpu));
	kap_soft_flush_tlb(cpu); /* an entry of zeros would map linear page 0 */
	cpu->vm = vm;
	cpu->vcpu = v;
	cpu->id = id;
	pthread_mutex_init(&cpu->halt_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the clock kap_soft_now_ns reads */
	pthread_cond_init(&cpu->halt_cond, &ca);
	pthread_condattr_destroy(&ca);
	cpu->delivering = -1;
	cpu->npages = vm->mem.size >> 12;
	cpu->cache = calloc(1, sizeof(*cpu->cache));
	if (!cpu->cache) {
		free(cpu);
		return kap_error(err, ENOMEM, "soft vCPU %u", id);
	}
	v->soft = cpu;
	cpu->jit = kap_soft_jit_new(cpu);
	/* The VM's written-page records (vm.c made one per vCPU) and the code-page owners. */
	if (!vm->mem.written || id >= vm->mem.written->n || id >= 64)
		return kap_error_plain(err, EINVAL, "soft vCPU %u: no written-page record", id);
	cpu->code_owners = vm->mem.written->owners;
	int r = kap_soft_lapic_create(vm, id, &cpu->lapic, err);
	if (r < 0)
		return r;    /* kap_soft_vcpu_destroy frees the rest */
	if (vm->soft_ioapic) /* level-triggered EOIs reach the I/O APIC (§11.8.5) */
		kap_soft_lapic_set_eoi(cpu->lapic, kap_soft_ioapic_eoi, vm->soft_ioapic);
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	memset(&sregs, 0, sizeof(sregs));
	kap_x86_boot_state(entry, &regs, &sregs);
	const struct kvm_segment *ks[6] = {&sregs.es, &sregs.cs, &sregs.ss,
					   &sregs.ds, &sregs.fs, &sregs.gs};
	for (int i = 0; i < 6; i++)
		seg_from_kvm(&cpu->seg[i], ks[i]);
	seg_from_kvm(&cpu->ldtr, &sregs.ldt);
	seg_from_kvm(&cpu->tr, &sregs.tr);
	cpu->gdt_base = sregs.gdt.base;
	cpu->gdt_limit = sregs.gdt.limit;
	cpu->idt_base = sregs.idt.base;
	cpu->idt_limit = sregs.idt.limit;
	cpu->cr0 = sregs.cr0;
	cpu->cr3 = sregs.cr3;
	cpu->cr4 = sregs.cr4;
	cpu->efer = sregs.efer;
	/* kvm_regs' order is rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp: not the encoding's. */
	cpu->r[0] = regs.rax;
	cpu->r[1] = regs.rcx;
	cpu->r[2] = regs.rdx;
	cpu->r[3] = regs.rbx;
	cpu->r[4] = regs.rsp;
	cpu->r[5] = regs.rbp;
	cpu->r[6] = regs.rsi;
	cpu->r[7] = regs.rdi;
	cpu->rip = regs.rip;
	cpu->flags = regs.rflags;
	/* The MSRs regs.c gives a KVM vCPU at boot. */
	cpu->misc_enable = 1;
	cpu->mtrr_def_type = (1ULL << 11) | 6;
	cpu->pat = 0x0007040600070406ULL;
	cpu->apic_base = KAP_LAPIC_ADDR | (1ULL << 11) | (id == 0 ? 1ULL << 8 : 0);
	/* One TSC for the VM: the APs' counts are the BSP's (Linux checks they agree). */
	cpu->tsc_offset = id == 0 ? -(int64_t)kap_soft_rdtsc(cpu) : vm->vcpus[0].soft->tsc_offset;
	kap_soft_fpu_reset(cpu);
	kap_soft_update_mode(cpu);
	if (id > 0)
		init_reset(cpu); /* an AP waits for INIT and STARTUP, as under KVM */
	return 0;
}

/*
 * INIT (SDM vol. 3 §9.1.1, table 9-1): the power-up register state, real mode at F000:FFF0,
 * then waiting for a STARTUP IPI. The TSC, the APIC base and the other MSRs are kept; the
 * translated blocks are too (they are keyed by physical address and code size).
 */
static void init_reset(struct kap_soft_cpu *cpu)
{
	memset(cpu->r, 0, sizeof(cpu->r));
	cpu->r[2] = 0x00050650; /* EDX: the CPUID.1 signature */
	cpu->rip = 0xfff0;
	cpu->flags = 2;
	cpu->lf_op = KAP_SOFT_LF_NONE;
	for (int i = 0; i < 6; i++)
		cpu->seg[i] =
		    (struct kap_soft_seg){.limit = 0xffff, .type = 3, .present = true, .s = true};
	cpu->seg[KAP_SOFT_CS] = (struct kap_soft_seg){.base = 0xffff0000ULL,
						      .limit = 0xffff,
						      .sel = 0xf000,
						      .type = 0xb,
						      .present = true,
						      .s = true};
	cpu->ldtr = (struct kap_soft_seg){.limit = 0xffff, .type = 2, .present = true};
	cpu->tr = (struct kap_soft_seg){.limit = 0xffff, .type = 0xb, .present = true};
	cpu->gdt_base = cpu->idt_base = 0;
	cpu->gdt_limit = cpu->idt_limit = 0xffff;
	cpu->cr0 = 0x60000010;
	cpu->cr2 = cpu->cr3 = cpu->cr4 = cpu->cr8 = cpu->efer = 0;
	cpu->halted = cpu->int_shadow = cpu->nmi_blocked = cpu->nmi_pending = false;
	cpu->wait_sipi = true;
	kap_soft_update_mode(cpu);
	kap_soft_flush_tlb(cpu); /* paging is off: no entry from before stands */
}

void kap_soft_vcpu_wake(struct kap_soft_cpu *cpu, uint32_t vector, bool bsp)
{
	init_reset(cpu);
	kap_soft_lapic_init_reset(cpu->lapic);
	if (!bsp)
		return; /* an AP waits for INIT and STARTUP, as after KVM's wake (regs.c) */
	cpu->wait_sipi = false;
	cpu->seg[KAP_SOFT_CS].sel = (uint16_t)(vector >> 4);
	cpu->seg[KAP_SOFT_CS].base = (uint64_t)(vector >> 4) << 4;
	cpu->rip = vector & 0xf;
	kap_soft_update_mode(cpu);
}

static void cache_free(struct kap_soft_cache *c)
{
	for (size_t i = 0; i < KAP_SOFT_HASH; i++) {
		struct kap_soft_block *b = c->hash[i];
		while (b) {
			struct kap_soft_block *n = b->next;
			free(b);
			b = n;
		}
	}
	while (c->garbage) {
		struct kap_soft_block *n = c->garbage->next;
		free(c->garbage);
		c->garbage = n;
	}
	free(c);
}

void kap_soft_vcpu_destroy(struct kap_vcpu *v)
{
	struct kap_soft_cpu *cpu = v->soft;
	if (!cpu)
		return;
	cache_free(cpu->cache);
	kap_soft_jit_free(cpu->jit);
	kap_soft_lapic_free(cpu->lapic);
	pthread_cond_destroy(&cpu->halt_cond);
	pthread_mutex_destroy(&cpu->halt_lock);
	free(cpu);
	v->soft = NULL;
}

/* ---- exceptions ---- */

_Noreturn void kap_soft_raise(struct kap_soft_cpu *cpu, int vector, uint32_t code, bool has_code)
{
	cpu->exc_vector = vector;
	cpu->exc_code = code;
	cpu->exc_has_code = has_code;
	longjmp(cpu->jb, 1);
}

/* ---- physical memory ---- */

/* The RAM page index of gpa, or -1 when gpa is not RAM. */
static int64_t ram_page(struct kap_soft_cpu *cpu, uint64_t gpa)
{
	const uint8_t *p = kap_mem_ptr(&cpu->vm->mem, gpa, 1);
	if (!p)
		return -1;
	return (int64_t)((uint64_t)(p - cpu->vm->mem.host) >> 12);
}

static unsigned int hash(uint64_t phys, unsigned int mode)
{
	return (unsigned int)(((phys ^ mode) * 0x9e3779b97f4a7c15ULL) >> 49) & (KAP_SOFT_HASH - 1);
}

static unsigned int page_hash(uint64_t page)
{
	return (unsigned int)((page >> 12) * 0x9e3779b97f4a7c15ULL >> 51) &
	       (KAP_SOFT_PAGE_HASH - 1);
}

/* Puts a new block in the hash table and the page index. */
static void cache_insert(struct kap_soft_cache *c, struct kap_soft_block *b)
{
	unsigned int h = hash(b->phys, b->mode);
	b->next = c->hash[h];
	c->hash[h] = b;
	uint64_t pg[2] = {b->phys & ~0xfffULL, b->page2};
	for (int k = 0; k < 2; k++) {
		b->pnext[k] = NULL;
		b->pprev[k] = NULL;
		if (pg[k] == ~0ULL)
			continue;
		struct kap_soft_block **head = &c->pages[k][page_hash(pg[k])];
		b->pnext[k] = *head;
		if (*head)
			(*head)->pprev[k] = &b->pnext[k];
		*head = b;
		b->pprev[k] = head;
	}
}

/* Takes block b out of the hash table and the page index, onto the garbage list; the generated
 * code's links to it are undone. */
static void cache_drop(struct kap_soft_cpu *cpu, struct kap_soft_block *b)
{
	struct kap_soft_cache *c = cpu->cache;
	if (cpu->jit)
		kap_soft_jit_drop(cpu->jit, b);
	struct kap_soft_block **pp = &c->hash[hash(b->phys, b->mode)];
	while (*pp != b)
		pp = &(*pp)->next;
	*pp = b->next;
	for (int k = 0; k < 2; k++) {
		if (!b->pprev[k])
			continue;
		*b->pprev[k] = b->pnext[k];
		if (b->pnext[k])
			b->pnext[k]->pprev[k] = b->pprev[k];
		b->pprev[k] = NULL;
	}
	b->next = c->garbage;
	c->garbage = b;
}

static void invalidate_page(struct kap_soft_cpu *cpu, uint64_t gpa)
{
	uint64_t page = gpa & ~0xfffULL;
	struct kap_soft_cache *c = cpu->cache;
	unsigned int ph = page_hash(page);
	for (int k = 0; k < 2; k++) {
		struct kap_soft_block *b = c->pages[k][ph];
		while (b) {
			struct kap_soft_block *n = b->pnext[k];
			if ((k == 0 ? b->phys & ~0xfffULL : b->page2) == page)
				cache_drop(cpu, b);
			b = n;
		}
	}
	int64_t idx = ram_page(cpu, gpa);
	if (idx >= 0 && (uint64_t)idx < cpu->npages)
		atomic_fetch_and(&cpu->code_owners[idx], ~(1ULL << cpu->id));
	c->epoch++; /* voids the loop's links: some may lead into the dropped blocks */
	cpu->stop_block = true;
}

/* The guest-physical address of RAM page idx. */
static uint64_t page_gpa(const struct kap_soft_cpu *cpu, uint64_t idx)
{
	uint64_t off = idx << 12, low = cpu->vm->mem.low_size;
	return off < low ? off : KAP_4G + (off - low);
}

/*
 * After a store to RAM at host address p (docs/vm.md, Several vCPUs): when some vCPU has blocks
 * from the page, this vCPU's go now (its running block ends after the storing instruction) and
 * every other owner's written-page record is marked, so that vCPU drops its blocks at its next
 * block boundary, before it can have seen anything this vCPU stores later. With several vCPUs
 * a full fence comes first: a vCPU translating the page sets its bit, fences, then reads the
 * bytes, so either this load sees the bit or that read sees the new bytes (Dekker's pattern).
 * Looking before the store instead would leave a window between the look and the store.
 */
void kap_soft_stored(struct kap_soft_cpu *cpu, const uint8_t *p)
{
	uint64_t idx = (uint64_t)(p - cpu->vm->mem.host) >> 12;
	kap_mem_log_store(&cpu->vm->mem, idx); /* the dirty log, when on (state.c) */
	if (cpu->vm->ncpus > 1)
		atomic_thread_fence(memory_order_seq_cst);
	if (idx >= cpu->npages ||
	    !atomic_load_explicit(&cpu->code_owners[idx], memory_order_relaxed))
		return;
	uint64_t owners = atomic_load(&cpu->code_owners[idx]), me = 1ULL << cpu->id;
	if (owners & me)
		invalidate_page(cpu, page_gpa(cpu, idx));
	for (owners &= ~me; owners; owners &= owners - 1)
		kap_mem_written_mark(cpu->vm->mem.written, (unsigned int)__builtin_ctzll(owners),
				     idx);
}

/* One access to guest-physical [gpa, gpa + n) inside one page: RAM, else the MMIO bus. */
static void phys_access(struct kap_soft_cpu *cpu, uint64_t gpa, void *data, unsigned int n,
			bool write)
{
	uint8_t *p = kap_mem_ptr(&cpu->vm->mem, gpa, n);
	if (!p) {
		atomic_fetch_add_explicit(&cpu->vcpu->exits[KAP_EXIT_MMIO], 1,
					  memory_order_relaxed);
		kap_soft_jit_kick(cpu);
		/* This vCPU's own local APIC, where its APIC base MSR puts it (§11.4.4). */
		if ((gpa & ~0xfffULL) == (cpu->apic_base & 0xffffff000ULL) &&
		    (cpu->apic_base & (1ULL << 11)))
			kap_soft_lapic_mmio(cpu->lapic, gpa & 0xfff, data, n, write);
		else
			kap_bus_access(&cpu->vm->mmio, gpa, data, n, write);
		return;
	}
	if (!write) {
		memcpy(data, p, n);
		return;
	}
	memcpy(p, data, n);
	kap_soft_stored(cpu, p);
}

/* ---- paging (SDM vol. 3 ch. 4) ---- */

/* ACC_PROBE: look only (the fault message): no exception, no A/D bits; ~0 when unmapped. */
enum { ACC_WRITE = 1, ACC_USER = 2, ACC_FETCH = 4, ACC_PROBE = 8 };
#define FAULT(raise)                                                                               \
	do {                                                                                       \
		if (acc & ACC_PROBE)                                                               \
			return ~0ULL;                                                              \
		raise;                                                                             \
	} while (0)

static uint64_t pte_read(struct kap_soft_cpu *cpu, uint64_t gpa, unsigned int n)
{
	uint64_t v = 0;
	uint8_t *p = kap_mem_ptr(&cpu->vm->mem, gpa, n);
	if (p)
		memcpy(&v, p, n);
	else
		v = 0; /* a table outside RAM reads as not present */
	return v;
}

static void pte_set(struct kap_soft_cpu *cpu, uint64_t gpa, unsigned int n, uint64_t bits)
{
	uint8_t *p = kap_mem_ptr(&cpu->vm->mem, gpa, n);
	if (!p)
		return;
	kap_mem_log_store(&cpu->vm->mem, (uint64_t)(p - cpu->vm->mem.host) >> 12);
	/* Atomically, as the CPU sets them: another vCPU may be changing the entry (a table
	 * entry is aligned to its size, so the host address is too). */
	if (n == 8)
		__atomic_fetch_or((uint64_t *)(void *)p, bits, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_or((uint32_t *)(void *)p, (uint32_t)bits, __ATOMIC_SEQ_CST);
}

/* What a walk allows of a page (translate), turned into an entry's tags by tlb_fill. */
enum {
	TLB_R_USER = 1, /* supervisor reads need nothing: the entry exists */
	TLB_W_SUP = 2,
	TLB_W_USER = 4,
	TLB_X_SUP = 8,
	TLB_X_USER = 16,
};

static inline struct kap_soft_tlb_entry *tlb_entry(struct kap_soft_cpu *cpu, uint64_t lin)
{
	return &cpu->tlb.e[(lin >> 12) & (KAP_SOFT_TLB_SIZE - 1)];
}

/* With one vCPU: RAM page idx got translations, so no entry may allow writes to it any more
 * (tlb_fill): the next store there takes the slow path, which drops them (kap_soft_stored). */
static void tlb_drop_writes(struct kap_soft_cpu *cpu, uint64_t idx)
{
	for (size_t i = 0; i < KAP_SOFT_TLB_SIZE; i++) {
		struct kap_soft_tlb_entry *e = &cpu->tlb.e[i];
		if (e->idx == idx)
			e->tag[KAP_SOFT_TLB_WRITE][0] = e->tag[KAP_SOFT_TLB_WRITE][1] =
			    KAP_SOFT_TLB_NONE;
	}
}

/* Caches lin's page after a successful walk: RAM pages only (MMIO goes to the bus each time). */
static void tlb_fill(struct kap_soft_cpu *cpu, uint64_t lin, uint64_t phys_page, unsigned int perm,
		     unsigned int shift, bool global)
{
	uint8_t *host = kap_mem_ptr(&cpu->vm->mem, phys_page, 0x1000);
	if (!host)
		return;
	uint64_t page = lin & ~0xfffULL, none = KAP_SOFT_TLB_NONE;
	uint64_t idx = (uint64_t)(host - cpu->vm->mem.host) >> 12;
	/* With one vCPU a page with translations allows no write through an entry: the compiled
	 * stores' fast path (jit.c) leaves out the code-page check, the slow one drops them */
	if (cpu->vm->ncpus == 1 && idx < cpu->npages &&
	    atomic_load_explicit(&cpu->code_owners[idx], memory_order_relaxed))
		perm &= ~(unsigned int)(TLB_W_SUP | TLB_W_USER);
	struct kap_soft_tlb_entry *e = tlb_entry(cpu, lin);
	*e = (struct kap_soft_tlb_entry){
	    .tag = {{page, (perm & TLB_R_USER) ? page : none},
		    {(perm & TLB_W_SUP) ? page : none, (perm & TLB_W_USER) ? page : none},
		    {(perm & TLB_X_SUP) ? page : none, (perm & TLB_X_USER) ? page : none}},
	    .addend = (uint64_t)(uintptr_t)host - page,
	    .idx = (uint32_t)idx,
	    .shift = (uint8_t)shift,
	    .global = global};
	cpu->tlb.phys[(lin >> 12) & (KAP_SOFT_TLB_SIZE - 1)] = phys_page;
}

/* The entry for lin when it allows acc (ACC_WRITE | ACC_USER | ACC_FETCH), else NULL (then
 * translate walks, and fills). */
static inline struct kap_soft_tlb_entry *tlb_find(struct kap_soft_cpu *cpu, uint64_t lin,
						  unsigned int acc)
{
	struct kap_soft_tlb_entry *e = tlb_entry(cpu, lin);
	unsigned int kind = (acc & ACC_FETCH)	? KAP_SOFT_TLB_FETCH
			    : (acc & ACC_WRITE) ? KAP_SOFT_TLB_WRITE
						: KAP_SOFT_TLB_READ;
	return e->tag[kind][(acc & ACC_USER) ? 1 : 0] == (lin & ~0xfffULL) ? e : NULL;
}

/* The host address of lin through its entry e (tlb_find's). */
static inline uint8_t *tlb_host(const struct kap_soft_tlb_entry *e, uint64_t lin)
{
	return (uint8_t *)(uintptr_t)(lin + e->addend);
}

_Noreturn static void page_fault(struct kap_soft_cpu *cpu, uint64_t lin, unsigned int acc,
				 bool present, bool rsvd)
{
	cpu->cr2 = lin;
	uint32_t code = (present ? 1u : 0u) | ((acc & ACC_WRITE) ? 2u : 0u) |
			((acc & ACC_USER) ? 4u : 0u) | (rsvd ? 8u : 0u) |
			((acc & ACC_FETCH) && (cpu->efer & KAP_SOFT_EFER_NXE) ? 16u : 0u);
	kap_soft_raise(cpu, KAP_SOFT_XPF, code, true);
}

/* Linear to physical: walks 2-level, PAE or 4-level tables, sets A/D, checks U/S, R/W, NX. */
static uint64_t translate(struct kap_soft_cpu *cpu, uint64_t lin, unsigned int acc)
{
	if (!(cpu->cr0 & KAP_SOFT_CR0_PG)) {
		lin = cpu->mode == 8 ? lin : lin & 0xffffffffULL;
		if (!(acc & ACC_PROBE))
			tlb_fill(cpu, lin, lin & ~0xfffULL, 0x1f, 12, false);
		return lin;
	}
	bool wp = cpu->cr0 & KAP_SOFT_CR0_WP;
	bool nxe = cpu->efer & KAP_SOFT_EFER_NXE;
	bool rw = true, us = true, nx = false;
	uint64_t entries[5], addrs[5];
	unsigned int nent = 0, esz;
	uint64_t table, phys = 0, page_mask = 0xfff;
	int levels, shift;
	if (!(cpu->cr4 & KAP_SOFT_CR4_PAE)) {
		levels = 2;
		shift = 22;
		esz = 4;
		table = cpu->cr3 & 0xfffff000ULL;
		lin &= 0xffffffffULL;
	} else if (cpu->efer & KAP_SOFT_EFER_LMA) {
		/* Canonical check (§3.3.7.1): a non-canonical address is #GP, not #PF. */
		if ((uint64_t)((int64_t)(lin << 16) >> 16) != lin)
			FAULT(kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true));
		levels = 4;
		shift = 39;
		esz = 8;
		table = cpu->cr3 & 0x000ffffffffff000ULL;
	} else {
		lin &= 0xffffffffULL;
		uint64_t pdpte =
		    pte_read(cpu, (cpu->cr3 & 0xffffffe0ULL) + ((lin >> 30) & 3) * 8, 8);
		if (!(pdpte & 1))
			FAULT(page_fault(cpu, lin, acc, false, false));
		levels = 2;
		shift = 21;
		esz = 8;
		table = pdpte & 0x000ffffffffff000ULL;
	}
	for (int l = levels; l >= 1; l--, shift -= (esz == 4 ? 10 : 9)) {
		unsigned int bits = esz == 4 ? 10 : 9;
		uint64_t idx = (lin >> shift) & ((1ULL << bits) - 1);
		uint64_t a = table + idx * esz;
		uint64_t e = pte_read(cpu, a, esz);
		if (!(e & 1))
			FAULT(page_fault(cpu, lin, acc, false, false));
		entries[nent] = e;
		addrs[nent++] = a;
		rw &= (e >> 1) & 1;
		us &= (e >> 2) & 1;
		if (esz == 8 && nxe)
			nx |= (e >> 63) & 1;
		bool large =
		    l > 1 && (e & 0x80) &&
		    (esz == 8 ? (shift == 21 || shift == 30) : (cpu->cr4 & KAP_SOFT_CR4_PSE));
		if (large || l == 1) {
			page_mask = (1ULL << shift) - 1;
			if (esz == 4 && large)
				phys = (e & 0xffc00000ULL) | ((e & 0x1fe000ULL) << 19); /* PSE-36 */
			else
				phys = e & 0x000ffffffffff000ULL & ~page_mask;
			break;
		}
		table = e & (esz == 4 ? 0xfffff000ULL : 0x000ffffffffff000ULL);
	}
	bool user = acc & ACC_USER;
	if ((user && !us) || ((acc & ACC_WRITE) && !rw && (user || wp)) ||
	    ((acc & ACC_FETCH) && nx))
		FAULT(page_fault(cpu, lin, acc, true, false));
	if (acc & ACC_PROBE)
		return phys | (lin & page_mask);
	for (unsigned int i = 0; i < nent; i++)
		pte_set(cpu, addrs[i], esz, 0x20); /* accessed */
	if (acc & ACC_WRITE)
		pte_set(cpu, addrs[nent - 1], esz, 0x40); /* dirty, in the leaf */
	uint64_t leaf = entries[nent - 1];
	bool dirty = (leaf & 0x40) || (acc & ACC_WRITE);
	unsigned int perm = (us ? TLB_R_USER : 0) | (!nx ? TLB_X_SUP : 0) |
			    (!nx && us ? TLB_X_USER : 0) | (dirty && (rw || !wp) ? TLB_W_SUP : 0) |
			    (dirty && rw && us ? TLB_W_USER : 0);
	bool global = (leaf & 0x100) && (cpu->cr4 & KAP_SOFT_CR4_PGE);
	tlb_fill(cpu, lin, (phys | (lin & page_mask)) & ~0xfffULL, perm,
		 (unsigned int)__builtin_ctzll(page_mask + 1), global);
	return phys | (lin & page_mask);
}

/* ---- linear and segmented access ---- */

/* Loads and stores of the 1, 2, 4 and 8 bytes instructions use, inline (n is 8 at most). */
static inline uint64_t host_load(const uint8_t *p, unsigned int n)
{
	uint64_t v = 0;
	switch (n) {
	case 1:
		return *p;
	case 2: {
		uint16_t x;
		memcpy(&x, p, 2);
		return x;
	}
	case 4: {
		uint32_t x;
		memcpy(&x, p, 4);
		return x;
	}
	case 8:
		memcpy(&v, p, 8);
		return v;
	}
	memcpy(&v, p, n);
	return v;
}

static inline void host_store(uint8_t *p, unsigned int n, uint64_t v)
{
	switch (n) {
	case 1:
		*p = (uint8_t)v;
		return;
	case 2: {
		uint16_t x = (uint16_t)v;
		memcpy(p, &x, 2);
		return;
	}
	case 4: {
		uint32_t x = (uint32_t)v;
		memcpy(p, &x, 4);
		return;
	}
	}
	memcpy(p, &v, n);
}

/* buf: for n up to 8 a uint64_t, little-endian, else n bytes (kap_soft_read_buf/write_buf). */
static void lin_access(struct kap_soft_cpu *cpu, uint64_t lin, void *buf, unsigned int n,
		       unsigned int acc)
{
	if (cpu->mode != 8)
		lin &= 0xffffffffULL;
	if ((lin & 0xfff) + n <= 0x1000) {
		/* Through the TLB; a store is followed by the code-page check (kap_soft_stored),
		 * which drops translations from the page, this vCPU's and the others'. */
		struct kap_soft_tlb_entry *e = tlb_find(cpu, lin, acc);
		if (e) {
			uint8_t *p = tlb_host(e, lin);
			if (acc & ACC_WRITE) {
				if (n <= 8)
					host_store(p, n, *(const uint64_t *)buf);
				else
					memcpy(p, buf, n); /* kap_soft_write_buf: SSE, FXSAVE */
				kap_soft_stored(cpu, p);
			} else if (n <= 8) {
				*(uint64_t *)buf = host_load(p, n);
			} else {
				memcpy(buf, p, n);
			}
			return;
		}
	}
	if ((lin & 0xfff) + n > 0x1000) {
		/* Crossing a page: check both pages before touching either. */
		unsigned int first = 0x1000 - (unsigned int)(lin & 0xfff);
		uint64_t p1 = translate(cpu, lin, acc);
		uint64_t p2 = translate(cpu, lin + first, acc);
		phys_access(cpu, p1, buf, first, acc & ACC_WRITE);
		phys_access(cpu, p2, (uint8_t *)buf + first, n - first, acc & ACC_WRITE);
		return;
	}
	phys_access(cpu, translate(cpu, lin, acc), buf, n, acc & ACC_WRITE);
}

uint64_t kap_soft_read_lin(struct kap_soft_cpu *cpu, uint64_t lin, unsigned int n)
{
	uint64_t v = 0;
	lin_access(cpu, lin, &v, n, 0);
	return v;
}

void kap_soft_write_lin(struct kap_soft_cpu *cpu, uint64_t lin, unsigned int n, uint64_t v)
{
	lin_access(cpu, lin, &v, n, ACC_WRITE);
}

/* Segment base and limit check (SDM vol. 3 §5.3): #GP(0), or #SS(0) through SS. */
static uint64_t seg_linear(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n,
			   bool write)
{
	const struct kap_soft_seg *s = &cpu->seg[seg];
	if (cpu->mode == 8)
		return (seg == KAP_SOFT_FS || seg == KAP_SOFT_GS) ? s->base + off : off;
	int vec = seg == KAP_SOFT_SS ? KAP_SOFT_XSS : KAP_SOFT_XGP;
	if (cpu->cr0 & KAP_SOFT_CR0_PE) {
		if (!s->present)
			kap_soft_raise(cpu, vec, 0, true);
		/* Writable data segment for writes; code segments read only when readable. */
		if (write && ((s->type & 8) || !(s->type & 2)))
			kap_soft_raise(cpu, vec, 0, true);
		if (!write && (s->type & 8) && !(s->type & 2))
			kap_soft_raise(cpu, vec, 0, true);
	}
	bool expand_down = !(s->type & 8) && (s->type & 4) && (cpu->cr0 & KAP_SOFT_CR0_PE);
	uint64_t last = off + n - 1;
	if (!expand_down && (off > s->limit || last > s->limit))
		kap_soft_raise(cpu, vec, 0, true);
	if (expand_down && (off <= s->limit || last > (s->db ? 0xffffffffULL : 0xffffULL)))
		kap_soft_raise(cpu, vec, 0, true);
	return (s->base + off) & 0xffffffffULL;
}

uint64_t kap_soft_read_plain(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off,
			     unsigned int n)
{
	uint64_t v = 0;
	lin_access(cpu, seg_linear(cpu, seg, off, n, false), &v, n, cpu->cpl == 3 ? ACC_USER : 0);
	return v;
}

void kap_soft_write_plain(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n,
			  uint64_t v)
{
	lin_access(cpu, seg_linear(cpu, seg, off, n, true), &v, n,
		   ACC_WRITE | (cpu->cpl == 3 ? ACC_USER : 0));
}

/* The memory operand of a LOCK'd instruction goes through atomic.c. */
uint64_t kap_soft_read(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n)
{
	if (cpu->lk.state != KAP_SOFT_LK_OFF)
		return kap_soft_locked_read(cpu, seg, off, n);
	return kap_soft_read_plain(cpu, seg, off, n);
}

void kap_soft_write(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n,
		    uint64_t v)
{
	if (cpu->lk.state != KAP_SOFT_LK_OFF)
		kap_soft_locked_write(cpu, seg, off, n, v);
	else
		kap_soft_write_plain(cpu, seg, off, n, v);
}

uint8_t *kap_soft_write_ptr(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off,
			    unsigned int n)
{
	uint64_t lin = seg_linear(cpu, seg, off, n, true);
	if (cpu->mode != 8)
		lin &= 0xffffffffULL;
	if ((lin & 0xfff) + n > 0x1000)
		return NULL;
	uint64_t gpa = translate(cpu, lin, ACC_WRITE | (cpu->cpl == 3 ? ACC_USER : 0));
	return kap_mem_ptr(&cpu->vm->mem, gpa, n);
}

uint8_t *kap_soft_string_ptr(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off,
			     uint64_t *len, bool write)
{
	uint64_t lin = seg_linear(cpu, seg, off, 1, write); /* 64-bit mode: base only */
	uint64_t room = 0x1000 - (lin & 0xfff);
	if (*len > room)
		*len = room;
	unsigned int acc = (write ? ACC_WRITE : 0) | (cpu->cpl == 3 ? ACC_USER : 0);
	struct kap_soft_tlb_entry *e = tlb_find(cpu, lin, acc);
	if (e)
		return tlb_host(e, lin);
	return kap_mem_ptr(&cpu->vm->mem, translate(cpu, lin, acc), (size_t)*len);
}

/* ---- segment loads (SDM vol. 3 §3.4, §5.4) ---- */

static void seg_from_desc(struct kap_soft_seg *s, uint16_t sel, uint64_t d)
{
	uint32_t limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));
	s->sel = sel;
	s->base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
	s->type = (d >> 40) & 0xf;
	s->s = (d >> 44) & 1;
	s->dpl = (d >> 45) & 3;
	s->present = (d >> 47) & 1;
	s->l = (d >> 53) & 1;
	s->db = (d >> 54) & 1;
	s->g = (d >> 55) & 1;
	s->limit = s->g ? (limit << 12) | 0xfff : limit;
}

/* The descriptor sel names; #GP(sel) when it lies outside its table. */
static uint64_t read_desc(struct kap_soft_cpu *cpu, uint16_t sel, int vec)
{
	uint64_t base = cpu->gdt_base, limit = cpu->gdt_limit;
	if (sel & 4) {
		base = cpu->ldtr.base;
		limit = cpu->ldtr.present ? cpu->ldtr.limit : 0;
		if (!cpu->ldtr.present)
			kap_soft_raise(cpu, vec, sel & 0xfffc, true);
	}
	if ((uint64_t)(sel & ~7u) + 7 > limit)
		kap_soft_raise(cpu, vec, sel & 0xfffc, true);
	return kap_soft_read_lin(cpu, base + (sel & ~7u), 8);
}

void kap_soft_load_seg(struct kap_soft_cpu *cpu, unsigned int seg, uint16_t sel)
{
	struct kap_soft_seg *s = &cpu->seg[seg];
	if (!(cpu->cr0 & KAP_SOFT_CR0_PE) || (cpu->flags & (1ULL << 17))) {
		/* Real and virtual-8086 mode: base = selector * 16, the rest unchanged. */
		s->sel = sel;
		s->base = (uint64_t)sel << 4;
		if (seg == KAP_SOFT_CS)
			kap_soft_update_mode(cpu);
		return;
	}
	if ((sel & ~3u) == 0) {
		/* The null selector: #GP for CS and (outside 64-bit mode) SS; else unusable. */
		if (seg == KAP_SOFT_CS || (seg == KAP_SOFT_SS && cpu->mode != 8))
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
		*s = (struct kap_soft_seg){.sel = sel};
		return;
	}
	uint64_t d = read_desc(cpu, sel, KAP_SOFT_XGP);
	struct kap_soft_seg n;
	seg_from_desc(&n, sel, d);
	if (!n.s)
		kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true);
	if (seg == KAP_SOFT_CS && !(n.type & 8))
		kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true);
	if (seg == KAP_SOFT_SS && ((n.type & 8) || !(n.type & 2)))
		kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true);
	if (seg != KAP_SOFT_CS && seg != KAP_SOFT_SS && (n.type & 0xa) == 0x8)
		kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true); /* execute-only code */
	/*
	 * Privilege (SDM vol. 3 §5.6, §5.8.1): CS by a direct far transfer needs DPL = CPL
	 * (conforming: DPL <= CPL) and RPL <= CPL; SS needs RPL = DPL = CPL; a data segment
	 * (or readable non-conforming code) DPL >= max(CPL, RPL). Gates and calls to other
	 * levels are not here (#UD as not implemented, or #GP).
	 */
	unsigned int rpl = sel & 3, cpl = cpu->cpl;
	bool conforming = (n.type & 0xc) == 0xc;
	if (seg == KAP_SOFT_CS && (conforming ? n.dpl > cpl : (n.dpl != cpl || rpl > cpl)))
		kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true);
	if (seg == KAP_SOFT_SS && (rpl != cpl || n.dpl != cpl))
		kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true);
	if (seg != KAP_SOFT_CS && seg != KAP_SOFT_SS && !conforming &&
	    n.dpl < (rpl > cpl ? rpl : cpl))
		kap_soft_raise(cpu, KAP_SOFT_XGP, sel & 0xfffc, true);
	if (!n.present)
		kap_soft_raise(cpu, seg == KAP_SOFT_SS ? KAP_SOFT_XSS : KAP_SOFT_XNP, sel & 0xfffc,
			       true);
	if (seg == KAP_SOFT_CS)
		n.sel = (uint16_t)((sel & ~3u) | (cpu->cpl & 3));
	/* Accessed bit, as the CPU sets it in the descriptor. */
	if (!(n.type & 1)) {
		uint64_t base = (sel & 4) ? cpu->ldtr.base : cpu->gdt_base;
		kap_soft_write_lin(cpu, base + (sel & ~7u) + 5, 1, (uint8_t)(d >> 40) | 1);
		n.type |= 1;
	}
	*s = n;
	if (seg == KAP_SOFT_CS)
		kap_soft_update_mode(cpu);
}

/* ---- exception delivery (SDM vol. 3 §6.12, §6.14 for 64-bit mode) ---- */

static void push(struct kap_soft_cpu *cpu, unsigned int n, uint64_t v)
{
	uint64_t sp = cpu->r[4] - n;
	if (cpu->mode != 8 && !cpu->seg[KAP_SOFT_SS].db)
		sp &= 0xffff;
	else if (cpu->mode != 8)
		sp &= 0xffffffffULL;
	kap_soft_write(cpu, KAP_SOFT_SS, sp, n, v);
	if (cpu->mode != 8 && !cpu->seg[KAP_SOFT_SS].db)
		cpu->r[4] = (cpu->r[4] & ~0xffffULL) | sp;
	else
		cpu->r[4] = sp;
}

static bool is_contributory(int v)
{
	return v == 0 || (v >= 10 && v <= 13);
}

static void deliver(struct kap_soft_cpu *cpu, int vec, uint32_t code, bool has_code, bool soft_int,
		    uint64_t ret_rip)
{
	uint64_t flags = kap_soft_get_flags(cpu);
	if (!(cpu->cr0 & KAP_SOFT_CR0_PE)) {
		/* Real mode: the IVT at the IDT base (§20.1.4). */
		if ((uint64_t)vec * 4 + 3 > cpu->idt_limit)
			kap_soft_raise(cpu, KAP_SOFT_XGP, 0, false);
		uint32_t ent =
		    (uint32_t)kap_soft_read_lin(cpu, cpu->idt_base + (uint64_t)vec * 4, 4);
		push(cpu, 2, flags);
		push(cpu, 2, cpu->seg[KAP_SOFT_CS].sel);
		push(cpu, 2, ret_rip);
		kap_soft_load_seg(cpu, KAP_SOFT_CS, (uint16_t)(ent >> 16));
		cpu->rip = ent & 0xffff;
		cpu->flags = flags & ~(KAP_SOFT_IF | KAP_SOFT_TF | (1ULL << 18));
		return;
	}
	bool lm = cpu->efer & KAP_SOFT_EFER_LMA;
	unsigned int gsz = lm ? 16 : 8;
	uint32_t ext = soft_int ? 0 : 1;
	if ((uint64_t)vec * gsz + gsz - 1 > cpu->idt_limit)
		kap_soft_raise(cpu, KAP_SOFT_XGP, (uint32_t)vec * 8 + 2 + ext, true);
	uint64_t lo = kap_soft_read_lin(cpu, cpu->idt_base + (uint64_t)vec * gsz, 8);
	uint64_t hi = lm ? kap_soft_read_lin(cpu, cpu->idt_base + (uint64_t)vec * gsz + 8, 8) : 0;
	unsigned int type = (lo >> 40) & 0xf, dpl = (lo >> 45) & 3;
	bool gate32 = type == 0xe || type == 0xf;
	if (!gate32 && !(!lm && (type == 6 || type == 7)))
		kap_soft_raise(cpu, KAP_SOFT_XGP, (uint32_t)vec * 8 + 2 + ext,
			       true); /* task gates too */
	if (soft_int && dpl < cpu->cpl)
		kap_soft_raise(cpu, KAP_SOFT_XGP, (uint32_t)vec * 8 + 2, true);
	if (!((lo >> 47) & 1))
		kap_soft_raise(cpu, KAP_SOFT_XNP, (uint32_t)vec * 8 + 2 + ext, true);
	uint16_t sel = (uint16_t)(lo >> 16);
	uint64_t target = (lo & 0xffff) | ((lo >> 32) & 0xffff0000ULL) | (hi << 32);
	uint64_t d = read_desc(cpu, sel, KAP_SOFT_XGP);
	struct kap_soft_seg cs;
	seg_from_desc(&cs, sel, d);
	if (!cs.s || !(cs.type & 8))
		kap_soft_raise(cpu, KAP_SOFT_XGP, (sel & 0xfffc) + ext, true);
	if (!cs.present)
		kap_soft_raise(cpu, KAP_SOFT_XNP, (sel & 0xfffc) + ext, true);
	unsigned int new_cpl = (cs.type & 4) ? cpu->cpl : cs.dpl; /* conforming keeps CPL */
	if (new_cpl > cpu->cpl)
		kap_soft_raise(cpu, KAP_SOFT_XGP, (sel & 0xfffc) + ext, true);
	uint64_t old_ss = cpu->seg[KAP_SOFT_SS].sel, old_sp = cpu->r[4];
	uint16_t old_cs = cpu->seg[KAP_SOFT_CS].sel;
	unsigned int ist = lm ? (unsigned int)((lo >> 32) & 7) : 0;
	bool stack_switch = new_cpl < cpu->cpl;
	if (lm) {
		/* 64-bit TSS: RSP0-2 at 4, IST1-7 at 36 (§7.7). */
		if (stack_switch || ist) {
			uint64_t off =
			    ist ? 36 + (uint64_t)(ist - 1) * 8 : 4 + (uint64_t)new_cpl * 8;
			if (off + 7 > cpu->tr.limit)
				kap_soft_raise(cpu, KAP_SOFT_XTS, cpu->tr.sel & 0xfffc, true);
			cpu->r[4] = kap_soft_read_lin(cpu, cpu->tr.base + off, 8);
		}
		if (stack_switch)
			cpu->seg[KAP_SOFT_SS] = (struct kap_soft_seg){.sel = (uint16_t)new_cpl};
		cpu->r[4] &= ~0xfULL;
	} else if (stack_switch) {
		/* 32-bit TSS: SS0:ESP0 at 4/8, 8 bytes per level (§7.2.1). */
		uint64_t off = 4 + (uint64_t)new_cpl * 8;
		if (off + 5 > cpu->tr.limit)
			kap_soft_raise(cpu, KAP_SOFT_XTS, cpu->tr.sel & 0xfffc, true);
		uint32_t esp = (uint32_t)kap_soft_read_lin(cpu, cpu->tr.base + off, 4);
		uint16_t ss = (uint16_t)kap_soft_read_lin(cpu, cpu->tr.base + off + 4, 2);
		unsigned int saved_cpl = cpu->cpl;
		cpu->cpl = new_cpl;
		kap_soft_load_seg(cpu, KAP_SOFT_SS, ss);
		cpu->cpl = saved_cpl;
		cpu->r[4] = esp;
	}
	/* From here on the new CS is in force (its size decides the pushes). */
	cs.sel = (uint16_t)((sel & ~3u) | new_cpl);
	cpu->seg[KAP_SOFT_CS] = cs;
	kap_soft_update_mode(cpu);
	unsigned int w = lm ? 8 : (type == 6 || type == 7) ? 2 : 4;
	if (lm || stack_switch) {
		push(cpu, w, old_ss);
		push(cpu, w, old_sp);
	}
	push(cpu, w, flags);
	push(cpu, w, old_cs);
	push(cpu, w, ret_rip);
	if (has_code)
		push(cpu, w, code);
	cpu->rip = lm ? target : (w == 2 ? target & 0xffff : target & 0xffffffffULL);
	uint64_t clear = KAP_SOFT_TF | (1ULL << 14) | (1ULL << 16) | (1ULL << 17);
	if (type == 0xe || type == 6)
		clear |= KAP_SOFT_IF; /* interrupt gates; trap gates leave IF */
	cpu->flags = flags & ~clear;
	cpu->lf_op = KAP_SOFT_LF_NONE;
}

/* Reads up to 15 code bytes at RIP for the fault message; "?" where nothing is readable. */
static void insn_bytes(struct kap_soft_cpu *cpu, char *out, size_t outlen)
{
	snprintf(out, outlen, "?");
	uint64_t lin = (cpu->mode == 8 ? 0 : cpu->seg[KAP_SOFT_CS].base) + cpu->rip;
	if (cpu->mode != 8)
		lin &= 0xffffffffULL;
	uint8_t b[15];
	size_t n = 0;
	/* Byte by byte through the page tables (probing: nothing raised, nothing set). */
	while (n < sizeof(b)) {
		uint64_t gpa = translate(cpu, lin + n, ACC_PROBE);
		if (gpa == ~0ULL || kap_mem_read(&cpu->vm->mem, gpa, &b[n], 1) < 0)
			break;
		n++;
	}
	size_t o = 0;
	for (size_t i = 0; i < n && o + 4 < outlen; i++)
		o += (size_t)snprintf(out + o, outlen - o, "%s%02x", i ? " " : "", b[i]);
}

/*
 * Delivers the exception the run loop caught, as the CPU does (§6.15, table 6-5): a fault
 * while delivering a contributory fault or a page fault is a double fault; one while
 * delivering a double fault is a triple fault, which ends the VM as KVM's shutdown exit does.
 * False when the VM ends.
 */
static bool handle_exception(struct kap_soft_cpu *cpu)
{
	if (cpu->delivering >= 0) {
		int first = cpu->delivering, vec = cpu->exc_vector;
		if (first == KAP_SOFT_XDF) {
			char bytes[64], msg[256];
			insn_bytes(cpu, bytes, sizeof(bytes));
			snprintf(msg, sizeof(msg),
				 "guest fault on vCPU %u: triple fault (shutdown) at RIP 0x%" PRIx64
				 " (instruction bytes %s)",
				 cpu->id, cpu->rip, bytes);
			atomic_fetch_add_explicit(&cpu->vcpu->exits[KAP_EXIT_FAULT], 1,
						  memory_order_relaxed);
			kap_vm_request_exit(cpu->vm, KAP_VM_FAULT, 0, msg);
			return false;
		}
		/* Contributory or #PF, then contributory or #PF: #DF, but not contributory, #PF. */
		if ((is_contributory(first) || first == KAP_SOFT_XPF) &&
		    (is_contributory(vec) || (vec == KAP_SOFT_XPF && first == KAP_SOFT_XPF))) {
			cpu->exc_vector = KAP_SOFT_XDF;
			cpu->exc_code = 0;
			cpu->exc_has_code = true;
		}
	}
	cpu->delivering = cpu->exc_vector;
	if (setjmp(cpu->jb))
		return handle_exception(cpu);
	deliver(cpu, cpu->exc_vector, cpu->exc_code, cpu->exc_has_code, false, cpu->rip);
	cpu->delivering = -1;
	return true;
}

_Noreturn void kap_soft_unimplemented(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	if (!cpu->ud_logged) {
		char bytes[64];
		insn_bytes(cpu, bytes, sizeof(bytes));
		kap_warn("vm: soft CPU: vCPU %u: instruction at RIP 0x%" PRIx64
			 " (bytes %s) is not implemented: #UD to the guest (logged once)",
			 cpu->id, cpu->rip, bytes);
		cpu->ud_logged = true;
	}
	(void)d;
	kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
}

/* INT n, INT3, INTO: software interrupts return after the instruction. */
void kap_soft_int(struct kap_soft_cpu *cpu, int vec, bool soft);
void kap_soft_int(struct kap_soft_cpu *cpu, int vec, bool soft)
{
	cpu->delivering = vec;
	deliver(cpu, vec, 0, false, soft, cpu->next_rip);
	cpu->delivering = -1;
	cpu->next_rip = cpu->rip;
}

/* ---- devices, time, MSRs, CPUID ---- */

uint32_t kap_soft_in(struct kap_soft_cpu *cpu, uint16_t port, unsigned int n)
{
	uint32_t v = 0;
	kap_soft_jit_kick(cpu);
	atomic_fetch_add_explicit(&cpu->vcpu->exits[KAP_EXIT_IO], 1, memory_order_relaxed);
	kap_bus_access(&cpu->vm->pio, port, &v, n, false);
	return v;
}

void kap_soft_out(struct kap_soft_cpu *cpu, uint16_t port, unsigned int n, uint32_t v)
{
	kap_soft_jit_kick(cpu);
	atomic_fetch_add_explicit(&cpu->vcpu->exits[KAP_EXIT_IO], 1, memory_order_relaxed);
	kap_bus_access(&cpu->vm->pio, port, &v, n, true);
	/* The write asked the vCPUs to park (ACPI S3's SLP_EN, pause.c): nothing after this
	 * instruction runs before they do, as KVM's immediate_exit gives. */
	if (atomic_load_explicit(&cpu->vm->pause_req, memory_order_acquire))
		cpu->stop_block = true;
}

void kap_soft_halt(struct kap_soft_cpu *cpu)
{
	struct kap_vm *vm = cpu->vm;
	bool ints = (cpu->flags & KAP_SOFT_IF) && !cpu->wait_sipi;
	while (!atomic_load(&vm->stop) &&
	       !atomic_load_explicit(&vm->pause_req, memory_order_acquire)) {
		uint64_t now = kap_soft_now_ns(), wait = 10 * 1000 * 1000;
		uint64_t next = kap_soft_pit_poll(vm->soft_pit, now);
		uint64_t lnext = kap_soft_lapic_poll(cpu->lapic, now);
		/* NMI and INIT end HLT whatever IF says; STARTUP ends only wait-for-SIPI: a halted
		 * vCPU ignores one that comes alone (with an INIT not taken yet, it is the INIT's).
		 */
		unsigned int ev = kap_soft_lapic_has_events(cpu->lapic);
		if (ev == KAP_SOFT_EV_SIPI && !cpu->wait_sipi) {
			kap_soft_lapic_drop_events(cpu->lapic, ev);
			continue; /* look again: something may have come meanwhile */
		}
		if (ev)
			return;
		if (ints && (kap_soft_lapic_pending(cpu->lapic) ||
			     (kap_soft_pic_pending(vm->soft_pic) &&
			      kap_soft_lapic_accepts_pic(cpu->lapic, cpu->apic_base))))
			return;
		/* Until the next timer tick or a device's interrupt (kap_soft_wake), at most 10 ms:
		 * the stop and pause requests are seen that often. */
		if (lnext && (!next || lnext < next))
			next = lnext;
		if (ints && next && next > now && next - now < wait)
			wait = next - now;
		uint64_t until = kap_soft_host_ns(now + wait); /* the guest clock's, state.c */
		struct timespec ts = {.tv_sec = (time_t)(until / 1000000000ULL),
				      .tv_nsec = (long)(until % 1000000000ULL)};
		pthread_mutex_lock(&cpu->halt_lock);
		if (!cpu->woken)
			pthread_cond_timedwait(&cpu->halt_cond, &cpu->halt_lock, &ts);
		cpu->woken = false;
		pthread_mutex_unlock(&cpu->halt_lock);
	}
}

void kap_soft_kick(struct kap_vm *vm, unsigned int id)
{
	struct kap_soft_cpu *cpu = id < vm->ncpus ? vm->vcpus[id].soft : NULL;
	if (!cpu)
		return;
	pthread_mutex_lock(&cpu->halt_lock);
	cpu->woken = true;
	pthread_cond_signal(&cpu->halt_cond);
	pthread_mutex_unlock(&cpu->halt_lock);
}

void kap_soft_wake(struct kap_vm *vm)
{
	for (unsigned int i = 0; i < vm->ncpus; i++)
		kap_soft_kick(vm, i);
}

/*
 * What APIC messages left for this vCPU (lapic.c): INIT resets it to wait for a STARTUP, a
 * STARTUP starts a waiting vCPU in real mode at vector << 12 (SDM vol. 3 §9.4.4; ignored
 * otherwise), an NMI is taken through IDT vector 2 unless one is being handled (then it waits
 * for the IRET that ends that one, §6.7.1).
 */
static void take_events(struct kap_soft_cpu *cpu)
{
	unsigned int vec = 0, ev = kap_soft_lapic_take_events(cpu->lapic, &vec);
	if (ev & KAP_SOFT_EV_INIT) {
		init_reset(cpu);
		kap_soft_lapic_init_reset(cpu->lapic);
	}
	if ((ev & KAP_SOFT_EV_SIPI) && cpu->wait_sipi) {
		cpu->wait_sipi = false;
		cpu->seg[KAP_SOFT_CS].sel = (uint16_t)((vec & 0xff) << 8);
		cpu->seg[KAP_SOFT_CS].base = (uint64_t)(vec & 0xff) << 12;
		cpu->rip = 0;
		kap_soft_update_mode(cpu);
		kap_debug("vm: soft vCPU %u: STARTUP at 0x%x", cpu->id, (vec & 0xff) << 12);
	}
	if ((ev & KAP_SOFT_EV_NMI) && !cpu->wait_sipi)
		cpu->nmi_pending = true;
	if (cpu->nmi_pending && !cpu->nmi_blocked && !cpu->wait_sipi) {
		cpu->nmi_pending = false;
		cpu->nmi_blocked = true;
		cpu->halted = false;
		cpu->delivering = 2;
		deliver(cpu, 2, 0, false, false, cpu->rip);
		cpu->delivering = -1;
	}
}

/*
 * At a block boundary: IRQ 0 when the PIT is due (looked at every 64 blocks: the clock costs
 * more than a short block), then an external interrupt from the PIC if IF allows it (SDM vol. 3
 * §6.8.1), through the IDT like an exception but with no error code. True when it delivered one
 * or took an APIC event (NMI, INIT, STARTUP): either moves RIP.
 */
static bool take_interrupt(struct kap_soft_cpu *cpu)
{
	struct kap_vm *vm = cpu->vm;
	bool moved = false;
	if ((++cpu->poll & 15) == 0) {
		/* NMI, INIT, STARTUP: each 16th block is soon enough (a halted vCPU is woken) */
		if (kap_soft_lapic_has_events(cpu->lapic) || cpu->nmi_pending) {
			take_events(cpu);
			moved = true;
		}
	}
	if ((cpu->poll & 63) == 0) {
		uint64_t now = kap_soft_now_ns();
		kap_soft_pit_poll(vm->soft_pit, now);
		kap_soft_lapic_poll(cpu->lapic, now);
	}
	if (cpu->wait_sipi)
		return true; /* INIT: no interrupts until a STARTUP */
	if (cpu->int_shadow) {
		cpu->int_shadow = false;
		return moved;
	}
	if (!(cpu->flags & KAP_SOFT_IF))
		return moved;
	/* The LAPIC's own vectors outrank the 8259's ExtINT (§10.8.1's priority scheme aside). */
	int vec = -1;
	if (kap_soft_lapic_pending(cpu->lapic))
		vec = kap_soft_lapic_ack(cpu->lapic);
	if (vec < 0 && kap_soft_pic_pending(vm->soft_pic) &&
	    kap_soft_lapic_accepts_pic(cpu->lapic, cpu->apic_base))
		vec = kap_soft_pic_ack(vm->soft_pic);
	if (vec < 0)
		return moved;
	cpu->delivering = vec;
	deliver(cpu, vec, 0, false, false, cpu->rip);
	cpu->delivering = -1;
	return true;
}

uint64_t kap_soft_rdtsc(struct kap_soft_cpu *cpu)
{
	/* A 1 GHz TSC: one tick a nanosecond (CPUID leaf 0x15 says so), of the guest clock,
	 * which a pause stops (state.c). */
	return kap_soft_now_ns() + (uint64_t)cpu->tsc_offset;
}

/*
 * IA32_ARCH_CAPABILITIES (SDM vol. 4 table 2-2): the soft CPU neither speculates nor keeps
 * microarchitectural buffers, so it reports itself free of every bug these bits name: RDCL_NO
 * (Meltdown, L1TF), IBRS_ALL (enhanced IBRS), SKIP_L1DFL_VMENTRY, SSB_NO, MDS_NO,
 * IF_PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, BHI_NO, PBRSB_NO, GDS_NO,
 * RFDS_NO and ITS_NO (bit 62). Without it Linux takes the model (Skylake-SP) as vulnerable and
 * boots with page-table isolation, retpolines, return thunks and VERW on each return to user
 * mode, which the soft CPU pays for in full (docs/vm.md).
 */
#define KAP_SOFT_ARCH_CAPS                                                                         \
	((1ULL << 0) | (1ULL << 1) | (1ULL << 3) | (1ULL << 4) | (1ULL << 5) | (1ULL << 6) |       \
	 (1ULL << 8) | (1ULL << 13) | (1ULL << 14) | (1ULL << 15) | (1ULL << 20) | (1ULL << 24) |  \
	 (1ULL << 26) | (1ULL << 27) | (1ULL << 62))

bool kap_soft_rdmsr(struct kap_soft_cpu *cpu, uint32_t index, uint64_t *v)
{
	switch (index) {
	case 0x10:
		*v = kap_soft_rdtsc(cpu);
		return true;
	case 0x3b:
		*v = (uint64_t)cpu->tsc_adjust;
		return true;
	case 0x48:
		*v = cpu->spec_ctrl;
		return true;
	case 0x10a:
		*v = KAP_SOFT_ARCH_CAPS;
		return true;
	case 0x1b:
		*v = cpu->apic_base;
		return true;
	case 0x174:
		*v = cpu->sysenter_cs;
		return true;
	case 0x175:
		*v = cpu->sysenter_esp;
		return true;
	case 0x176:
		*v = cpu->sysenter_eip;
		return true;
	case 0x1a0:
		*v = cpu->misc_enable;
		return true;
	case 0x277:
		*v = cpu->pat;
		return true;
	case 0x2ff:
		*v = cpu->mtrr_def_type;
		return true;
	case 0xfe: /* MTRRcap: no variable or fixed ranges */
	case 0x8b: /* IA32_BIOS_SIGN_ID: no microcode update loaded */
		*v = 0;
		return true;
	case 0xc0000080:
		*v = cpu->efer;
		return true;
	case 0xc0000081:
		*v = cpu->star;
		return true;
	case 0xc0000082:
		*v = cpu->lstar;
		return true;
	case 0xc0000083:
		*v = cpu->cstar;
		return true;
	case 0xc0000084:
		*v = cpu->fmask;
		return true;
	case 0xc0000100:
		*v = cpu->seg[KAP_SOFT_FS].base;
		return true;
	case 0xc0000101:
		*v = cpu->seg[KAP_SOFT_GS].base;
		return true;
	case 0xc0000102:
		*v = cpu->kernel_gs_base;
		return true;
	}
	return false;
}

bool kap_soft_wrmsr(struct kap_soft_cpu *cpu, uint32_t index, uint64_t v)
{
	switch (index) {
	case 0x10: {
		/* SDM vol. 3 §18.17.3: a write to the TSC moves TSC_ADJUST by as much. */
		int64_t delta = (int64_t)(v - kap_soft_rdtsc(cpu));
		cpu->tsc_offset += delta;
		cpu->tsc_adjust += delta;
		return true;
	}
	case 0x3b:
		cpu->tsc_offset += (int64_t)v - cpu->tsc_adjust;
		cpu->tsc_adjust = (int64_t)v;
		return true;
	case 0x48: /* SPEC_CTRL: IBRS only (CPUID 7.0 EDX[26]; no STIBP or SSBD bit) */
		if (v & ~1ULL)
			return false;
		cpu->spec_ctrl = v;
		return true;
	case 0x49: /* PRED_CMD: IBPB, a barrier with nothing to flush here; write-only */
		return (v & ~1ULL) == 0;
	case 0x8b: /* IA32_BIOS_SIGN_ID: Linux clears it before CPUID(1); nothing to keep */
		return true;
	case 0x1b:
		cpu->apic_base = v;
		return true;
	case 0x174:
		cpu->sysenter_cs = v;
		return true;
	case 0x175:
		cpu->sysenter_esp = v;
		return true;
	case 0x176:
		cpu->sysenter_eip = v;
		return true;
	case 0x1a0:
		cpu->misc_enable = v;
		return true;
	case 0x277:
		cpu->pat = v;
		return true;
	case 0x2ff:
		cpu->mtrr_def_type = v;
		return true;
	case 0xc0000080: {
		/* SCE, LME, NXE are writable; LMA follows LME and CR0.PG (§9.8.5). */
		if (v & ~(1ULL | KAP_SOFT_EFER_LME | KAP_SOFT_EFER_LMA | KAP_SOFT_EFER_NXE))
			return false;
		if ((cpu->cr0 & KAP_SOFT_CR0_PG) && ((v ^ cpu->efer) & KAP_SOFT_EFER_LME))
			return false;
		cpu->efer = (v & ~KAP_SOFT_EFER_LMA) | (cpu->efer & KAP_SOFT_EFER_LMA);
		kap_soft_flush_tlb(cpu); /* NXE changes what the entries allow */
		return true;
	}
	case 0xc0000081:
		cpu->star = v;
		return true;
	case 0xc0000082:
		cpu->lstar = v;
		return true;
	case 0xc0000083:
		cpu->cstar = v;
		return true;
	case 0xc0000084:
		cpu->fmask = v;
		return true;
	case 0xc0000100:
		cpu->seg[KAP_SOFT_FS].base = v;
		return true;
	case 0xc0000101:
		cpu->seg[KAP_SOFT_GS].base = v;
		return true;
	case 0xc0000102:
		cpu->kernel_gs_base = v;
		return true;
	}
	return false;
}

/*
 * The fixed CPUID baseline (docs/vm.md, The soft CPU): an x86-64 with the integer instruction
 * set, no FPU/SSE features (the soft CPU has no x87 or SSE yet), TSC, MSR, PAE, PSE, CX8,
 * CMOV, NX and long mode; the hypervisor bit with "KapselSoftCPU" as the hypervisor's name.
 */
void kap_soft_cpuid(struct kap_soft_cpu *cpu, uint32_t leaf, uint32_t sub, uint32_t out[4])
{
	memset(out, 0, 4 * sizeof(uint32_t));
	switch (leaf) {
	case 0:
		out[0] = 0x15;
		memcpy(&out[1], "Genu", 4); /* EBX, EDX, ECX spell "GenuineIntel" */
		memcpy(&out[3], "ineI", 4);
		memcpy(&out[2], "ntel", 4);
		return;
	case 1:
		/* Family 6 model 0x55 stepping 0; APIC id in EBX[31:24]; CLFLUSH line 64. */
		out[0] = 0x00050650;
		out[1] = (cpu->id << 24) | (1u << 16) | (8u << 8);
		/* SSE3 SSSE3 CX16 SSE4.1 SSE4.2 POPCNT, hypervisor: x86-64-v2 (docs/vm.md). */
		out[2] = (1u << 0) | (1u << 9) | (1u << 13) | (1u << 19) | (1u << 20) | (1u << 23) |
			 (1u << 31);
		/* FPU PSE TSC MSR PAE CX8 APIC CMOV CLFSH MMX FXSR SSE SSE2 */
		out[3] = (1u << 0) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) |
			 (1u << 9) | (1u << 15) | (1u << 19) | (1u << 23) | (1u << 24) |
			 (1u << 25) | (1u << 26);
		return;
	case 7:
		if (sub != 0)
			return;
		out[1] = 1u << 1; /* TSC_ADJUST */
		/* IBRS/IBPB (SPEC_CTRL, PRED_CMD) and ARCH_CAPABILITIES, which says which
		 * speculation bugs this CPU lacks: all of them, it does not speculate. */
		out[3] = (1u << 26) | (1u << 29);
		return;
	case 0x15:
		/* TSC and crystal (the LAPIC timer's clock) at 1 GHz: the host's ns (docs/vm.md).
		 */
		out[0] = 1;
		out[1] = 1;
		out[2] = 1000000000;
		return;
	case 0x40000000:
		out[0] = 0x40000000;
		memcpy(&out[1], "Kaps", 4);
		memcpy(&out[2], "elSo", 4);
		memcpy(&out[3], "ftCP", 4);
		return;
	case 0x80000000:
		out[0] = 0x80000007;
		return;
	case 0x80000007:
		out[3] = 1u << 8; /* invariant TSC: host CLOCK_MONOTONIC runs in every state */
		return;
	case 0x80000001:
		out[2] = (1u << 0) | (1u << 5);		       /* LAHF/SAHF in 64-bit mode, LZCNT */
		out[3] = (1u << 11) | (1u << 20) | (1u << 29); /* SYSCALL, NX, LM */
		return;
	}
}

void kap_soft_read_buf(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, void *buf,
		       unsigned int n)
{
	lin_access(cpu, seg_linear(cpu, seg, off, n, false), buf, n, cpu->cpl == 3 ? ACC_USER : 0);
}

void kap_soft_write_buf(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, const void *buf,
			unsigned int n)
{
	lin_access(cpu, seg_linear(cpu, seg, off, n, true), (void *)buf, n,
		   ACC_WRITE | (cpu->cpl == 3 ? ACC_USER : 0));
}

/* ---- blocks ---- */

/* Marks a RAM page as holding decoded code (stores to it then invalidate). */
static void mark_code(struct kap_soft_cpu *cpu, uint64_t gpa)
{
	int64_t idx = ram_page(cpu, gpa);
	uint64_t me = 1ULL << cpu->id;
	/* Before the bytes are read: a full barrier (a locked OR), so a store another vCPU makes
	 * after this either sees the bit or is seen by the read. */
	if (idx >= 0 && (uint64_t)idx < cpu->npages &&
	    !(atomic_load_explicit(&cpu->code_owners[idx], memory_order_relaxed) & me)) {
		atomic_fetch_or(&cpu->code_owners[idx], me);
		if (cpu->vm->ncpus == 1)
			tlb_drop_writes(cpu, (uint64_t)idx);
	} else {
		atomic_thread_fence(memory_order_seq_cst);
	}
}

/* Fetches up to 15 code bytes at linear lin (the next page only if the first ends early). */
static size_t fetch(struct kap_soft_cpu *cpu, uint64_t lin, uint64_t phys, uint8_t *buf,
		    uint64_t *page2)
{
	size_t first = 0x1000 - (size_t)(phys & 0xfff);
	if (first > KAP_SOFT_MAX_INSN)
		first = KAP_SOFT_MAX_INSN;
	const uint8_t *p = kap_mem_ptr(&cpu->vm->mem, phys, first);
	if (!p)
		kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true); /* executing outside RAM */
	memcpy(buf, p, first);
	if (first == KAP_SOFT_MAX_INSN)
		return first;
	struct kap_soft_insn d;
	if (kap_soft_decode(buf, first, cpu->mode, &d) != KAP_SOFT_DEC_SHORT)
		return first;
	uint64_t lin2 = lin + first;
	uint64_t phys2 = translate(cpu, cpu->mode == 8 ? lin2 : lin2 & 0xffffffffULL,
				   ACC_FETCH | (cpu->cpl == 3 ? ACC_USER : 0));
	size_t rest = KAP_SOFT_MAX_INSN - first;
	const uint8_t *q = kap_mem_ptr(&cpu->vm->mem, phys2, rest);
	if (!q)
		return first;
	mark_code(cpu, phys2);
	memcpy(buf + first, q, rest);
	*page2 = phys2 & ~0xfffULL;
	return KAP_SOFT_MAX_INSN;
}

/* Whether a block ending in o continues at a fixed place: after a direct JMP, Jcc, CALL,
 * LOOP/JCXZ, or at the next instruction (a block cut at a page end or at its maximum length).
 * Indirect branches, returns, interrupts and instructions that end blocks for the machine's
 * sake (MOV to CR, POPF, STI, HLT) are looked up afresh each time. */
static bool fixed_exit(const struct kap_soft_op *o)
{
	if (!o->fn)
		return false;
	unsigned int map = o->d.op >> 8, b = o->d.op & 0xff;
	if (map == KAP_SOFT_MAP_1 && ((b >= 0x70 && b < 0x80) || (b >= 0xe0 && b <= 0xe3) ||
				      b == 0xe8 || b == 0xe9 || b == 0xeb))
		return true;
	if (map == KAP_SOFT_MAP_0F && b >= 0x80 && b < 0x90)
		return true;
	return !kap_soft_insn_ends_block(&o->d);
}

static struct kap_soft_block *translate_block(struct kap_soft_cpu *cpu, uint64_t lin, uint64_t phys)
{
	struct kap_soft_op ops[KAP_SOFT_BLOCK_MAX];
	unsigned int n = 0;
	uint64_t page2 = ~0ULL, p = phys, l = lin;
	mark_code(cpu, phys);
	while (n < KAP_SOFT_BLOCK_MAX) {
		uint8_t buf[KAP_SOFT_MAX_INSN];
		uint64_t pg2 = ~0ULL;
		size_t avail = fetch(cpu, l, p, buf, &pg2);
		struct kap_soft_op *o = &ops[n];
		enum kap_soft_dec r = kap_soft_decode(buf, avail, cpu->mode, &o->d);
		if (r != KAP_SOFT_DEC_OK) {
			if (n > 0)
				break; /* end the block before it; it faults when reached */
			if (r == KAP_SOFT_DEC_SHORT)
				kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
			if (r == KAP_SOFT_DEC_TOOLONG)
				kap_soft_raise(cpu, KAP_SOFT_XGP, 0, true);
			/* An encoding the decoder does not know: a one-instruction block. */
			memset(&o->d, 0, sizeof(o->d));
			o->d.len = 1;
			o->fn = NULL;
			n = 1;
			break;
		}
		o->fn = kap_soft_insn_locked(&o->d) ? kap_soft_exec_locked
						    : kap_soft_exec_lookup(&o->d);
		n++;
		if (pg2 != ~0ULL && (p & 0xfff) + o->d.len > 0x1000) {
			page2 = pg2;
			break;
		}
		p += o->d.len;
		l += o->d.len;
		if (!o->fn || kap_soft_insn_ends_block(&o->d) || (p & 0xfff) == 0)
			break;
	}
	struct kap_soft_block *b = malloc(sizeof(*b) + n * sizeof(b->ops[0]));
	if (!b)
		return NULL;
	b->phys = phys;
	b->page2 = page2;
	b->mode = cpu->mode;
	b->n = n;
	b->chain = fixed_exit(&ops[n - 1]);
	b->link_epoch = cpu->cache->epoch;
	b->link[0] = b->link[1] = NULL;
	b->link_rip[0] = b->link_rip[1] = 0;
	memset(&b->jit, 0, sizeof(b->jit));
	memcpy(b->ops, ops, n * sizeof(ops[0]));
	cache_insert(cpu->cache, b);
	return b;
}

static struct kap_soft_block *find_block(struct kap_soft_cpu *cpu, uint64_t lin, uint64_t phys)
{
	unsigned int h = hash(phys, cpu->mode);
	for (struct kap_soft_block *b = cpu->cache->hash[h]; b; b = b->next)
		if (b->phys == phys && b->mode == cpu->mode)
			return b;
	return translate_block(cpu, lin, phys);
}

/* The pages the VMM wrote since the last look: their translations go (see the top). */
static void take_written(struct kap_soft_cpu *cpu)
{
	struct kap_guest_mem *m = &cpu->vm->mem;
	struct kap_mem_written_rec *w = &m->written->rec[cpu->id];
	if (!atomic_load_explicit(&w->any, memory_order_acquire))
		return;
	atomic_store(&w->any, false);
	uint64_t me = 1ULL << cpu->id;
	for (uint64_t i = 0; i < m->written->words; i++) {
		if (!atomic_load_explicit(&w->bits[i], memory_order_relaxed))
			continue;
		uint64_t bits = atomic_exchange(&w->bits[i], 0);
		while (bits) {
			uint64_t n = i * 64 + (uint64_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			if (n >= cpu->npages ||
			    !(atomic_load_explicit(&cpu->code_owners[n], memory_order_relaxed) &
			      me))
				continue;
			invalidate_page(cpu, page_gpa(cpu, n));
		}
	}
}

static void collect_garbage(struct kap_soft_cpu *cpu)
{
	while (cpu->cache->garbage) {
		struct kap_soft_block *n = cpu->cache->garbage->next;
		free(cpu->cache->garbage);
		cpu->cache->garbage = n;
	}
}

/* The guest-physical address of the code at lin, through the TLB when it has the page. */
static uint64_t fetch_phys(struct kap_soft_cpu *cpu, uint64_t lin)
{
	unsigned int acc = ACC_FETCH | (cpu->cpl == 3 ? ACC_USER : 0);
	struct kap_soft_tlb_entry *e = tlb_find(cpu, lin, acc);
	if (e)
		return cpu->tlb.phys[(lin >> 12) & (KAP_SOFT_TLB_SIZE - 1)] | (lin & 0xfff);
	return translate(cpu, lin, acc);
}

/*
 * The block at CS:RIP. prev, when not NULL, is the block that ran just before with nothing
 * between (no interrupt, no exception): its links are tried before the hash table, and the
 * block found becomes one of them.
 */
static struct kap_soft_block *next_block(struct kap_soft_cpu *cpu, struct kap_soft_block *prev)
{
	uint64_t lin = (cpu->mode == 8 ? 0 : cpu->seg[KAP_SOFT_CS].base) + cpu->rip;
	if (cpu->mode != 8)
		lin &= 0xffffffffULL;
	uint64_t phys = fetch_phys(cpu, lin);
	if (!prev || !prev->chain)
		return find_block(cpu, lin, phys);
	if (prev->link_epoch != cpu->cache->epoch) {
		prev->link_epoch = cpu->cache->epoch;
		prev->link[0] = prev->link[1] = NULL;
	}
	for (int i = 0; i < 2; i++) {
		struct kap_soft_block *l = prev->link[i];
		if (l && prev->link_rip[i] == cpu->rip && l->phys == phys && l->mode == cpu->mode)
			return l;
	}
	struct kap_soft_block *b = find_block(cpu, lin, phys);
	if (b && prev->link_epoch == cpu->cache->epoch) { /* translating dropped nothing */
		int i = prev->link[0] ? (prev->link[1] ? (int)(cpu->rip & 1) : 1) : 0;
		prev->link[i] = b;
		prev->link_rip[i] = cpu->rip;
	}
	return b;
}

/* Runs block b; returns normally or through an exception (longjmp to the caller's setjmp). */
static struct kap_soft_block *run_block(struct kap_soft_cpu *cpu, struct kap_soft_block *b)
{
	cpu->stop_block = false;
	if (cpu->jit && kap_soft_jit_ready(cpu, b))
		return kap_soft_jit_run(cpu, b); /* the last block it ran */
	/* The code size is the block's throughout: what changes it ends the block. */
	uint64_t ipmask = b->mode == 8 ? ~0ULL : b->mode == 4 ? 0xffffffffULL : 0xffffULL;
	for (unsigned int i = 0; i < b->n; i++) {
		const struct kap_soft_op *o = &b->ops[i];
		cpu->next_rip = (cpu->rip + o->d.len) & ipmask;
		if (!o->fn)
			kap_soft_unimplemented(cpu, &o->d);
		o->fn(cpu, &o->d);
		cpu->rip = cpu->next_rip;
		if (cpu->stop_block)
			break;
	}
	return b;
}

void kap_soft_vcpu_run(struct kap_vcpu *v)
{
	struct kap_soft_cpu *cpu = v->soft;
	struct kap_vm *vm = v->vm;
	while (!atomic_load_explicit(&vm->stop, memory_order_relaxed)) {
		if (atomic_load_explicit(&vm->pause_req, memory_order_acquire)) {
			kap_vm_park(v);
			continue;
		}
		collect_garbage(cpu);
		if (setjmp(cpu->jb)) {
			kap_soft_locked_abort(cpu);
			if (!handle_exception(cpu))
				break;
			continue;
		}
		if (cpu->wait_sipi || kap_soft_lapic_has_events(cpu->lapic))
			take_events(cpu);
		/* Block boundaries: where interrupts and the VMM's writes are looked at each time,
		 * the stop and pause flags every 256 blocks. prev: the block that just ran, for
		 * chaining (after an exception, an interrupt or an APIC event the loop starts again
		 * without one). */
		struct kap_soft_block *prev = NULL;
		for (unsigned int i = 0; i < 256 && !cpu->halted && !cpu->wait_sipi; i++) {
			take_written(cpu);
			if (take_interrupt(cpu))
				prev = NULL;
			if (cpu->wait_sipi)
				break;
			struct kap_soft_block *b = next_block(cpu, prev);
			if (!b) {
				kap_vm_request_exit(cpu->vm, KAP_VM_FAULT, 0,
						    "soft CPU: out of memory");
				break;
			}
			prev = NULL; /* until it completes */
			struct kap_soft_block *last = run_block(cpu, b);
			if (cpu->cache->garbage)
				break;
			prev = cpu->stop_block ? NULL : last;
			if (cpu->stop_block &&
			    atomic_load_explicit(&vm->pause_req, memory_order_acquire))
				break;
		}
		if (cpu->halted || cpu->wait_sipi) {
			kap_soft_halt(cpu);
			/* A pause or a stop ended the wait, not an interrupt: still halted (a
			 * snapshot records that; a resume halts again). */
			if (!atomic_load(&vm->pause_req) && !atomic_load(&vm->stop))
				cpu->halted = false;
		}
	}
	kap_debug("vm: soft vCPU %u stopped at CS:RIP 0x%x:0x%" PRIx64 " (%u-bit code)", cpu->id,
		  cpu->seg[KAP_SOFT_CS].sel, cpu->rip, cpu->mode * 8);
	if (cpu->jit)
		kap_debug("vm: soft vCPU %u: %" PRIu64 " blocks compiled to host code (%" PRIu64
			  " full code buffers)",
			  cpu->id, cpu->jit->compiled, cpu->jit->flushes);
}
