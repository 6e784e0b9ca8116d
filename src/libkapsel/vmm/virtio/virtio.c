/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device status, feature negotiation, interrupts and the device thread, shared by every virtio
 * device and transport (virtio 1.2 §2.1-§2.2, §3.1).
 */
#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/jail.h"
#include "vmm/virtio/virtio.h"

#define NEEDS_RESET_LOG_PER_SEC 3

int kap_virtio_init(struct kap_virtio_dev *d, const struct kap_virtio_ops *ops, const char *id,
		    const struct kap_guest_mem *mem, struct kapsel_error **err)
{
	memset(d, 0, sizeof(*d));
	d->ops = ops;
	d->mem = mem;
	snprintf(d->id, sizeof(d->id), "%s", id);
	d->irq_fd = d->stop_fd = d->resample_fd = -EBADF;
	for (unsigned int i = 0; i < KAP_VIRTIO_MAX_QUEUES; i++) {
		d->kick_fd[i] = -EBADF;
		kap_vq_reset(&d->vq[i], KAP_VQ_MAX_SIZE);
	}
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->qlock, NULL);
	pthread_cond_init(&d->qcond, NULL);
	d->features = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_EVENT_IDX) |
		      (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
	d->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	d->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	d->resample_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->irq_fd < 0 || d->stop_fd < 0 || d->resample_fd < 0)
		return kap_error(err, errno, "%s: eventfd", id);
	for (unsigned int i = 0; i < ops->nqueues; i++) {
		d->kick_fd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (d->kick_fd[i] < 0)
			return kap_error(err, errno, "%s: eventfd", id);
	}
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Whether queue q has chains the device has not taken yet. */
static bool queue_has_work(struct kap_virtio_dev *d, unsigned int q)
{
	pthread_mutex_lock(&d->lock);
	bool work = kap_virtio_queue_live(d, q) && kap_vq_has_work(&d->vq[q]);
	pthread_mutex_unlock(&d->lock);
	return work;
}

/*
 * Kicks off (the thread is polling) or on (it is about to sleep) for every live queue. On:
 * returns whether a queue already has work the driver added without a kick.
 */
static bool set_notify(struct kap_virtio_dev *d, bool enable)
{
	bool work = false;
	pthread_mutex_lock(&d->lock);
	for (unsigned int i = 0; i < d->ops->nqueues; i++) {
		if (!kap_virtio_queue_live(d, i))
			continue;
		kap_vq_set_notify(&d->vq[i], enable);
		work |= enable && kap_vq_has_work(&d->vq[i]);
	}
	pthread_mutex_unlock(&d->lock);
	return work;
}

static void resample(struct kap_virtio_dev *d);

static void mark_used_rings(struct kap_virtio_dev *d);

/*
 * ops->process, unless the device is quiesced: then it waits for kap_virtio_release first
 * (the kick it consumed is served afterwards). False when the device is being destroyed.
 */
static bool run_process(struct kap_virtio_dev *d, unsigned int q)
{
	pthread_mutex_lock(&d->qlock);
	while (d->held && !d->stopping)
		pthread_cond_wait(&d->qcond, &d->qlock);
	if (d->stopping) {
		pthread_mutex_unlock(&d->qlock);
		return false;
	}
	d->busy = true;
	pthread_mutex_unlock(&d->qlock);
	d->ops->process(d, q);
	mark_used_rings(d);
	pthread_mutex_lock(&d->qlock);
	d->busy = false;
	pthread_cond_broadcast(&d->qcond);
	pthread_mutex_unlock(&d->qlock);
	return true;
}

/*
 * Busy-polls the rings for ops->poll_ns after the last work found; returns when that passes
 * with nothing new, or when the device is stopping. fds: the stop and resample pollfds.
 */
