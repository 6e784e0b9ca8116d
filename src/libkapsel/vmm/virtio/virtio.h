/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transport-independent half of a virtio device (virtio 1.2 §2-§3): status, feature
 * negotiation, queues, interrupts and the DEVICE_NEEDS_RESET path, plus the device thread.
 *
 * Threads: register accesses arrive on vCPU threads (mmio.c); queue work runs on the device's
 * own thread, woken by the queues' ioeventfds, so a vCPU never waits on device work and a slow
 * disk never stalls the event loop. d->lock guards the registers and the rings' indices; a
 * device drops it around blocking I/O and checks d->generation afterwards, so a reset that
 * happened meanwhile throws the stale completion away instead of writing into new rings.
 */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "vmm/virtio/queue.h"
#include "vmm/vmm.h"

#define KAP_VIRTIO_MAX_QUEUES 4 /* virtio-balloon: inflate, deflate, stats, reporting */
/* virtio 1.2 §4.2.2: vendor id "KAPS" is informational only. */
#define KAP_VIRTIO_VENDOR 0x5350414b

struct kap_virtio_dev;

struct kap_virtio_ops {
	const char *name; /* "virtio-blk", for the log */
	uint32_t device_id;
	unsigned int nqueues;
	uint32_t config_len;
	/*
	 * Optional: after work, the device thread keeps looking at the avail rings this long
	 * before it sleeps on the kick eventfds again, so a driver with one request in flight
	 * does not pay a thread wake-up per request (QEMU's iothreads poll 32 µs likewise).
	 */
	unsigned int poll_ns;
	/* Config-space accesses (§4.2.2.2), on a vCPU thread, d->lock held, bounds checked. */
	void (*config_read)(struct kap_virtio_dev *d, uint32_t off, void *data, unsigned int len);
	void (*config_write)(struct kap_virtio_dev *d, uint32_t off, const void *data,
			     unsigned int len);
	/* Queue q was kicked: on the device thread, d->lock not held. */
	void (*process)(struct kap_virtio_dev *d, unsigned int q);
	/* The driver reset the device: d->lock held. */
	void (*reset)(struct kap_virtio_dev *d);
	void (*free)(struct kap_virtio_dev *d);
	/*
	 * Optional: register host-side fds (a tap, sockets, console input) with the event loop
	 * once it exists; their handlers wake the device thread through kap_virtio_kick.
	 */
	int (*attach_loop)(struct kap_virtio_dev *d, struct kap_loop *l, struct kapsel_error **err);
	/*
	 * Optional, for snapshots and migration (snapshot.c): the device's own state beyond its
	 * queues into buf (at most KAP_VIRTIO_DEV_STATE_MAX bytes); its length, or -1 with *why
	 * when the device cannot be saved. load takes it back into a device just created, not
	 * running yet, and checks it (-1 with *why). Both with d->lock held, the device quiesced.
	 * A device without them has no state beyond its queues (rng, net).
	 */
	int (*save)(struct kap_virtio_dev *d, uint8_t *buf, size_t cap, const char **why);
	int (*load)(struct kap_virtio_dev *d, const uint8_t *buf, size_t len, const char **why);
	/* Optional: after a restore, with the queues live again (vsock's transport reset). */
	void (*restored)(struct kap_virtio_dev *d);
};

/* vsock's 64 connections with 64 KiB pending each are the largest. */
#define KAP_VIRTIO_DEV_STATE_MAX (5u << 20)

struct kap_virtio_dev {
	const struct kap_virtio_ops *ops;
	void *priv;
	char id[32];
	const struct kap_guest_mem *mem;
	uint64_t features; /* offered, VIRTIO_F_VERSION_1 included */

	pthread_mutex_t lock;
	uint8_t status;
	uint64_t driver_features;
	uint32_t dev_feat_sel, drv_feat_sel;
	uint16_t queue_sel;
	uint32_t config_generation;
	uint32_t generation; /* bumped by every reset */
	atomic_uint isr;     /* VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG */
	struct kap_vq vq[KAP_VIRTIO_MAX_QUEUES];

	int kick_fd[KAP_VIRTIO_MAX_QUEUES]; /* eventfds: ioeventfd targets */
	int irq_fd;			    /* eventfd: an irqfd on the device's GSI */
	int resample_fd;		    /* eventfd: the guest EOI'd the line (level) */
	int stop_fd;			    /* eventfd: ends the device thread */
	pthread_t thread;
	bool thread_started;

	/* NEEDS_RESET log lines: at most a few a second per device. */
	int64_t log_window;
	unsigned int log_count;

	/*
	 * Set by a transport that routes interrupts itself (virtio-pci's MSI-X vectors): called
	 * instead of signalling irq_fd, with d->lock held and isr already updated, for queue q or
	 * KAP_VIRTIO_IRQ_CONFIG.
	 */
	void (*interrupt)(struct kap_virtio_dev *d, unsigned int q);
	/* Whether the level-triggered line is in use (virtio-pci: not with MSI-X); NULL: always. */
	bool (*line_enabled)(struct kap_virtio_dev *d);
	void *transport;

