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
 * it does not by default. --mem-hugepages puts RAM on reserved hugetlbfs pages instead (a
 * memfd with MFD_HUGETLB), --mem-merge lets KSM merge identical pages across guests.
 *
 * Diff snapshots (snapshot.c) use KVM's dirty page log on the RAM slots (kap_mem_dirty_log).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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

/*
 * HugePages_Free from /proc/meminfo: the 2 MiB pages reserved (vm.nr_hugepages) and unused.
 * -1 when it cannot be read.
 */
static long hugepages_free(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	if (!f)
		return -1;
	char line[256];
	long n = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "HugePages_Free: %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

/*
 * A memfd of hugetlbfs pages (memfd_create(2) MFD_HUGETLB, 2 MiB): unlike THP they are never
 * split or swapped, but they come only from the pool the administrator reserved. The mmap
 * below reserves them all at once (no MAP_NORESERVE), so a short pool fails here rather than
 * with SIGBUS when the guest touches a page; the HugePages_Free check before only turns that
 * ENOMEM into a message that says how many pages are missing.
 */
static int hugetlb_fd(uint64_t size, struct kapsel_error **err)
{
	if (size % HUGE_ALIGN)
		return kap_error_plain(err, EINVAL,
				       "--mem-hugepages: --mem %llu bytes is not a multiple of the "
				       "2 MiB huge page size",
				       (unsigned long long)size);
	unsigned long long need = size / HUGE_ALIGN;
	long free_pages = hugepages_free();
	if (free_pages >= 0 && (unsigned long long)free_pages < need)
		return kap_error_plain(
		    err, ENOMEM,
		    "--mem-hugepages: %llu MiB of guest RAM needs %llu 2 MiB huge "
		    "pages, HugePages_Free in /proc/meminfo is %ld (reserve them "
		    "with sysctl vm.nr_hugepages)",
		    (unsigned long long)(size >> 20), need, free_pages);
	int fd = memfd_create("kapsel-guest-ram", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
	if (fd < 0)
		return kap_error(err, errno, "--mem-hugepages: memfd_create with MFD_HUGETLB");
	return fd;
}

int kap_mem_init(struct kap_guest_mem *m, uint64_t size, unsigned int flags,
		 struct kapsel_error **err)
{
	*m = (struct kap_guest_mem){.fd = -EBADF, .size = size};
	m->low_size = size < KAP_MMIO_HOLE_START ? size : KAP_MMIO_HOLE_START;
	void *p;
	int r;
	if (!(flags & (KAP_MEM_SHARED | KAP_MEM_HUGETLB))) {
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
	} else {
		if (flags & KAP_MEM_HUGETLB) {
			if ((m->fd = hugetlb_fd(size, err)) < 0)
				return m->fd;
		} else if ((m->fd = memfd_create("kapsel-guest-ram", MFD_CLOEXEC)) < 0) {
			return kap_error(err, errno, "memfd_create guest RAM");
		}
		if (ftruncate(m->fd, (off_t)size) < 0) {
			r = kap_error(err, errno, "size guest RAM to %llu bytes",
				      (unsigned long long)size);
			kap_mem_destroy(m);
			return r;
		}
		int mflags = MAP_SHARED | ((flags & KAP_MEM_HUGETLB) ? 0 : MAP_NORESERVE);
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, mflags, m->fd, 0);
		if (p == MAP_FAILED) {
			r = kap_error(err, errno, "map %llu bytes of guest RAM%s",
				      (unsigned long long)size,
				      (flags & KAP_MEM_HUGETLB) ? " on huge pages" : "");
			kap_mem_destroy(m);
			return r;
		}
		m->host = p;
	}
	/*
	 * KSM (Documentation/admin-guide/mm/ksm.rst) scans only areas advised MADV_MERGEABLE;
	 * the user asked for it, so a kernel without CONFIG_KSM is an error, not a silent no.
	 * Merged pages are shared copy-on-write between guests, which is a timing side channel
	 * between them: hence opt-in.
	 */
	if ((flags & KAP_MEM_MERGEABLE) && madvise(p, size, MADV_MERGEABLE) < 0) {
		r = kap_error(err, errno, "--mem-merge: madvise MADV_MERGEABLE on guest RAM");
		kap_mem_destroy(m);
		return r;
	}
	/* Guest RAM in a core dump of the VMM would be large and leak guest data. */
	madvise(p, size, MADV_DONTDUMP);
	return 0;
}

/* Slot 0 is RAM below the MMIO hole, slot 1 RAM from 4 GiB (absent in a guest under 3 GiB). */
static int set_slots(struct kap_guest_mem *m, int vm_fd, uint32_t flags, struct kapsel_error **err)
{
	struct kvm_userspace_memory_region r = {
	    .slot = 0,
	    .flags = flags,
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

int kap_mem_register(struct kap_guest_mem *m, int vm_fd, struct kapsel_error **err)
{
	return set_slots(m, vm_fd, 0, err);
}

int kap_mem_set_dirty_log(struct kap_guest_mem *m, int vm_fd, bool on, struct kapsel_error **err)
{
	/*
	 * api.rst 4.35: only KVM_MEM_LOG_DIRTY_PAGES may change on an existing slot. Turning it
	 * on write-protects the slot, so the guest's next write to each page is logged; without
	 * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 the log starts empty.
	 */
	if (on && !m->vmm_dirty) {
		m->vmm_dirty = calloc(m->size / 4096 / 64 + 1, sizeof(uint64_t));
		if (!m->vmm_dirty)
			return kap_error(err, ENOMEM, "dirty page bitmap");
	} else if (on) {
		for (uint64_t i = 0; i < m->size / 4096 / 64 + 1; i++)
			atomic_store(&m->vmm_dirty[i], 0);
	}
	/* The soft path (no KVM VM): the soft CPU logs its own stores (kap_mem_log_store). */
	int r = vm_fd < 0 ? 0 : set_slots(m, vm_fd, on ? KVM_MEM_LOG_DIRTY_PAGES : 0, err);
	if (r == 0) {
		m->dirty_log = on;
		if (vm_fd < 0)
			atomic_store_explicit(&m->soft_log, on, memory_order_release);
	}
	return r;
}

int kap_mem_dirty_log(struct kap_guest_mem *m, int vm_fd, uint64_t **bitmap,
		      struct kapsel_error **err)
{
	uint64_t pages = m->size / 4096, low_pages = m->low_size / 4096;
	/* One bitmap for both slots: slot 1's bits start at low_pages, a multiple of 64. */
	uint64_t *b = calloc((pages + 63) / 64 + 1, sizeof(uint64_t));
	if (!b)
		return kap_error(err, ENOMEM, "dirty page bitmap");
	struct kvm_dirty_log log = {.slot = 0, .dirty_bitmap = b};
	if (vm_fd >= 0 && ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
		int r = kap_error(err, errno, "KVM_GET_DIRTY_LOG (low RAM)");
		free(b);
		return r;
	}
	if (vm_fd >= 0 && pages > low_pages) {
		log = (struct kvm_dirty_log){.slot = 1, .dirty_bitmap = b + low_pages / 64};
		if (ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
			int r = kap_error(err, errno, "KVM_GET_DIRTY_LOG (RAM above 4 GiB)");
			free(b);
			return r;
		}
	}
	for (uint64_t i = 0; m->vmm_dirty && i < pages / 64 + 1; i++)
		b[i] |= atomic_exchange(&m->vmm_dirty[i], 0);
	*bitmap = b;
	return 0;
}

void kap_mem_mark_dirty(const struct kap_guest_mem *m, uint64_t gpa, uint64_t len)
{
	if (!kap_mem_tracks_writes(m) || !len)
		return;
	uint64_t off = gpa < m->low_size ? gpa : m->low_size + (gpa - KAP_4G);
	for (uint64_t n = off / 4096; n <= (off + len - 1) / 4096; n++) {
		if (m->vmm_dirty)
			atomic_fetch_or(&m->vmm_dirty[n / 64], 1ULL << (n % 64));
		for (unsigned int i = 0; m->written && i < m->written->n; i++)
			atomic_fetch_or(&m->written->rec[i].bits[n / 64], 1ULL << (n % 64));
	}
	/* After the bits: a soft vCPU clears any, then takes the bits (cpu.c). */
	for (unsigned int i = 0; m->written && i < m->written->n; i++)
		atomic_store(&m->written->rec[i].any, true);
}

void kap_mem_written_mark(struct kap_mem_written *w, unsigned int rec, uint64_t page)
{
	if (rec >= w->n || page / 64 >= w->words)
		return;
	_Atomic uint64_t *b = &w->rec[rec].bits[page / 64];
	uint64_t bit = 1ULL << (page % 64);
	if (!(atomic_load_explicit(b, memory_order_relaxed) & bit))
		atomic_fetch_or(b, bit);
	atomic_store(&w->rec[rec].any, true);
}

static void written_free(struct kap_mem_written *w)
{
	if (!w)
		return;
	for (unsigned int i = 0; i < w->n; i++)
		free((void *)w->rec[i].bits);
	free((void *)w->owners);
	free(w);
}

int kap_mem_track_written(struct kap_guest_mem *m, unsigned int nrec, struct kapsel_error **err)
{
	if (m->written)
		return 0;
	struct kap_mem_written *w = calloc(1, sizeof(*w) + nrec * sizeof(w->rec[0]));
	if (!w)
		return kap_error(err, ENOMEM, "guest memory: the soft CPU's write record");
	w->words = m->size / 4096 / 64 + 1;
	w->owners = calloc(m->size / 4096 + 1, sizeof(uint64_t));
	bool ok = w->owners != NULL;
	for (unsigned int i = 0; ok && i < nrec; i++, w->n++)
		ok = (w->rec[i].bits = calloc(w->words, sizeof(uint64_t))) != NULL;
	if (!ok) {
		written_free(w);
		return kap_error(err, ENOMEM, "guest memory: the soft CPU's write record");
	}
	m->written = w;
	return 0;
}

void kap_mem_destroy(struct kap_guest_mem *m)
{
	if (m->host)
		munmap(m->host, m->size);
	if (m->fd >= 0)
		close(m->fd);
	free((void *)m->vmm_dirty);
	m->vmm_dirty = NULL;
	written_free(m->written);
	m->written = NULL;
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
	kap_mem_mark_dirty(m, gpa, len);
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
