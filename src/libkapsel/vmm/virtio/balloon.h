/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-balloon (balloon.c): the device, and what the control API (api.c) asks of it. The API
 * thread calls these with the device's lock taken inside; any thread may.
 */
#pragma once
#include <linux/virtio_balloon.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/virtio/virtio.h"
#include "vmm/vmm.h"

/* What GET /balloon and GET /balloon/statistics report. */
struct kap_balloon_info {
	uint64_t target_pages; /* num_pages: what the host asks for */
	uint64_t actual_pages; /* actual: what the driver says it holds */
	uint64_t ram_pages;
	bool deflate_on_oom, free_page_reporting;
	unsigned int stats_interval_s;
	/* The last statistics the driver sent: stats[tag] where stats_valid has bit tag. */
	uint64_t stats[VIRTIO_BALLOON_S_NR];
	uint32_t stats_valid;
	/* Host-side counters: 4 KiB pages given back through inflateq and reporting_vq. */
	uint64_t inflated_total, reported_total, ignored_pfns;
};

/* virtio-balloon after cfg; hugetlb: guest RAM is on hugetlbfs pages (--mem-hugepages). */
int kap_virtio_balloon_new(struct kap_virtio_dev *d, const struct kapsel_vm_balloon *cfg,
			   const struct kap_guest_mem *mem, bool hugetlb,
			   struct kapsel_error **err);
/* The VM's balloon, or NULL when it has none. */
struct kap_virtio_dev *kap_balloon_find(struct kap_vm *vm);
void kap_balloon_get(struct kap_virtio_dev *d, struct kap_balloon_info *out);
/*
 * Asks the driver for pages 4 KiB pages (num_pages) and raises a configuration change
 * interrupt (virtio 1.2 §5.5.6). -EINVAL when pages exceed guest RAM.
 */
int kap_balloon_set_target(struct kap_virtio_dev *d, uint64_t pages, struct kapsel_error **err);
/*
 * The statistics polling interval. Whether statsq exists was negotiated at boot, so turning
 * statistics on or off (0) afterwards is refused with -EINVAL, as Firecracker refuses it.
 */
int kap_balloon_set_stats_interval(struct kap_virtio_dev *d, unsigned int seconds,
				   struct kapsel_error **err);
/* The statistics' names as Firecracker's GET /balloon/statistics gives them, by tag. */
const char *kap_balloon_stat_name(unsigned int tag);
/*
 * Decodes one inflateq/deflateq buffer (an array of little-endian 32-bit PFNs) into runs of
 * consecutive guest-physical pages inside RAM, calling fn for each; PFNs outside RAM are
 * counted in *ignored and skipped. Pure, for the fuzzer and unit tests.
 */
void kap_balloon_decode_pfns(const struct kap_guest_mem *m, const uint8_t *buf, uint64_t len,
			     void (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque,
			     uint64_t *ignored);
/* Decodes a statsq buffer (virtio_balloon_stat entries) into info's stats. Pure. */
void kap_balloon_decode_stats(const uint8_t *buf, uint64_t len, uint64_t *stats, uint32_t *valid);
