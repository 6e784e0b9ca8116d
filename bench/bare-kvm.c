/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The floor for bench/vm-exits and bench/vm-start: the least a VMM can do to run a multiboot
 * test kernel. One memslot of anonymous memory, one vCPU in flat 32-bit protected mode, no
 * devices: every port write is ignored, every port read returns zeroes except the UART's line
 * status (always ready, so the guest's serial output goes nowhere), and a 4-byte write to the
 * debug-exit port 0xf4 ends the run with status (code << 1) | 1, as in kapsel and QEMU's
 * isa-debug-exit. Enough for tests/guests/multiboot.elf with test=exits and test=pass.
 * --irqchip and --pit add the in-kernel PIC/IOAPIC/LAPIC and i8254 as kapsel creates them
 * (before guest RAM), to tell the kernel's cost of those from the VMM's own.
 *
 *   bare-kvm [--irqchip [--pit]] KERNEL.elf MEM_MIB CMDLINE
 */
#include <elf.h>
#include <fcntl.h>
#include <stdbool.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MBI_ADDR	0x9000ULL /* multiboot_info: flags, then cmdline at +0x100 */
#define DEBUG_EXIT_PORT 0xf4
#define UART_LSR_PORT	0x3fd
#define UART_LSR_READY	0x60 /* THRE | TEMT */

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* Copies the ELF's PT_LOAD segments into guest memory; returns the entry point. */
static uint32_t load_elf(const char *path, uint8_t *ram, uint64_t ram_size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		die(path);
	uint8_t *f = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f == MAP_FAILED || (size_t)st.st_size < sizeof(Elf32_Ehdr))
		die(path);
	const Elf32_Ehdr *eh = (const void *)f;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS32 ||
	    eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf32_Phdr) > (uint64_t)st.st_size) {
		fprintf(stderr, "%s: not a 32-bit ELF\n", path);
		exit(2);
	}
	const Elf32_Phdr *ph = (const void *)(f + eh->e_phoff);
	for (unsigned int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		if ((uint64_t)ph[i].p_paddr + ph[i].p_memsz > ram_size ||
		    ph[i].p_filesz > ph[i].p_memsz ||
		    (uint64_t)ph[i].p_offset + ph[i].p_filesz > (uint64_t)st.st_size) {
			fprintf(stderr, "%s: segment %u does not fit\n", path, i);
			exit(2);
		}
		memcpy(ram + ph[i].p_paddr, f + ph[i].p_offset, ph[i].p_filesz);
	}
	uint32_t entry = eh->e_entry;
	munmap(f, (size_t)st.st_size);
	close(fd);
	return entry;
}

static void flat_segment(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	*s = (struct kvm_segment){.base = 0,
				  .limit = 0xffffffff,
				  .selector = sel,
				  .type = type,
				  .present = 1,
				  .dpl = 0,
				  .db = 1,
				  .s = 1,
				  .l = 0,
				  .g = 1};
}

int main(int argc, char **argv)
{
	bool irqchip = false, pit = false;
	while (argc > 1 && !strncmp(argv[1], "--", 2)) {
		if (!strcmp(argv[1], "--irqchip"))
			irqchip = true;
		else if (!strcmp(argv[1], "--pit"))
			pit = true;
		else
			break;
		argv++, argc--;
	}
	if (argc != 4 || (pit && !irqchip)) {
		fprintf(stderr, "usage: bare-kvm [--irqchip [--pit]] KERNEL.elf MEM_MIB CMDLINE\n");
		return 2;
	}
	uint64_t ram_size = strtoull(argv[2], NULL, 0) << 20;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	if (irqchip && ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pit_cfg = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if (pit && ioctl(vm, KVM_CREATE_PIT2, &pit_cfg) < 0)
		die("KVM_CREATE_PIT2");
	uint8_t *ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ram == MAP_FAILED)
		die("mmap");
	struct kvm_userspace_memory_region region = {.slot = 0,
						     .guest_phys_addr = 0,
						     .memory_size = ram_size,
						     .userspace_addr = (uintptr_t)ram};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	uint32_t entry = load_elf(argv[1], ram, ram_size);
	uint32_t *mbi = (uint32_t *)(ram + MBI_ADDR);
	mbi[0] = 1u << 2; /* cmdline valid */
	mbi[4] = (uint32_t)(MBI_ADDR + 0x100);
	snprintf((char *)ram + MBI_ADDR + 0x100, 0x1000 - 0x100, "%s", argv[3]);

	int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (cpu < 0 || run_size < 0)
		die("KVM_CREATE_VCPU");
	struct kvm_run *run =
	    mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	struct kvm_sregs sregs;
	if (ioctl(cpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	flat_segment(&sregs.cs, 0x08, 0xb); /* execute/read, accessed */
	flat_segment(&sregs.ds, 0x10, 0x3); /* read/write, accessed */
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE, ET */
	struct kvm_regs regs = {.rip = entry, .rax = 0x2BADB002, .rbx = MBI_ADDR, .rflags = 2};
	if (ioctl(cpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(cpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");

	for (;;) {
		if (ioctl(cpu, KVM_RUN, 0) < 0)
			die("KVM_RUN");
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			uint8_t *data = (uint8_t *)run + run->io.data_offset;
			if (run->io.direction == KVM_EXIT_IO_OUT &&
			    run->io.port == DEBUG_EXIT_PORT && run->io.size == 4) {
				uint32_t code;
				memcpy(&code, data, sizeof(code));
				return (int)((code << 1) | 1) & 0xff;
			}
			if (run->io.direction == KVM_EXIT_IO_IN)
				memset(data, run->io.port == UART_LSR_PORT ? UART_LSR_READY : 0,
				       (size_t)run->io.size * run->io.count);
			break;
		}
		case KVM_EXIT_HLT:
			return 0;
		default:
			fprintf(stderr, "bare-kvm: exit reason %u\n", run->exit_reason);
			return 2;
		}
	}
}
