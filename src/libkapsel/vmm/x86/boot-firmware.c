/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Firmware boot (--firmware, docs/vm.md "Firmware boot"): a legacy BIOS image such as Debian's
 * SeaBIOS (/usr/share/seabios/bios.bin) is mapped where a PC's flash sits and the BSP starts at
 * the reset vector, in the real-mode state KVM gives a fresh vCPU (CS selector 0xF000, base
 * 0xFFFF0000, RIP 0xFFF0: Intel SDM vol. 3 §9.1.4). No kernel is loaded and no zero page is
 * written: the firmware finds the disk, and the disk's boot loader finds its kernel.
 *
 * Memory, as QEMU's pc machine has it (hw/i386/x86.c x86_bios_rom_init):
 *   [4 GiB - size, 4 GiB)   the whole image, a read-only KVM memslot (KVM_MEM_READONLY: a
 *                           guest write becomes an MMIO exit nobody claims, and is dropped)
 *   [0xE0000, 0x100000)     the image's last 128 KiB (all of a 64 KiB image, at 0xF0000)
 *
 * The low alias is guest RAM preloaded with the copy, not ROM behind i440FX PAM registers.
 * SeaBIOS (src/fw/shadow.c make_bios_writable) sets PAM0-PAM6 of the 8086:1237 host bridge
 * to read/write and copies its code from the high alias over the low one; with RAM there from
 * the start that copy rewrites the same bytes, and kapsel's host bridge keeps the PAM bytes
 * only so SeaBIOS reads back what it wrote. What QEMU's ROM mode adds is that the region is
 * read-only until unlocked and again after a reset; a guest reset ends a kapsel VM instead.
 *
 * The debug console (QEMU's isa-debugcon at 0x402) is where Debian's SeaBIOS prints its log:
 * a read returns 0xe9, the value SeaBIOS checks before it uses the port (src/hw/serialio.c
 * qemu_debug_preinit), and writes go to the --firmware-log file, or nowhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "vmm/vmm.h"
#include "vmm/x86/boot.h"

/* Slots 0 and 1 are RAM (memory.c). */
#define FIRMWARE_SLOT 2
/* The legacy BIOS area the image's tail is copied to ends at 1 MiB. */
#define LOW_ALIAS_MAX 0x20000

int kap_firmware_read(const char *path, uint8_t **rom, size_t *len, struct kapsel_error **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "firmware %s", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kap_error(err, errno, "stat firmware %s", path);
	if (!S_ISREG(st.st_mode))
		return kap_error_plain(err, EINVAL, "firmware %s: not a regular file", path);
	/*
	 * 64, 128 or 256 KiB: the sizes of a legacy BIOS image (SeaBIOS builds bios.bin at 128
	 * and bios-256k.bin at 256 KiB). Larger ones would reach the pages KVM keeps for VMX's
	 * real-mode TSS and identity map just below 0xFFFC0000 (vmm.h).
	 */
	if (st.st_size != KAP_FIRMWARE_MIN && st.st_size != 2 * KAP_FIRMWARE_MIN &&
	    st.st_size != KAP_FIRMWARE_MAX)
		return kap_error_plain(err, EINVAL,
				       "firmware %s: %lld bytes; expected a BIOS image of 64, 128 "
				       "or 256 KiB",
				       path, (long long)st.st_size);
	size_t n = (size_t)st.st_size;
	/* A private copy: the memslot must not change when the file does. */
	uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return kap_error(err, errno, "firmware %s: map %zu bytes", path, n);
	for (size_t off = 0; off < n;) {
		ssize_t r = pread(fd, p + off, n - off, (off_t)off);
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			munmap(p, n);
			return r < 0
				   ? kap_error(err, e, "read firmware %s", path)
				   : kap_error_plain(err, e, "read firmware %s: short read", path);
		}
		off += (size_t)r;
	}
	*rom = p;
	*len = n;
	return 0;
}

int kap_firmware_load(struct kap_vm *vm, uint8_t *rom, size_t len, struct kapsel_error **err)
{
	/* The low alias is RAM, and SeaBIOS wants room above 1 MiB for its tables. */
	if (vm->mem.low_size < KAP_FIRMWARE_MIN_RAM)
		return kap_error_plain(err, EINVAL,
				       "--firmware: --mem %llu MiB is too small; firmware needs at "
				       "least %llu MiB",
				       (unsigned long long)(vm->mem.size >> 20),
				       (unsigned long long)(KAP_FIRMWARE_MIN_RAM >> 20));
	size_t n = len < LOW_ALIAS_MAX ? len : LOW_ALIAS_MAX;
	uint8_t *low = kap_mem_ptr(&vm->mem, KAP_HIGH_MEM - n, n);
	if (!low)
		return kap_error_plain(err, E2BIG, "--firmware: no RAM at 0x%" PRIx64,
				       (uint64_t)(KAP_HIGH_MEM - n));
	memcpy(low, rom + len - n, n);
	kap_mem_mark_dirty(&vm->mem, KAP_HIGH_MEM - n, n);
	/* Without KVM_CAP_READONLY_MEM the slot is writable: the copy is private either way. */
	bool ro = ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;
	struct kvm_userspace_memory_region r = {
	    .slot = FIRMWARE_SLOT,
	    .flags = ro ? KVM_MEM_READONLY : 0,
	    .guest_phys_addr = KAP_4G - len,
	    .memory_size = len,
	    .userspace_addr = (uintptr_t)rom,
	};
	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return kap_error(
		    err, errno, "KVM_SET_USER_MEMORY_REGION (firmware, %zu bytes at 0x%" PRIx64 ")",
		    len, (uint64_t)r.guest_phys_addr);
	return 0;
}

/* ---- the debug console at 0x402 ---- */

struct kap_debugcon {
	int fd; /* -1: discard */
};

int kap_debugcon_new(const char *path, struct kap_debugcon **out, struct kapsel_error **err)
{
	struct kap_debugcon *d = calloc(1, sizeof(*d));
	if (!d)
		return kap_error(err, ENOMEM, "debug console");
	d->fd = -1;
	if (path) {
		d->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
		if (d->fd < 0) {
			int r = kap_error(err, errno, "--firmware-log %s", path);
			free(d);
			return r;
		}
	}
	*out = d;
	return 0;
}

void kap_debugcon_free(struct kap_debugcon *d)
{
	if (!d)
		return;
	if (d->fd >= 0)
		close(d->fd);
	free(d);
}

static void debugcon_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	(void)dev;
	(void)off;
	memset(data, 0, len);
	*(uint8_t *)data = 0xe9;
}

static void debugcon_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_debugcon *d = dev;
	(void)off;
	(void)len;
	/* QEMU's debugcon prints an access's low byte; a failed write is dropped, not fatal. */
	if (d->fd >= 0 && write(d->fd, data, 1) < 0)
		return;
}

const struct kap_dev_ops kap_debugcon_ops = {
    .name = "debugcon",
    .read = debugcon_read,
    .write = debugcon_write,
};