static void poll_rings(struct kap_virtio_dev *d, const struct pollfd fds[2])
{
	/* While the thread looks at the rings anyway, the driver need not exit to kick. */
	set_notify(d, false);
	uint64_t deadline = now_ns() + d->ops->poll_ns;
	for (unsigned int spins = 1;; spins++) {
		bool any = false;
		for (unsigned int i = 0; i < d->ops->nqueues; i++) {
			if (queue_has_work(d, i)) {
				if (!run_process(d, i)) {
					set_notify(d, true);
					return;
				}
				any = true;
			}
		}
		uint64_t t = now_ns();
		if (any) {
			deadline = t + d->ops->poll_ns;
		} else if (t >= deadline) {
			/* Kicks on, then one more look for what came in without one. */
			if (!set_notify(d, true))
				return;
			set_notify(d, false);
			deadline = t + d->ops->poll_ns;
		}
		/* Now and then, see whether kap_virtio_destroy is waiting or the guest EOI'd. */
		if (spins % 1024 == 0) {
			struct pollfd p[2] = {fds[0], fds[1]};
			if (poll(p, 2, 0) > 0) {
				if (p[0].revents) {
					set_notify(d, true);
					return;
				}
				if (p[1].revents)
					resample(d);
			}
		}
		__builtin_ia32_pause();
	}
}

/*
 * The guest EOI'd the line and KVM lowered it: a level-triggered interrupt whose cause is still
 * there (ISR not read yet, or set again since) is asserted again, so none is lost between the
 * driver's ISR read and its EOI.
 */
