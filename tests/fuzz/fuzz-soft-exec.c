/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's instruction handlers over arbitrary code and operands (guest code, its
 * registers and the memory it points at are all guest-controlled). A one-vCPU soft VM with
 * 4 MiB of RAM, the boot GDT (and, in long mode, the identity page tables) that a real boot
 * gives, no devices: the input's first byte picks 32-bit protected or 64-bit long mode, the
 * next 128 bytes are RAX..R15, the rest is code at 1 MiB. Up to 128 instructions run through
 * exec.c's handlers as the run loop would call them (decode, the locked or plain handler,
 * next_rip); an exception skips the instruction instead of being delivered, so one input runs
 * many handlers. A REP string instruction does up to 4096 iterations per visit and stays at
 * its RIP until done: after four such visits the input ends (a huge count into unclaimed MMIO
 * would otherwise take longer than run.sh's 10 s timeout).
 * Whatever the code does (page tables, control registers, segment loads, MMIO
 * and port I/O to nothing, x87/SSE state), kapsel must not crash or trip a sanitizer.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/soft/soft.h"
#include "vmm/vmm.h"
#include "vmm/x86/boot.h"

#define RAM  (4u << 20)
#define CODE 0x100000u

static struct kap_vm *vm;

static void setup(void)
{
	struct kapsel_error *err = NULL;
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		abort();
	vm->fd = -EBADF;
	vm->soft = true;
	vm->ncpus = 1;
	pthread_mutex_init(&vm->end_lock, NULL);
	kap_bus_init(&vm->pio, "pio");
	kap_bus_init(&vm->mmio, "mmio");
	if (kap_mem_init(&vm->mem, RAM, 0, &err) < 0 ||
	    kap_mem_track_written(&vm->mem, 1, &err) < 0 || kap_loop_init(&vm->loop, &err) < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!vm)
		setup();
	if (size < 1 + 128)
		return 0;
	struct kapsel_error *err = NULL;
	bool lm = data[0] & 1;
	memset(vm->mem.host, 0, RAM);
	if (kap_x86_write_boot_tables(vm, lm, 0, &err) < 0)
		abort();
	size_t n = size - 129 < 4096 ? size - 129 : 4096;
	memcpy(vm->mem.host + CODE, data + 129, n);
	struct kap_boot_entry entry = {.long_mode = lm,
				       .rip = CODE,
				       .rsp = 0x80000,
				       .gdt = KAP_BOOT_GDT,
				       .cr3 = KAP_BOOT_PML4};
	vm->stop = false;
	vm->end = KAP_VM_RUNNING;
	if (kap_soft_vcpu_create(vm, 0, &entry, &err) < 0)
		abort();
	struct kap_soft_cpu *cpu = vm->vcpus[0].soft;
	memcpy(cpu->r, data + 1, 128);
	volatile unsigned int again = 0;
	for (volatile unsigned int step = 0; step < 128 && again < 4 && !cpu->halted; step++) {
		/* Fetch as the boot mappings put it: linear = physical (the guest may change
		 * that; then these are just other bytes of RAM). */
		uint64_t lin = cpu->mode == 8
				   ? cpu->rip
				   : (cpu->seg[KAP_SOFT_CS].base + cpu->rip) & 0xffffffffu;
		if (lin >= RAM)
			break;
		size_t avail = RAM - lin < KAP_SOFT_MAX_INSN ? RAM - lin : KAP_SOFT_MAX_INSN;
		struct kap_soft_insn d;
		if (kap_soft_decode(vm->mem.host + lin, avail, cpu->mode, &d) != KAP_SOFT_DEC_OK)
			break;
		kap_soft_exec_fn fn =
		    kap_soft_insn_locked(&d) ? kap_soft_exec_locked : kap_soft_exec_lookup(&d);
		uint64_t ipmask = cpu->mode == 8   ? ~0ULL
				  : cpu->mode == 4 ? 0xffffffffULL
						   : 0xffffULL;
		if (setjmp(cpu->jb)) {
			/* An exception: the instruction is skipped, not delivered. */
			kap_soft_locked_abort(cpu);
			cpu->rip = (cpu->rip + d.len) & ipmask;
			continue;
		}
		cpu->stop_block = false;
		cpu->next_rip = (cpu->rip + d.len) & ipmask;
		if (!fn)
			kap_soft_raise(cpu, KAP_SOFT_XUD, 0, false);
		uint64_t at = cpu->rip;
		fn(cpu, &d);
		cpu->rip = cpu->next_rip;
		if (cpu->rip == at)
			again++; /* a REP string instruction to be continued */
	}
	kap_soft_vcpu_destroy(&vm->vcpus[0]);
	kapsel_error_free(err);
	return 0;
}
