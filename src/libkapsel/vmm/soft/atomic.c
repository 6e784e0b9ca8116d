/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LOCK'd instructions and XCHG with memory on the soft CPU, for guests with several vCPUs, one
 * host thread each (docs/vm.md, Several vCPUs). The instruction's own handler (exec.c) runs
 * unchanged; its one memory operand, which it reads once and writes once, comes here instead
 * of plain memory (kap_soft_read/write see lk.state):
 *
 * - An operand in RAM, inside one page and aligned to its size (1, 2, 4 or 8 bytes), is read
 *   with a host atomic load, and the write is a host compare-and-swap against the value read.
 *   When another vCPU changed the operand in between, the swap fails, the registers and flags
 *   go back to what they were and the instruction runs again: the read-modify-write as a whole
 *   is atomic, as LOCK makes it on hardware (SDM vol. 3 §9.1.2). CMPXCHG that does not match
 *   still writes the old value back, as the CPU does, so its compare is atomic too.
 * - Anything else (a misaligned operand, one that crosses a page, MMIO) takes one process-wide
 *   mutex for the instruction, the "split lock". That makes such instructions atomic against
 *   each other, not against aligned atomics or plain stores of other vCPUs on the same bytes;
 *   hardware makes split locks atomic against everything, and slow (guests avoid them: Linux
 *   warns about them, split_lock_detect).
 *
 * The page checks happen on the read with write access (a locked operand is written even when
 * CMPXCHG fails), and a fault in the middle puts the registers back first, so the exception is
 * precise. Plain loads and stores are plain host ones: x86-64 hosts are TSO as the guest
 * expects; MFENCE is a host fence (exec-sys.c), and a host CAS is a full barrier like LOCK.
 */
#include <pthread.h>
#include <string.h>

#include "vmm/soft/exec.h"
#include "vmm/soft/soft.h"

static pthread_mutex_t split_lock = PTHREAD_MUTEX_INITIALIZER;

/* What LOCK may prefix, with a memory destination (SDM vol. 2, LOCK). XCHG locks itself. */
bool kap_soft_insn_locked(const struct kap_soft_insn *d)
{
	unsigned int map = d->op >> 8, b = d->op & 0xff;
	if (d->pfx & KAP_SOFT_PFX_LOCK)
		return true; /* kap_soft_exec_locked: #UD where LOCK may not be */
	return map == KAP_SOFT_MAP_1 && (b == 0x86 || b == 0x87) && d->mod != 3;
}

static bool lockable(const struct kap_soft_insn *d)
{
	unsigned int map = d->op >> 8, b = d->op & 0xff, reg = d->reg & 7;
	if (!d->has_modrm || d->mod == 3)
		return false;
	if (map == KAP_SOFT_MAP_1) {
		if (b < 0x40)
			return (b & 6) == 0 && (b >> 3) != 7; /* op Eb,Gb / Ev,Gv; not CMP */
		if (b >= 0x80 && b <= 0x83)
			return reg != 7;
		if (b == 0xf6 || b == 0xf7)
			return reg == 2 || reg == 3; /* NOT, NEG */
		if (b == 0xfe || b == 0xff)
			return reg <= 1; /* INC, DEC */
		return b == 0x86 || b == 0x87;
	}
	if (map == KAP_SOFT_MAP_0F) {
		if (b == 0xab || b == 0xb3 || b == 0xbb || b == 0xb0 || b == 0xb1 || b == 0xc0 ||
		    b == 0xc1)
			return true;
		if (b == 0xba)
			return reg >= 5; /* BTS, BTR, BTC */
		if (b == 0xc7)
			return reg == 1; /* CMPXCHG8B/16B */
	}
	return false;
}

static void save(struct kap_soft_cpu *cpu)
{
	struct kap_soft_locked *k = &cpu->lk;
	memcpy(k->r, cpu->r, sizeof(k->r));
	k->flags = cpu->flags;
	k->lf_a = cpu->lf_a;
	k->lf_b = cpu->lf_b;
	k->lf_res = cpu->lf_res;
	k->lf_op = cpu->lf_op;
	k->lf_size = cpu->lf_size;
	k->lf_cf = cpu->lf_cf;
	k->next_rip = cpu->next_rip;
}