static void resample(struct kap_virtio_dev *d)
{
	uint64_t v;
	if (read(d->resample_fd, &v, sizeof(v)) != sizeof(v))
		return;
	pthread_mutex_lock(&d->lock);
	if (atomic_load(&d->isr) && (!d->line_enabled || d->line_enabled(d))) {
		uint64_t one = 1;
		if (write(d->irq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			kap_debug("%s: irqfd: %s", d->id, strerror(errno));
	}
	pthread_mutex_unlock(&d->lock);
}

static void *device_thread(void *opaque)
{
	struct kap_virtio_dev *d = opaque;
	/* virtio-fs walks the host directory: a filter of its own (jail.c). */
	kap_jail_thread(d->ops->device_id == VIRTIO_ID_FS ? KAP_JAIL_FS : KAP_JAIL_DEVICE, 0);
	struct pollfd p[KAP_VIRTIO_MAX_QUEUES + 2];
	unsigned int n = d->ops->nqueues;
	for (unsigned int i = 0; i < n; i++)
		p[i] = (struct pollfd){.fd = d->kick_fd[i], .events = POLLIN};
	p[n] = (struct pollfd){.fd = d->stop_fd, .events = POLLIN};
	p[n + 1] = (struct pollfd){.fd = d->resample_fd, .events = POLLIN};
	for (;;) {
		if (poll(p, n + 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			kap_warn("%s: poll: %s", d->id, strerror(errno));
			return NULL;
		}
		if (p[n].revents)
			return NULL;
		if (p[n + 1].revents)
			resample(d);
		for (unsigned int i = 0; i < n; i++) {
			uint64_t v;
			if (!p[i].revents || read(d->kick_fd[i], &v, sizeof(v)) != sizeof(v))
				continue;
			if (!run_process(d, i))
				return NULL;
		}
		if (d->ops->poll_ns)
			poll_rings(d, &p[n]);
	}
}

int kap_virtio_start(struct kap_virtio_dev *d, struct kapsel_error **err)
{
	int r = pthread_create(&d->thread, NULL, device_thread, d);
	if (r)
		return kap_error(err, r, "%s: start the device thread", d->id);
	d->thread_started = true;
	return 0;
}

void kap_virtio_destroy(struct kap_virtio_dev *d)
{
	if (d->thread_started) {
		uint64_t one = 1;
		pthread_mutex_lock(&d->qlock);
		d->stopping = true;
		pthread_cond_broadcast(&d->qcond);
		pthread_mutex_unlock(&d->qlock);
		if (write(d->stop_fd, &one, sizeof(one)) == sizeof(one))
			pthread_join(d->thread, NULL);
		d->thread_started = false;
	}
	if (d->ops && d->ops->free)
		d->ops->free(d);
	for (unsigned int i = 0; i < KAP_VIRTIO_MAX_QUEUES; i++)
		if (d->kick_fd[i] >= 0)
			close(d->kick_fd[i]);
	if (d->irq_fd >= 0)
		close(d->irq_fd);
	if (d->stop_fd >= 0)
		close(d->stop_fd);
	if (d->resample_fd >= 0)
		close(d->resample_fd);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->qlock);
	pthread_cond_destroy(&d->qcond);
}

static void raise_irq(struct kap_virtio_dev *d, unsigned int bit, unsigned int q)
{
	atomic_fetch_or(&d->isr, bit);
	if (d->interrupt) {
		d->interrupt(d, q);
		return;
	}
	uint64_t one = 1;
	/* EAGAIN: the counter is saturated, an interrupt is pending anyway. */
	if (write(d->irq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		kap_debug("%s: irqfd: %s", d->id, strerror(errno));
}

void kap_virtio_set_status(struct kap_virtio_dev *d, uint8_t status)
{
	if (status == 0) {
		/* §2.4: reset. Rings are forgotten; in-flight completions see a new generation. */
		d->status = 0;
		d->driver_features = 0;
		d->dev_feat_sel = d->drv_feat_sel = 0;
		d->queue_sel = 0;
		d->generation++;
		atomic_store(&d->isr, 0);
		for (unsigned int i = 0; i < KAP_VIRTIO_MAX_QUEUES; i++)
			kap_vq_reset(&d->vq[i], KAP_VQ_MAX_SIZE);
		if (d->ops->reset)
			d->ops->reset(d);
		return;
	}
	/* §3.1.1: FEATURES_OK only for a subset of what was offered, VERSION_1 included. */
	if ((status & VIRTIO_CONFIG_S_FEATURES_OK) && !(d->status & VIRTIO_CONFIG_S_FEATURES_OK) &&
	    ((d->driver_features & ~d->features) ||
	     !(d->driver_features & (1ULL << VIRTIO_F_VERSION_1))))
		status &= (uint8_t)~VIRTIO_CONFIG_S_FEATURES_OK;
	/* The driver cannot clear NEEDS_RESET other than by a reset. */
	d->status = (uint8_t)(status | (d->status & VIRTIO_CONFIG_S_NEEDS_RESET));
}

void kap_virtio_needs_reset(struct kap_virtio_dev *d, unsigned int q, const char *why)
{
	bool first = !(d->status & VIRTIO_CONFIG_S_NEEDS_RESET);
	d->status |= VIRTIO_CONFIG_S_NEEDS_RESET;
	int64_t now = kap_vmm_now_ms() / 1000;
	if (d->log_window != now) {
		d->log_window = now;
		d->log_count = 0;
	}
	if (d->log_count++ < NEEDS_RESET_LOG_PER_SEC)
		kap_warn("%s: queue %u: %s; device needs reset", d->id, q, why);
	if (first && (d->status & VIRTIO_CONFIG_S_DRIVER_OK))
		raise_irq(d, VIRTIO_MMIO_INT_CONFIG, KAP_VIRTIO_IRQ_CONFIG);
}

void kap_virtio_config_changed(struct kap_virtio_dev *d)
{
	d->config_generation++;
	if ((d->status & VIRTIO_CONFIG_S_DRIVER_OK) && !(d->status & VIRTIO_CONFIG_S_NEEDS_RESET))
		raise_irq(d, VIRTIO_MMIO_INT_CONFIG, KAP_VIRTIO_IRQ_CONFIG);
}

void kap_virtio_queue_enable(struct kap_virtio_dev *d, unsigned int q)
{
	struct kap_vq *vq = &d->vq[q];
	vq->event_idx = d->driver_features & (1ULL << VIRTIO_RING_F_EVENT_IDX);
	vq->indirect = d->driver_features & (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
	if (kap_vq_enable(vq, d->mem) < 0)
		kap_virtio_needs_reset(d, q, vq->fault);
}

bool kap_virtio_queue_live(const struct kap_virtio_dev *d, unsigned int q)
{
	return (d->status & VIRTIO_CONFIG_S_DRIVER_OK) &&
	       !(d->status & VIRTIO_CONFIG_S_NEEDS_RESET) && q < d->ops->nqueues && d->vq[q].ready;
}

/* The guest-physical address of a host pointer into RAM (checked by kap_vq_pop). */
static uint64_t gpa_of(const struct kap_guest_mem *m, const void *p)
{
	uint64_t off = (uint64_t)((const uint8_t *)p - m->host);
	return off < m->low_size ? off : KAP_4G + (off - m->low_size);
}

/*
 * While the dirty log is on (a Full snapshot was taken), the pages the device may write for
 * this request are recorded for the next Diff: KVM logs only the guest's own writes. On the
 * soft path the same record drops the soft CPU's translations of those pages (vmm/soft/cpu.c),
 * so code a device reads into RAM (a disk's kernel module, a network buffer) is decoded anew. The
 * device writes them before its process call returns, and a snapshot waits for that
 * (kap_virtio_quiesce), so marking them now is not too early.
 */
static void mark_written(struct kap_virtio_dev *d, const struct kap_vq_elem *e)
{
	for (unsigned int i = e->nread; i < e->nseg; i++)
		kap_mem_mark_dirty(d->mem, gpa_of(d->mem, e->seg[i].host), e->seg[i].len);
}

/*
 * The used rings, after a process call: it may have pushed (a request popped then, or one
 * held from before, as virtio-balloon's statistics buffer).
 */
static void mark_used_rings(struct kap_virtio_dev *d)
{
	if (!kap_mem_tracks_writes(d->mem))
		return;
	pthread_mutex_lock(&d->lock);
	for (unsigned int i = 0; i < d->ops->nqueues; i++)
		if (d->vq[i].ready)
			kap_mem_mark_dirty(
			    d->mem, d->vq[i].used_gpa,
			    sizeof(struct vring_used) +
				(uint64_t)d->vq[i].size * sizeof(struct vring_used_elem) + 2);
	pthread_mutex_unlock(&d->lock);
}

int kap_virtio_pop(struct kap_virtio_dev *d, unsigned int q, struct kap_vq_elem *e)
{
	if (!kap_virtio_queue_live(d, q))
		return 0;
	int r = kap_vq_pop(&d->vq[q], d->mem, e);
	if (r < 0)
		kap_virtio_needs_reset(d, q, d->vq[q].fault);
	else if (r > 0 && kap_mem_tracks_writes(d->mem))
		mark_written(d, e);
	return r;
}

void kap_virtio_notify(struct kap_virtio_dev *d, unsigned int q)
{
	if (kap_virtio_queue_live(d, q) && kap_vq_should_notify(&d->vq[q]))
		raise_irq(d, VIRTIO_MMIO_INT_VRING, q);
}

void kap_virtio_quiesce(struct kap_virtio_dev *d)
{
	pthread_mutex_lock(&d->qlock);
	d->held++;
	while (d->busy)
		pthread_cond_wait(&d->qcond, &d->qlock);
	pthread_mutex_unlock(&d->qlock);
}

void kap_virtio_release(struct kap_virtio_dev *d)
{
	pthread_mutex_lock(&d->qlock);
	bool last = d->held == 1;
	if (d->held)
		d->held--;
	pthread_cond_broadcast(&d->qcond);
	pthread_mutex_unlock(&d->qlock);
	for (unsigned int i = 0; last && i < d->ops->nqueues; i++)
		kap_virtio_kick(d, i);
}

void kap_virtio_save(struct kap_virtio_dev *d, struct kap_virtio_state *s)
{
	memset(s, 0, sizeof(*s));
	s->device_id = d->ops->device_id;
	s->nqueues = d->ops->nqueues;
	s->features = d->features;
	s->driver_features = d->driver_features;
	s->dev_feat_sel = d->dev_feat_sel;
	s->drv_feat_sel = d->drv_feat_sel;
	s->config_generation = d->config_generation;
	s->isr = atomic_load(&d->isr);
	s->queue_sel = d->queue_sel;
	s->status = d->status;
	for (unsigned int i = 0; i < KAP_VIRTIO_MAX_QUEUES; i++) {
		const struct kap_vq *q = &d->vq[i];
		s->q[i] = (struct kap_virtio_queue_state){
		    .desc_gpa = q->desc_gpa,
		    .avail_gpa = q->avail_gpa,
		    .used_gpa = q->used_gpa,
		    .size = q->size,
		    .last_avail = q->last_avail,
		    .used_idx = q->used_idx,
		    .signalled = q->signalled,
		    .ready = q->ready,
		    .signalled_valid = q->signalled_valid,
		};
	}
}

int kap_virtio_load(struct kap_virtio_dev *d, const struct kap_virtio_state *s, const char **why)
{
	if (s->device_id != d->ops->device_id || s->nqueues != d->ops->nqueues) {
		*why = "a device of another type";
		return -1;
	}
	/* The driver negotiated against what was offered then: the offer must be the same. */
	if (s->features != d->features) {
		*why = "offers other features (a device option changed)";
		return -1;
	}
	if ((s->driver_features & ~s->features) || (s->isr & ~3u)) {
		*why = "driver features or interrupt status out of range";
		return -1;
	}
	d->driver_features = s->driver_features;
	d->dev_feat_sel = s->dev_feat_sel;
	d->drv_feat_sel = s->drv_feat_sel;
	d->config_generation = s->config_generation;
	atomic_store(&d->isr, s->isr);
	d->queue_sel = s->queue_sel;
	d->status = s->status;
	for (unsigned int i = 0; i < KAP_VIRTIO_MAX_QUEUES; i++) {
		const struct kap_virtio_queue_state *qs = &s->q[i];
		struct kap_vq *q = &d->vq[i];
		kap_vq_reset(q, KAP_VQ_MAX_SIZE);
		q->size = qs->size;
		q->desc_gpa = qs->desc_gpa;
		q->avail_gpa = qs->avail_gpa;
		q->used_gpa = qs->used_gpa;
		if (!qs->ready)
			continue;
		/* The same checks as the driver's QueueReady: a forged ring is refused here. */
		if (i >= d->ops->nqueues) {
			*why = "a ready queue the device does not have";
			return -1;
		}
		q->event_idx = d->driver_features & (1ULL << VIRTIO_RING_F_EVENT_IDX);
		q->indirect = d->driver_features & (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
		if (kap_vq_enable(q, d->mem) < 0) {
			*why = q->fault;
			return -1;
		}
		q->last_avail = qs->last_avail;
		q->used_idx = qs->used_idx;
		q->signalled = qs->signalled;
		q->signalled_valid = qs->signalled_valid;
	}
	return 0;
}

void kap_virtio_resume_loaded(struct kap_virtio_dev *d)
{
	pthread_mutex_lock(&d->lock);
	for (unsigned int i = 0; i < d->ops->nqueues; i++)
		if (kap_virtio_queue_live(d, i))
			kap_vq_set_notify(&d->vq[i], true);
	if (d->ops->restored)
		d->ops->restored(d);
	/* A level the saved ISR still holds: the driver has not seen it (§4.2.2, §4.1.4.5). */
	if (atomic_load(&d->isr) && (!d->line_enabled || d->line_enabled(d))) {
		uint64_t one = 1;
		if (write(d->irq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			kap_debug("%s: irqfd: %s", d->id, strerror(errno));
	}
	pthread_mutex_unlock(&d->lock);
	for (unsigned int i = 0; i < d->ops->nqueues; i++)
		kap_virtio_kick(d, i);
}
