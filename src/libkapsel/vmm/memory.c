/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest RAM: one mapping made once (pages are allocated when the guest first touches them),
 * registered with KVM as up to two slots around the 32-bit MMIO hole. Every access the VMM makes
 * on the guest's behalf goes through kap_mem_ptr, which checks that the range lies inside one
 * slot.
 *
 * By default the mapping is private anonymous memory with MADV_HUGEPAGE, so transparent huge
 * pages back it whenever /sys/kernel/mm/transparent_hugepage/enabled is "always" or "madvise":
 * KVM then maps the guest with 2 MiB pages in the EPT/NPT as well, and a memory-bound guest
 * misses the TLB far less (QEMU's anonymous RAM gets the same). A memfd (MAP_SHARED) is used only
 * when the RAM must be shareable with another process (--mem-shared: snapshots, vhost-user):
 * shmem gets huge pages only when /sys/kernel/mm/transparent_hugepage/shmem_enabled allows, which
 * it does not by default.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"
#include "vmm/vmm.h"

/* x86-64 PMD size: THP needs the mapping aligned to it to use huge pages from the first byte. */
#define HUGE_ALIGN (2ULL << 20)

/* size bytes of anonymous memory at a 2 MiB-aligned address; the slack is unmapped again. */
static void *map_anon_aligned(uint64_t size)
{
	uint64_t len = size + HUGE_ALIGN;
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return p;
	uint8_t *a = (uint8_t *)(((uintptr_t)p + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + size < p + len)
		munmap(a + size, (size_t)(p + len - (a + size)));
	return a;
}

int kap_mem_init(struct kap_guest_mem *m, uint64_t size, bool shared, struct kapsel_error **err)
{
	*m = (struct kap_guest_mem){.fd = -EBADF, .size = size};
	m->low_size = size < KAP_MMIO_HOLE_START ? size : KAP_MMIO_HOLE_START;
	void *p;
	if (!shared) {
		/* MAP_NORESERVE: a 64 GiB guest that touches 100 MiB costs 100 MiB. */
		p = map_anon_aligned(size);
		if (p == MAP_FAILED)
			return kap_error(err, errno, "map %llu bytes of guest RAM",
					 (unsigned long long)size);
		m->host = p;
		/*
		 * Advice, not a requirement: EINVAL means a kernel without THP, where small pages
		 * are what there is.
		 */
		madvise(p, size, MADV_HUGEPAGE);
		madvise(p, size, MADV_DONTDUMP);
		return 0;
	}
	m->fd = memfd_create("kapsel-guest-ram", MFD_CLOEXEC);
	if (m->fd < 0)
		return kap_error(err, errno, "memfd_create guest RAM");
	if (ftruncate(m->fd, (off_t)size) < 0) {
		int r =
		    kap_error(err, errno, "size guest RAM to %llu bytes", (unsigned long long)size);
		kap_mem_destroy(m);
		return r;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (p == MAP_FAILED) {
		int r =
		    kap_error(err, errno, "map %llu bytes of guest RAM", (unsigned long long)size);
		kap_mem_destroy(m);
		return r;
	}
	m->host = p;
	/* Guest RAM in a core dump of the VMM would be large and leak guest data. */
	madvise(p, size, MADV_DONTDUMP);
	return 0;
}

int kap_mem_register(struct kap_guest_mem *m, int vm_fd, struct kapsel_error **err)
{
	struct kvm_userspace_memory_region r = {
	    .slot = 0,
	    .guest_phys_addr = 0,
	    .memory_size = m->low_size,
	    .userspace_addr = (uintptr_t)m->host,
	};
	if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return kap_error(err, errno, "KVM_SET_USER_MEMORY_REGION (low RAM, %llu bytes)",
				 (unsigned long long)m->low_size);
	if (m->size > m->low_size) {
		r.slot = 1;
		r.guest_phys_addr = KAP_4G;
		r.memory_size = m->size - m->low_size;
		r.userspace_addr = (uintptr_t)(m->host + m->low_size);
		if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return kap_error(err, errno,
					 "KVM_SET_USER_MEMORY_REGION (RAM above 4 GiB, %llu bytes)",
					 (unsigned long long)r.memory_size);
	}
	return 0;
}

void kap_mem_destroy(struct kap_guest_mem *m)
{
	if (m->host)
		munmap(m->host, m->size);
	if (m->fd >= 0)
		close(m->fd);
	m->host = NULL;
	m->fd = -EBADF;
}

uint64_t kap_mem_high_end(const struct kap_guest_mem *m)
{
	return KAP_4G + (m->size - m->low_size);
}

void *kap_mem_ptr(const struct kap_guest_mem *m, uint64_t gpa, uint64_t len)
{
	/* Written so that no sum can overflow: gpa and len are guest-controlled. */
	if (gpa < m->low_size) {
		if (len > m->low_size - gpa)
			return NULL;
		return m->host + gpa;
	}
	uint64_t high = m->size - m->low_size;
	if (gpa < KAP_4G || gpa - KAP_4G >= high || len > high - (gpa - KAP_4G))
		return NULL;
	return m->host + m->low_size + (gpa - KAP_4G);
}

int kap_mem_read(const struct kap_guest_mem *m, uint64_t gpa, void *buf, uint64_t len)
{
	const void *p = kap_mem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(buf, p, len);
	return 0;
}

int kap_mem_write(const struct kap_guest_mem *m, uint64_t gpa, const void *buf, uint64_t len)
{
	void *p = kap_mem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(p, buf, len);
	return 0;
}

int kap_mem_init_file(struct kap_guest_mem *m, uint64_t size, const char *path,
		      struct kapsel_error **err)
{
	*m = (struct kap_guest_mem){.fd = -EBADF, .size = size};
	m->low_size = size < KAP_MMIO_HOLE_START ? size : KAP_MMIO_HOLE_START;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "memory file %s", path);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int r = kap_error(err, errno, "memory file %s", path);
		close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
		close(fd);
		return kap_error_plain(err, EINVAL,
				       "memory file %s: %" PRIu64
				       " bytes, the snapshot's guest has %" PRIu64,
				       path, (uint64_t)st.st_size, size);
	}
	/*
	 * Private and copy-on-write: the guest's writes never reach the file, and only the pages
	 * the guest touches are read (the restore itself reads none).
	 */
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return kap_error(err, errno, "map memory file %s", path);
	m->host = p;
	return 0;
}
