/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-balloon (virtio 1.2 §5.5): the host asks the guest for memory back (num_pages), the
 * driver hands over 4 KiB pages by PFN on inflateq and takes them back on deflateq, sends its
 * memory statistics on statsq when asked, and with VIRTIO_BALLOON_F_REPORTING hands over whole
 * free blocks on its own queue. Pages the guest gives up are returned to the host at once, so a
 * host can run VMs whose RAM adds up to more than it has (docs/vm.md, Memory balloon).
 *
 * The driver is hostile. Every PFN is checked against guest RAM (a page wholly inside one RAM
 * region; PFNs outside are skipped and logged once), a request is never read past what RAM
 * could legitimately need (one 32-bit PFN per page of RAM), the statistics buffer is read only
 * up to a fixed number of entries, and the device allocates nothing after creation: whatever
 * the driver sends costs it fixed memory and time linear in RAM size.
 *
 * Returning memory depends on how RAM is backed (memory.c):
 *  - private anonymous memory (the default): MADV_DONTNEED drops the pages; the next guest
 *    access faults in a zero page. Runs of consecutive PFNs are discarded with one call, which
 *    also keeps transparent huge pages whole when a run covers them.
 *  - a shared memfd (--mem-shared): MADV_DONTNEED would only unmap the page and leave it in
 *    the memfd; MADV_REMOVE punches the hole that frees it.
 *  - hugetlbfs (--mem-hugepages): a 2 MiB page is freed whole or not at all (MADV_REMOVE).
 *    Huge pages a run covers go at once; inflated 4 KiB pages of a huge page are remembered
 *    (one huge page at a time, as QEMU does) until all 512 are in the balloon. Linux's page
 *    reporting hands over pageblock-sized (2 MiB) blocks, which fit as they are.
 *
 * Queue numbering: Linux's virtio_find_vqs numbers only the queues whose feature was
 * negotiated (inflateq 0, deflateq 1, then statsq if STATS_VQ, then reporting_vq if
 * REPORTING; FREE_PAGE_HINT is not offered), as QEMU and Firecracker do; queue_role maps a
 * transport queue to its role from the negotiated features.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/virtio_ids.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "vmm/virtio/balloon.h"
#include "vmm/virtio/transport.h"

#define PAGE	       ((uint64_t)4096)
#define HUGE_PAGE      ((uint64_t)2 << 20)
#define PFNS_PER_CHUNK 256 /* Linux's VIRTIO_BALLOON_ARRAY_PFNS_MAX */
#define STATS_MAX      64  /* entries read from one statsq buffer */
#define NQUEUES	       4

enum { Q_INFLATE, Q_DEFLATE, Q_STATS, Q_REPORTING, Q_NONE };

struct balloon {
	struct kapsel_vm_balloon cfg;
	const struct kap_guest_mem *mem;
	bool hugetlb;
	uint64_t ram_pages;
	/* Config space (§5.5.4), under d->lock. */
	uint32_t num_pages, actual;
	/* Statistics (§5.5.6.3): the buffer the device holds until it wants new numbers. */
	bool stats_held;
	uint16_t stats_head;
	atomic_bool stats_due;
	uint64_t stats[VIRTIO_BALLOON_S_NR];
	uint32_t stats_valid;
	unsigned int stats_interval_s;
	int timer_fd;
	/* Counters for the API, and the log-once flags. */
	uint64_t inflated, reported, ignored;
	bool warned_range, warned_madvise, warned_long;
	/* hugetlbfs: the 4 KiB pages inflated so far of one huge page (partial_mark). */
	bool partial_valid;
	uint64_t partial_base;
	uint64_t partial[HUGE_PAGE / PAGE / 64];
	struct kap_virtio_dev *dev;
	struct kap_vq_elem elem;
};

static const char *const stat_names[VIRTIO_BALLOON_S_NR] = {
    [VIRTIO_BALLOON_S_SWAP_IN] = "swap_in",
    [VIRTIO_BALLOON_S_SWAP_OUT] = "swap_out",
    [VIRTIO_BALLOON_S_MAJFLT] = "major_faults",
    [VIRTIO_BALLOON_S_MINFLT] = "minor_faults",
    [VIRTIO_BALLOON_S_MEMFREE] = "free_memory",
    [VIRTIO_BALLOON_S_MEMTOT] = "total_memory",
    [VIRTIO_BALLOON_S_AVAIL] = "available_memory",
    [VIRTIO_BALLOON_S_CACHES] = "disk_caches",
    [VIRTIO_BALLOON_S_HTLB_PGALLOC] = "hugetlb_allocations",
    [VIRTIO_BALLOON_S_HTLB_PGFAIL] = "hugetlb_failures",
};