static void restore(struct kap_soft_cpu *cpu)
{
	const struct kap_soft_locked *k = &cpu->lk;
	memcpy(cpu->r, k->r, sizeof(k->r));
	cpu->flags = k->flags;
	cpu->lf_a = k->lf_a;
	cpu->lf_b = k->lf_b;
	cpu->lf_res = k->lf_res;
	cpu->lf_op = k->lf_op;
	cpu->lf_size = k->lf_size;
	cpu->lf_cf = k->lf_cf;
	cpu->next_rip = k->next_rip;
}

void kap_soft_exec_locked(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	kap_soft_exec_fn fn = kap_soft_exec_lookup(d);
	if (!fn)
		kap_soft_unimplemented(cpu, d);
	if (!lockable(d))
		kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false); /* LOCK where it may not be */
	save(cpu);
	for (;;) {
		cpu->lk.state = KAP_SOFT_LK_ARMED;
		fn(cpu, d);
		int st = cpu->lk.state;
		cpu->lk.state = KAP_SOFT_LK_OFF;
		if (st == KAP_SOFT_LK_SPLIT)
			pthread_mutex_unlock(&split_lock);
		if (st != KAP_SOFT_LK_FAILED)
			return;
		restore(cpu); /* another vCPU got there first: again, from the new value */
		__builtin_ia32_pause();
	}
}

void kap_soft_locked_abort(struct kap_soft_cpu *cpu)
{
	int st = cpu->lk.state;
	if (st == KAP_SOFT_LK_OFF)
		return;
	cpu->lk.state = KAP_SOFT_LK_OFF;
	if (st == KAP_SOFT_LK_SPLIT)
		pthread_mutex_unlock(&split_lock);
	restore(cpu);
}

static uint64_t load(const uint8_t *p, unsigned int n)
{
	switch (n) {
	case 1:
		return __atomic_load_n(p, __ATOMIC_SEQ_CST);
	case 2:
		return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_SEQ_CST);
	case 4:
		return __atomic_load_n((const uint32_t *)(const void *)p, __ATOMIC_SEQ_CST);
	default:
		return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_SEQ_CST);
	}
}

static bool cas(uint8_t *p, unsigned int n, uint64_t old, uint64_t v)
{
	switch (n) {
	case 1: {
		uint8_t o = (uint8_t)old;
		return __atomic_compare_exchange_n(p, &o, (uint8_t)v, false, __ATOMIC_SEQ_CST,
						   __ATOMIC_SEQ_CST);
	}
	case 2: {
		uint16_t o = (uint16_t)old;
		return __atomic_compare_exchange_n((uint16_t *)(void *)p, &o, (uint16_t)v, false,
						   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	}
	case 4: {
		uint32_t o = (uint32_t)old;
		return __atomic_compare_exchange_n((uint32_t *)(void *)p, &o, (uint32_t)v, false,
						   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	}
	default:
		return __atomic_compare_exchange_n((uint64_t *)(void *)p, &old, v, false,
						   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	}
}

uint64_t kap_soft_locked_read(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off,
			      unsigned int n)
{
	struct kap_soft_locked *k = &cpu->lk;
	if (k->state != KAP_SOFT_LK_ARMED)
		return kap_soft_read_plain(cpu, seg, off, n);
	uint8_t *p =
	    (n == 1 || n == 2 || n == 4 || n == 8) ? kap_soft_write_ptr(cpu, seg, off, n) : NULL;
	if (p && ((uintptr_t)p & (n - 1)) == 0) {
		k->host = p;
		k->n = n;
		k->old = load(p, n);
		k->state = KAP_SOFT_LK_READ;
		return k->old;
	}
	pthread_mutex_lock(&split_lock);
	k->state = KAP_SOFT_LK_SPLIT;
	return kap_soft_read_plain(cpu, seg, off, n);
}

void kap_soft_locked_write(struct kap_soft_cpu *cpu, unsigned int seg, uint64_t off, unsigned int n,
			   uint64_t v)
{
	struct kap_soft_locked *k = &cpu->lk;
	if (k->state == KAP_SOFT_LK_READ && n == k->n) {
		k->state = cas(k->host, n, k->old, v) ? KAP_SOFT_LK_DONE : KAP_SOFT_LK_FAILED;
		if (k->state == KAP_SOFT_LK_DONE)
			kap_soft_stored(cpu, k->host); /* translated code there goes */
		return;
	}
	if (k->state == KAP_SOFT_LK_FAILED)
		return; /* it runs again */
	kap_soft_write_plain(cpu, seg, off, n, v);
}