	/*
	 * Quiescing (snapshots, migration): while held, the device thread takes no new work; busy
	 * while it is inside ops->process. Under qlock.
	 */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	unsigned int held; /* nested: a snapshot's and a migration's */
	bool busy, stopping;
};

/*
 * The transport-independent state of a device as the state file stores it (docs/vm.md,
 * Snapshot format), little-endian, no implicit padding.
 */
struct kap_virtio_queue_state {
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t size, last_avail, used_idx, signalled;
	uint8_t ready, signalled_valid, pad[6];
};
struct kap_virtio_state {
	uint32_t device_id, nqueues;
	uint64_t features, driver_features;
	uint32_t dev_feat_sel, drv_feat_sel;
	uint32_t config_generation, isr;
	uint16_t queue_sel;
	uint8_t status, pad[5];
	struct kap_virtio_queue_state q[KAP_VIRTIO_MAX_QUEUES];
};
_Static_assert(sizeof(struct kap_virtio_queue_state) == 40, "virtio queue state layout");
_Static_assert(sizeof(struct kap_virtio_state) == 48 + 40 * KAP_VIRTIO_MAX_QUEUES,
	       "virtio state layout");

/*
 * Waits until the device thread is outside ops->process and keeps it out (no request is half
 * done: completions are pushed before process returns), until kap_virtio_release. Host-side
 * input (a tap, sockets) waits in its fds meanwhile.
 */
void kap_virtio_quiesce(struct kap_virtio_dev *d);
/* Lets the thread work again and kicks every queue, so nothing that arrived meanwhile waits. */
void kap_virtio_release(struct kap_virtio_dev *d);
/* The common state, d->lock held. */
void kap_virtio_save(struct kap_virtio_dev *d, struct kap_virtio_state *s);
/*
 * Takes s into a device just created (same type, offers the same features), maps its ready
 * queues again; -1 with *why (the field at fault) otherwise. d->lock held.
 */
int kap_virtio_load(struct kap_virtio_dev *d, const struct kap_virtio_state *s, const char **why);
/*
 * After the transport's state is back: ask for kicks on every live queue (the saved guest RAM
 * may hold a "no notify" of a polling device thread), re-raise a pending interrupt (virtio
 * line) and kick every queue so requests the driver queued before the snapshot are served.
 */
void kap_virtio_resume_loaded(struct kap_virtio_dev *d);

#define KAP_VIRTIO_IRQ_CONFIG 0xffffffffu

/* Initialises d (eventfds included); the device fills priv and features afterwards. */
int kap_virtio_init(struct kap_virtio_dev *d, const struct kap_virtio_ops *ops, const char *id,
		    const struct kap_guest_mem *mem, struct kapsel_error **err);
int kap_virtio_start(struct kap_virtio_dev *d, struct kapsel_error **err);
/* Stops the thread, closes the fds, calls ops->free. */
void kap_virtio_destroy(struct kap_virtio_dev *d);

/* The driver wrote status (§2.1): 0 resets; FEATURES_OK is refused unless acceptable. */
void kap_virtio_set_status(struct kap_virtio_dev *d, uint8_t status);
/* QueueReady: validate and map queue q's rings, or mark the device broken. */
void kap_virtio_queue_enable(struct kap_virtio_dev *d, unsigned int q);
/* Whether queue q may be serviced now (DRIVER_OK, no NEEDS_RESET, ready). d->lock held. */
bool kap_virtio_queue_live(const struct kap_virtio_dev *d, unsigned int q);

/*
 * The driver broke the rules: set DEVICE_NEEDS_RESET, tell the driver through a configuration
 * change interrupt (§2.1.2) and log why, rate limited. d->lock held.
 */
void kap_virtio_needs_reset(struct kap_virtio_dev *d, unsigned int q, const char *why);
/*
 * The device changed its configuration space (virtio-balloon's num_pages): bump the generation
 * and send a configuration change interrupt once the driver is up (§2.5.1). d->lock held.
 */
void kap_virtio_config_changed(struct kap_virtio_dev *d);
/* kap_vq_pop under d->lock, turning a violation into kap_virtio_needs_reset. */
int kap_virtio_pop(struct kap_virtio_dev *d, unsigned int q, struct kap_vq_elem *e);
/* Wakes the device thread as if the driver had notified queue q (host-side work arrived). */
static inline void kap_virtio_kick(struct kap_virtio_dev *d, unsigned int q)
{
	uint64_t one = 1;
	/* EAGAIN: the counter is saturated, the thread is woken anyway. */
	if (write(d->kick_fd[q], &one, sizeof(one)) < 0)
		return;
}
/* After pushing a batch to queue q: interrupt the driver unless it suppressed it. */
void kap_virtio_notify(struct kap_virtio_dev *d, unsigned int q);