const char *kap_balloon_stat_name(unsigned int tag)
{
	return tag < VIRTIO_BALLOON_S_NR ? stat_names[tag] : NULL;
}

void kap_balloon_decode_pfns(const struct kap_guest_mem *m, const uint8_t *buf, uint64_t len,
			     void (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque,
			     uint64_t *ignored)
{
	uint64_t run = 0, run_len = 0;
	for (uint64_t i = 0; i + 4 <= len; i += 4) {
		/* §5.5.6: PFNs are little-endian 32-bit, in units of 4096 bytes. */
		uint32_t pfn = (uint32_t)buf[i] | (uint32_t)buf[i + 1] << 8 |
			       (uint32_t)buf[i + 2] << 16 | (uint32_t)buf[i + 3] << 24;
		uint64_t gpa = (uint64_t)pfn << VIRTIO_BALLOON_PFN_SHIFT;
		if (!kap_mem_ptr(m, gpa, PAGE)) {
			(*ignored)++;
			continue;
		}
		if (run_len && gpa == run + run_len) {
			run_len += PAGE;
			continue;
		}
		if (run_len)
			fn(opaque, run, run_len);
		run = gpa;
		run_len = PAGE;
	}
	if (run_len)
		fn(opaque, run, run_len);
}

void kap_balloon_decode_stats(const uint8_t *buf, uint64_t len, uint64_t *stats, uint32_t *valid)
{
	/* §5.5.6.3: packed {le16 tag; le64 val} entries; unknown tags are skipped. */
	for (uint64_t i = 0; i + 10 <= len; i += 10) {
		unsigned int tag = (unsigned int)buf[i] | (unsigned int)buf[i + 1] << 8;
		uint64_t v = 0;
		for (int k = 7; k >= 0; k--)
			v = v << 8 | buf[i + 2 + (unsigned int)k];
		if (tag >= VIRTIO_BALLOON_S_NR)
			continue;
		stats[tag] = v;
		*valid |= 1u << tag;
	}
}

static unsigned int queue_role(const struct kap_virtio_dev *d, unsigned int q)
{
	if (q < 2)
		return q;
	unsigned int stats = (d->driver_features >> VIRTIO_BALLOON_F_STATS_VQ) & 1;
	bool reporting = (d->driver_features >> VIRTIO_BALLOON_F_REPORTING) & 1;
	if (stats && q == 2)
		return Q_STATS;
	if (reporting && q == 2 + stats)
		return Q_REPORTING;
	return Q_NONE;
}

/* Gives [gpa, gpa + len) (inside one RAM region, 4 KiB aligned) back to the host. */
static void release(struct balloon *b, uint64_t gpa, uint64_t len, uint64_t *done)
{
	uint8_t *p = kap_mem_ptr(b->mem, gpa, len);
	if (!p)
		return;
	int advice = b->mem->fd >= 0 ? MADV_REMOVE : MADV_DONTNEED;
	if (madvise(p, len, advice) < 0) {
		if (!b->warned_madvise) {
			b->warned_madvise = true;
			kap_warn("%s: madvise %s of guest RAM 0x%" PRIx64 "+0x%" PRIx64 ": %s",
				 b->dev->id,
				 advice == MADV_REMOVE ? "MADV_REMOVE" : "MADV_DONTNEED", gpa, len,
				 strerror(errno));
		}
		return;
	}
	/* The page now reads as zero: a migration's dirty log must send it again. */
	kap_mem_mark_dirty(b->mem, gpa, len);
	*done += len / PAGE;
}

/*
 * Inflated 4 KiB pages of the huge page at h: when all 512 are in the balloon the huge page
 * goes back whole. One huge page is tracked at a time (QEMU's PartiallyBalloonedPage does the
 * same): Linux inflates pages in the order its allocator hands them out, mostly ascending.
 */
static void partial_mark(struct balloon *b, uint64_t h, uint64_t s, uint64_t e)
{
	if (!b->partial_valid || b->partial_base != h) {
		memset(b->partial, 0, sizeof(b->partial));
		b->partial_base = h;
		b->partial_valid = true;
	}
	for (uint64_t p = s; p < e; p += PAGE) {
		uint64_t i = (p - h) / PAGE;
		b->partial[i / 64] |= 1ULL << (i % 64);
	}
	for (unsigned int i = 0; i < KAP_ARRAY_SIZE(b->partial); i++)
		if (b->partial[i] != ~0ULL)
			return;
	b->partial_valid = false;
	release(b, h, HUGE_PAGE, &b->inflated);
}

/* Pages leaving the balloon must not be counted towards a huge page any more. */
static void partial_clear(struct balloon *b, uint64_t gpa, uint64_t len)
{
	if (!b->partial_valid || gpa + len <= b->partial_base || gpa >= b->partial_base + HUGE_PAGE)
		return;
	uint64_t s = gpa > b->partial_base ? gpa : b->partial_base;
	uint64_t e =
	    gpa + len < b->partial_base + HUGE_PAGE ? gpa + len : b->partial_base + HUGE_PAGE;
	for (uint64_t p = s; p < e; p += PAGE) {
		uint64_t i = (p - b->partial_base) / PAGE;
		b->partial[i / 64] &= ~(1ULL << (i % 64));
	}
}

/*
 * Gives a run of pages back. On hugetlbfs only whole 2 MiB pages can go (host offsets keep
 * gpa's 2 MiB alignment: low RAM ends at 3 GiB, high RAM starts at 4): the huge pages the run
 * covers go at once; with track (inflated pages, which stay the balloon's until deflated) the
 * rest is remembered until the huge page is complete, a reported block's rest (the guest may
 * reuse it without telling) is left alone.
 */
static void discard(struct balloon *b, uint64_t gpa, uint64_t len, uint64_t *done, bool track)
{
	if (!b->hugetlb) {
		release(b, gpa, len, done);
		return;
	}
	for (uint64_t h = gpa & ~(HUGE_PAGE - 1); h < gpa + len; h += HUGE_PAGE) {
		uint64_t s = gpa > h ? gpa : h;
		uint64_t e = gpa + len < h + HUGE_PAGE ? gpa + len : h + HUGE_PAGE;
		if (s == h && e == h + HUGE_PAGE)
			release(b, h, HUGE_PAGE, done);
		else if (track)
			partial_mark(b, h, s, e);
	}
}

static void inflate_run(void *opaque, uint64_t gpa, uint64_t len)
{
	struct balloon *b = opaque;
	discard(b, gpa, len, &b->inflated, true);
}

static void deflate_run(void *opaque, uint64_t gpa, uint64_t len)
{
	/* The next access faults the page in again; only the huge-page tracking must forget it. */
	struct balloon *b = opaque;
	if (b->hugetlb)
		partial_clear(b, gpa, len);
}

/* One inflateq or deflateq buffer: the readable part is an array of PFNs. */
static void process_pfns(struct balloon *b, bool inflate)
{
	const struct kap_vq_elem *e = &b->elem;
	/* No legitimate request names more pages than RAM has: a bound on the walk. */
	uint64_t limit = b->ram_pages * 4;
	uint64_t len = e->read_len < limit ? e->read_len : limit;
	if (e->read_len > limit && !b->warned_long) {
		b->warned_long = true;
		kap_warn("%s: a %s request of %" PRIu64 " bytes names more pages than RAM has; "
			 "reading the first %" PRIu64,
			 b->dev->id, inflate ? "inflate" : "deflate", e->read_len, limit);
	}
	uint8_t chunk[PFNS_PER_CHUNK * 4];
	uint64_t before = b->ignored;
	for (uint64_t off = 0; off < len;) {
		uint64_t want = len - off < sizeof(chunk) ? len - off : sizeof(chunk);
		uint64_t n = kap_vq_elem_read(e, off, chunk, want);
		if (n < 4)
			break;
		kap_balloon_decode_pfns(b->mem, chunk, n & ~3ULL,
					inflate ? inflate_run : deflate_run, b, &b->ignored);
		off += n & ~3ULL;
	}
	if (b->ignored != before && !b->warned_range) {
		b->warned_range = true;
		kap_warn("%s: the driver named %" PRIu64 " PFNs outside guest RAM; ignored (logged "
			 "once)",
			 b->dev->id, b->ignored - before);
	}
}

/* One reporting_vq buffer: each device-writable segment is a free block (§5.5.6.5). */
static void process_report(struct balloon *b)
{
	const struct kap_vq_elem *e = &b->elem;
	for (unsigned int i = e->nread; i < e->nseg; i++) {
		/* kap_vq_pop checked that the segment lies inside one RAM region. */
		uint64_t host = (uint64_t)(e->seg[i].host - b->mem->host);
		uint64_t s = (host + PAGE - 1) & ~(PAGE - 1),
			 end = (host + e->seg[i].len) & ~(PAGE - 1);
		if (end <= s)
			continue;
		uint64_t gpa = s < b->mem->low_size ? s : s - b->mem->low_size + KAP_4G;
		discard(b, gpa, end - s, &b->reported, false);
	}
}

static void process_stats(struct kap_virtio_dev *d, struct balloon *b, unsigned int q, bool *pushed)
{
	while (kap_virtio_pop(d, q, &b->elem) > 0) {
		/* A second buffer while one is held: give the old one back, keep the new. */
		if (b->stats_held) {
			kap_vq_push(&d->vq[q], b->stats_head, 0);
			*pushed = true;
		}
		uint8_t buf[STATS_MAX * 10];
		uint64_t n = kap_vq_elem_read(&b->elem, 0, buf, sizeof(buf));
		kap_balloon_decode_stats(buf, n, b->stats, &b->stats_valid);
		b->stats_head = b->elem.head;
		b->stats_held = true;
	}
	/* §5.5.6.3: returning the buffer is the request for fresh statistics. */
	if (b->stats_held && kap_virtio_queue_live(d, q) && atomic_exchange(&b->stats_due, false)) {
		kap_vq_push(&d->vq[q], b->stats_head, 0);
		b->stats_held = false;
		*pushed = true;
	}
}

static void balloon_process(struct kap_virtio_dev *d, unsigned int q)
{
	struct balloon *b = d->priv;
	pthread_mutex_lock(&d->lock);
	unsigned int role = queue_role(d, q);
	bool pushed = false;
	if (role == Q_STATS) {
		process_stats(d, b, q, &pushed);
	} else if (role != Q_NONE) {
		while (kap_virtio_pop(d, q, &b->elem) > 0) {
			if (role == Q_REPORTING)
				process_report(b);
			else
				process_pfns(b, role == Q_INFLATE);
			kap_vq_push(&d->vq[q], b->elem.head, 0);
			pushed = true;
		}
	}
	if (pushed)
		kap_virtio_notify(d, q);
	pthread_mutex_unlock(&d->lock);
}

static void config_image(const struct balloon *b, uint8_t img[sizeof(struct virtio_balloon_config)])
{
	struct virtio_balloon_config c = {.num_pages = b->num_pages, .actual = b->actual};
	memcpy(img, &c, sizeof(c));
}

static void balloon_config_read(struct kap_virtio_dev *d, uint32_t off, void *data,
				unsigned int len)
{
	uint8_t img[sizeof(struct virtio_balloon_config)];
	config_image(d->priv, img);
	memcpy(data, img + off, len);
}

static void balloon_config_write(struct kap_virtio_dev *d, uint32_t off, const void *data,
				 unsigned int len)
{
	/* §5.5.4: only actual is the driver's to write; the rest of a write is dropped. */
	struct balloon *b = d->priv;
	uint8_t img[sizeof(struct virtio_balloon_config)];
	config_image(b, img);
	memcpy(img + off, data, len);
	struct virtio_balloon_config c;
	memcpy(&c, img, sizeof(c));
	b->actual = c.actual;
}

static void balloon_reset(struct kap_virtio_dev *d)
{
	/* The driver starts over with an empty balloon; a held stats buffer is gone with it. */
	struct balloon *b = d->priv;
	b->actual = 0;
	b->stats_held = false;
	/* Pages the old driver inflated are the new one's to use: none may complete a huge page. */
	b->partial_valid = false;
	atomic_store(&b->stats_due, false);
}

/*
 * Snapshots: the host's target and the driver's actual, a statistics buffer the device holds
 * (its head, which the restored driver still waits on), the counters and the hugetlbfs
 * partial-page bookkeeping. Inflated pages need nothing: they were given back, so they are
 * holes in the memory file and read as zero after a restore, as they would have.
 */
struct balloon_state {
	uint32_t num_pages, actual;
	uint32_t stats_interval_s, stats_valid;
	uint16_t stats_head;
	uint8_t stats_held, partial_valid, pad[4];
	uint64_t stats[VIRTIO_BALLOON_S_NR];
	uint64_t inflated, reported, ignored, partial_base;
	uint64_t partial[HUGE_PAGE / PAGE / 64];
};

static int balloon_save(struct kap_virtio_dev *d, uint8_t *buf, size_t cap, const char **why)
{
	(void)why;
	struct balloon *b = d->priv;
	struct balloon_state st = {
	    .num_pages = b->num_pages,
	    .actual = b->actual,
	    .stats_interval_s = b->stats_interval_s,
	    .stats_valid = b->stats_valid,
	    .stats_head = b->stats_head,
	    .stats_held = b->stats_held,
	    .partial_valid = b->partial_valid,
	    .inflated = b->inflated,
	    .reported = b->reported,
	    .ignored = b->ignored,
	    .partial_base = b->partial_base,
	};
	memcpy(st.stats, b->stats, sizeof(st.stats));
	memcpy(st.partial, b->partial, sizeof(st.partial));
	if (cap < sizeof(st))
		return -1;
	memcpy(buf, &st, sizeof(st));
	return (int)sizeof(st);
}

static int balloon_load(struct kap_virtio_dev *d, const uint8_t *buf, size_t len, const char **why)
{
	struct balloon *b = d->priv;
	struct balloon_state st;
	if (len != sizeof(st)) {
		*why = "bad virtio-balloon state";
		return -1;
	}
	memcpy(&st, buf, sizeof(st));
	if (st.num_pages > b->ram_pages || st.stats_head >= KAP_VQ_MAX_SIZE ||
	    (st.partial_valid && st.partial_base % HUGE_PAGE)) {
		*why = "virtio-balloon state out of range";
		return -1;
	}
	/* Statistics were negotiated at boot (statsq): on or off must be as they were. */
	if (!st.stats_interval_s != !b->stats_interval_s) {
		*why = "a balloon with statistics turned on or off";
		return -1;
	}
	b->num_pages = st.num_pages;
	b->actual = st.actual;
	b->stats_interval_s = st.stats_interval_s;
	b->stats_valid = st.stats_valid;
	b->stats_head = st.stats_head;
	b->stats_held = st.stats_held;
	b->partial_valid = st.partial_valid;
	b->inflated = st.inflated;
	b->reported = st.reported;
	b->ignored = st.ignored;
	b->partial_base = st.partial_base;
	memcpy(b->stats, st.stats, sizeof(b->stats));
	memcpy(b->partial, st.partial, sizeof(b->partial));
	return 0;
}

static void balloon_free(struct kap_virtio_dev *d)
{
	struct balloon *b = d->priv;
	if (b && b->timer_fd >= 0)
		close(b->timer_fd);
	free(b);
	d->priv = NULL;
}

/* The polling interval elapsed (event thread): ask the device thread to return the buffer. */
static void stats_timer(void *opaque, uint32_t events)
{
	(void)events;
	struct kap_virtio_dev *d = opaque;
	struct balloon *b = d->priv;
	uint64_t n;
	if (read(b->timer_fd, &n, sizeof(n)) != sizeof(n))
		return;
	pthread_mutex_lock(&d->lock);
	bool live = d->driver_features & (1ULL << VIRTIO_BALLOON_F_STATS_VQ);
	pthread_mutex_unlock(&d->lock);
	if (!live)
		return;
	atomic_store(&b->stats_due, true);
	kap_virtio_kick(d, 2);
}

static int arm_timer(struct balloon *b, unsigned int s)
{
	struct itimerspec it = {.it_value = {.tv_sec = s}, .it_interval = {.tv_sec = s}};
	return timerfd_settime(b->timer_fd, 0, &it, NULL);
}

static int balloon_attach_loop(struct kap_virtio_dev *d, struct kap_loop *l,
			       struct kapsel_error **err)
{
	struct balloon *b = d->priv;
	if (b->timer_fd < 0)
		return 0;
	if (arm_timer(b, b->stats_interval_s) < 0)
		return kap_error(err, errno, "%s: timerfd_settime", d->id);
	return kap_loop_add(l, b->timer_fd, EPOLLIN, stats_timer, d, err);
}

static const struct kap_virtio_ops balloon_ops = {
    .name = "virtio-balloon",
    .device_id = VIRTIO_ID_BALLOON,
    .nqueues = NQUEUES,
    .config_len = sizeof(struct virtio_balloon_config),
    .config_read = balloon_config_read,
    .config_write = balloon_config_write,
    .process = balloon_process,
    .reset = balloon_reset,
    .free = balloon_free,
    .save = balloon_save,
    .load = balloon_load,
    .attach_loop = balloon_attach_loop,
};

_Static_assert(NQUEUES <= KAP_VIRTIO_MAX_QUEUES, "balloon queues");

int kap_virtio_balloon_new(struct kap_virtio_dev *d, const struct kapsel_vm_balloon *cfg,
			   const struct kap_guest_mem *mem, bool hugetlb, struct kapsel_error **err)
{
	int r = kap_virtio_init(d, &balloon_ops, "balloon0", mem, err);
	if (r < 0)
		return r;
	struct balloon *b = calloc(1, sizeof(*b));
	if (!b)
		return kap_error(err, ENOMEM, "balloon0");
	d->priv = b;
	b->cfg = *cfg;
	b->dev = d;
	b->mem = mem;
	b->hugetlb = hugetlb;
	b->timer_fd = -EBADF;
	b->ram_pages = mem->size / PAGE;
	uint64_t want = (cfg->amount_mib << 20) / PAGE;
	if (want > b->ram_pages)
		return kap_error_plain(err, EINVAL,
				       "--balloon amount_mib=%" PRIu64
				       ": more than guest RAM (%" PRIu64 " MiB)",
				       cfg->amount_mib, mem->size >> 20);
	b->num_pages = (uint32_t)want;
	b->stats_interval_s = cfg->stats_interval_s;
	if (cfg->stats_interval_s) {
		d->features |= 1ULL << VIRTIO_BALLOON_F_STATS_VQ;
		b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (b->timer_fd < 0)
			return kap_error(err, errno, "balloon0: timerfd_create");
	}
	if (cfg->deflate_on_oom)
		d->features |= 1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
	if (cfg->free_page_reporting)
		d->features |= 1ULL << VIRTIO_BALLOON_F_REPORTING;
	return 0;
}

struct kap_virtio_dev *kap_balloon_find(struct kap_vm *vm)
{
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		if (vm->virtio[i].initialised && vm->virtio[i].dev.ops == &balloon_ops &&
		    vm->virtio[i].dev.priv)
			return &vm->virtio[i].dev;
	return NULL;
}

void kap_balloon_get(struct kap_virtio_dev *d, struct kap_balloon_info *out)
{
	struct balloon *b = d->priv;
	pthread_mutex_lock(&d->lock);
	*out = (struct kap_balloon_info){
	    .target_pages = b->num_pages,
	    .actual_pages = b->actual,
	    .ram_pages = b->ram_pages,
	    .deflate_on_oom = b->cfg.deflate_on_oom,
	    .free_page_reporting = b->cfg.free_page_reporting,
	    .stats_interval_s = b->stats_interval_s,
	    .stats_valid = b->stats_valid,
	    .inflated_total = b->inflated,
	    .reported_total = b->reported,
	    .ignored_pfns = b->ignored,
	};
	memcpy(out->stats, b->stats, sizeof(out->stats));
	pthread_mutex_unlock(&d->lock);
}

int kap_balloon_set_target(struct kap_virtio_dev *d, uint64_t pages, struct kapsel_error **err)
{
	struct balloon *b = d->priv;
	if (pages > b->ram_pages)
		return kap_error_plain(
		    err, EINVAL, "amount_mib %" PRIu64 " is more than guest RAM (%" PRIu64 " MiB)",
		    pages * PAGE >> 20, b->ram_pages * PAGE >> 20);
	pthread_mutex_lock(&d->lock);
	b->num_pages = (uint32_t)pages;
	kap_virtio_config_changed(d);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

int kap_balloon_set_stats_interval(struct kap_virtio_dev *d, unsigned int seconds,
				   struct kapsel_error **err)
{
	struct balloon *b = d->priv;
	pthread_mutex_lock(&d->lock);
	unsigned int was = b->stats_interval_s;
	pthread_mutex_unlock(&d->lock);
	if (was == seconds)
		return 0;
	if (!was || !seconds)
		return kap_error_plain(err, EINVAL,
				       "stats_polling_interval_s: statistics were %s at boot and "
				       "cannot be turned %s",
				       was ? "enabled" : "disabled", was ? "off" : "on");
	if (arm_timer(b, seconds) < 0)
		return kap_error(err, errno, "balloon0: timerfd_settime");
	pthread_mutex_lock(&d->lock);
	b->stats_interval_s = seconds;
	pthread_mutex_unlock(&d->lock);
	return 0;
}
