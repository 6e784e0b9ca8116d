/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Port I/O and MMIO dispatch. Ranges are registered before the vCPUs start and never change
 * while they run, so lookup is a lock-free binary search. Accesses nobody claims behave like
 * an empty ISA bus (reads float high, writes vanish). Probing absent hardware is what guests
 * do (Linux's 8250 driver reads COM2-COM4 at every boot), so these accesses are counted and
 * shown only with --debug, at most KAP_BUS_LOG_PER_SEC lines a second, with the total when
 * the VM ends — as QEMU and Firecracker ignore them quietly.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/vmm.h"

#define KAP_BUS_LOG_PER_SEC 10

int64_t kap_vmm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kap_bus_init(struct kap_bus *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
	pthread_mutex_init(&b->log_lock, NULL);
}

void kap_bus_destroy(struct kap_bus *b)
{
	uint64_t total = atomic_load(&b->unclaimed);
	if (total)
		kap_debug("%s bus: %" PRIu64 " unclaimed accesses in all", b->name, total);
	free(b->ranges);
	b->ranges = NULL;
	b->n = b->cap = 0;
	pthread_mutex_destroy(&b->log_lock);
}

int kap_bus_register(struct kap_bus *b, uint64_t base, uint64_t len, const struct kap_dev_ops *ops,
		     void *dev, struct kapsel_error **err)
{
	if (len == 0 || base + len < base)
		return kap_error_plain(err, EINVAL, "%s bus: bad range for %s", b->name, ops->name);
	size_t i = 0;
	while (i < b->n && b->ranges[i].base < base)
		i++;
	const struct kap_bus_range *prev = i ? &b->ranges[i - 1] : NULL;
	const struct kap_bus_range *next = i < b->n ? &b->ranges[i] : NULL;
	if ((prev && prev->base + prev->len > base) || (next && base + len > next->base))
		return kap_error_plain(err, EEXIST, "%s bus: %s at 0x%" PRIx64 " overlaps %s",
				       b->name, ops->name, base,
				       (prev && prev->base + prev->len > base) ? prev->ops->name
									       : next->ops->name);
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct kap_bus_range *r = realloc(b->ranges, cap * sizeof(*r));
		if (!r)
			return kap_error(err, ENOMEM, "%s bus", b->name);
		b->ranges = r;
		b->cap = cap;
	}
	memmove(&b->ranges[i + 1], &b->ranges[i], (b->n - i) * sizeof(*b->ranges));
	b->ranges[i] = (struct kap_bus_range){.base = base, .len = len, .ops = ops, .dev = dev};
	b->n++;
	return 0;
}

static const struct kap_bus_range *find(const struct kap_bus *b, uint64_t addr)
{
	size_t lo = 0, hi = b->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct kap_bus_range *r = &b->ranges[mid];
		if (addr < r->base)
			hi = mid;
		else if (addr - r->base >= r->len)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

static void log_unclaimed(struct kap_bus *b, uint64_t addr, const void *data, unsigned int len,
			  bool write)
{
	uint64_t total = atomic_fetch_add(&b->unclaimed, 1) + 1;
	if (!kap_log_debug_enabled)
		return;
	int64_t now = kap_vmm_now_ms() / 1000;
	pthread_mutex_lock(&b->log_lock);
	if (b->log_window != now) {
		b->log_window = now;
		b->log_count = 0;
	}
	bool log = b->log_count++ < KAP_BUS_LOG_PER_SEC;
	pthread_mutex_unlock(&b->log_lock);
	if (!log)
		return;
	uint64_t v = 0;
	if (write)
		memcpy(&v, data, len);
	if (write)
		kap_debug("unclaimed %s write at 0x%" PRIx64 " (%u bytes, value 0x%" PRIx64
			  "; %" PRIu64 " unclaimed so far)",
			  b->name, addr, len, v, total);
	else
		kap_debug("unclaimed %s read at 0x%" PRIx64 " (%u bytes; %" PRIu64
			  " unclaimed so far)",
			  b->name, addr, len, total);
}

void kap_bus_access(struct kap_bus *b, uint64_t addr, void *data, unsigned int len, bool write)
{
	const struct kap_bus_range *r = find(b, addr);
	/* An access straddling the end of a device's window is not the device's. */
	if (r && len <= r->len - (addr - r->base)) {
		if (write) {
			if (r->ops->write)
				r->ops->write(r->dev, addr - r->base, data, len);
		} else {
			memset(data, 0, len);
			if (r->ops->read)
				r->ops->read(r->dev, addr - r->base, data, len);
		}
		return;
	}
	if (!write)
		memset(data, 0xff, len);
	log_unclaimed(b, addr, data, len, write);
}

void kap_bus_reset(struct kap_bus *b)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->ranges[i].ops->reset)
			b->ranges[i].ops->reset(b->ranges[i].dev);
}
