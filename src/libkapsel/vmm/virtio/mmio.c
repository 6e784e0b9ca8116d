/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): a 0x200-byte register window in
 * the 32-bit MMIO hole per device, one GSI per device. QueueNotify writes go to per-queue
 * ioeventfds (datamatch on the queue index) so KVM signals the device thread without leaving
 * the kernel; the device's eventfd is an irqfd on its GSI. Accesses that KVM does deliver
 * here run on a vCPU thread under the device lock.
 */
#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "vmm/virtio/transport.h"

static uint32_t lo32(uint64_t v)
{
	return (uint32_t)v;
}

static void set_lo(uint64_t *v, uint32_t x)
{
	*v = (*v & 0xffffffff00000000ULL) | x;
}

static void set_hi(uint64_t *v, uint32_t x)
{
	*v = (*v & 0xffffffffULL) | ((uint64_t)x << 32);
}

static uint32_t reg_read(struct kap_virtio_dev *d, uint64_t off)
{
	struct kap_vq *q = d->queue_sel < d->ops->nqueues ? &d->vq[d->queue_sel] : NULL;
	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		return 0x74726976; /* "virt" */
	case VIRTIO_MMIO_VERSION:
		return 2;
	case VIRTIO_MMIO_DEVICE_ID:
		return d->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return KAP_VIRTIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		return d->dev_feat_sel < 2 ? lo32(d->features >> (32 * d->dev_feat_sel)) : 0;
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return q ? KAP_VQ_MAX_SIZE : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return q ? q->ready : 0;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return atomic_load(&d->isr);
	case VIRTIO_MMIO_STATUS:
		return d->status;
	case VIRTIO_MMIO_QUEUE_NUM:
		return q ? q->size : 0;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
		return q ? lo32(q->desc_gpa) : 0;
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		return q ? lo32(q->desc_gpa >> 32) : 0;
	case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
		return q ? lo32(q->avail_gpa) : 0;
	case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
		return q ? lo32(q->avail_gpa >> 32) : 0;
	case VIRTIO_MMIO_QUEUE_USED_LOW:
		return q ? lo32(q->used_gpa) : 0;
	case VIRTIO_MMIO_QUEUE_USED_HIGH:
		return q ? lo32(q->used_gpa >> 32) : 0;
	case VIRTIO_MMIO_SHM_LEN_LOW:
	case VIRTIO_MMIO_SHM_LEN_HIGH:
		return 0xffffffff; /* §4.2.2.1: no shared memory region */
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return d->config_generation;
	}
	return 0;
}

static void reg_write(struct kap_mmio_transport *t, uint64_t off, uint32_t v)
{
	struct kap_virtio_dev *d = t->dev;
	struct kap_vq *q = d->queue_sel < d->ops->nqueues ? &d->vq[d->queue_sel] : NULL;
	/* §4.2.2.2: the queue's registers are frozen while it is ready. */
	bool q_writable = q && !q->ready && !(d->status & VIRTIO_CONFIG_S_DRIVER_OK);
	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		d->dev_feat_sel = v;
		return;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		if (d->drv_feat_sel < 2 && !(d->status & VIRTIO_CONFIG_S_FEATURES_OK)) {
			unsigned int sh = 32 * d->drv_feat_sel;
			d->driver_features =
			    (d->driver_features & ~(0xffffffffULL << sh)) | ((uint64_t)v << sh);
		}
		return;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		d->drv_feat_sel = v;
		return;
	case VIRTIO_MMIO_QUEUE_SEL:
		d->queue_sel = v < 0x10000 ? (uint16_t)v : 0xffff;
		return;
	case VIRTIO_MMIO_QUEUE_NUM:
		if (q_writable)
			q->size = v <= 0xffff ? (uint16_t)v : 0;
		return;
	case VIRTIO_MMIO_QUEUE_READY:
		if (q && v == 1 && !q->ready)
			kap_virtio_queue_enable(d, d->queue_sel);
		else if (q && v == 0)
			q->ready = false;
		return;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		/* Only reached when no ioeventfd caught it (tests, odd access sizes). */
		if (v < d->ops->nqueues) {
			uint64_t one = 1;
			if (write(d->kick_fd[v], &one, sizeof(one)) < 0)
				return;
		}
		return;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		atomic_fetch_and(&d->isr, ~v);
		return;
	case VIRTIO_MMIO_STATUS:
		kap_virtio_set_status(d, (uint8_t)v);
		return;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
		if (q_writable)
			set_lo(&q->desc_gpa, v);
		return;
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if (q_writable)
			set_hi(&q->desc_gpa, v);
		return;
	case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
		if (q_writable)
			set_lo(&q->avail_gpa, v);
		return;
	case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
		if (q_writable)
			set_hi(&q->avail_gpa, v);
		return;
	case VIRTIO_MMIO_QUEUE_USED_LOW:
		if (q_writable)
			set_lo(&q->used_gpa, v);
		return;
	case VIRTIO_MMIO_QUEUE_USED_HIGH:
		if (q_writable)
			set_hi(&q->used_gpa, v);
		return;
	}
}

static void mmio_read(void *opaque, uint64_t off, void *data, unsigned int len)
{
	struct kap_mmio_transport *t = opaque;
	struct kap_virtio_dev *d = t->dev;
	pthread_mutex_lock(&d->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint64_t c = off - VIRTIO_MMIO_CONFIG;
		if (c < d->ops->config_len && len <= d->ops->config_len - c && d->ops->config_read)
			d->ops->config_read(d, (uint32_t)c, data, len);
	} else if (len == 4 && !(off & 3)) {
		/* §4.2.2.2: registers below the config space are 32-bit, aligned. */
		uint32_t v = reg_read(d, off);
		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&d->lock);
}

static void mmio_write(void *opaque, uint64_t off, const void *data, unsigned int len)
{
	struct kap_mmio_transport *t = opaque;
	struct kap_virtio_dev *d = t->dev;
	pthread_mutex_lock(&d->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint64_t c = off - VIRTIO_MMIO_CONFIG;
		if (c < d->ops->config_len && len <= d->ops->config_len - c && d->ops->config_write)
			d->ops->config_write(d, (uint32_t)c, data, len);
	} else if (len == 4 && !(off & 3)) {
		uint32_t v;
		memcpy(&v, data, 4);
		reg_write(t, off, v);
	}
	pthread_mutex_unlock(&d->lock);
}

static void mmio_reset(void *opaque)
{
	struct kap_mmio_transport *t = opaque;
	pthread_mutex_lock(&t->dev->lock);
	kap_virtio_set_status(t->dev, 0);
	pthread_mutex_unlock(&t->dev->lock);
}

const struct kap_dev_ops kap_virtio_mmio_ops = {
    .name = "virtio-mmio",
    .read = mmio_read,
    .write = mmio_write,
    .reset = mmio_reset,
};

int kap_virtio_mmio_attach(struct kap_vm *vm, struct kap_mmio_transport *t,
			   struct kapsel_error **err)
{
	struct kap_virtio_dev *d = t->dev;
	int r = kap_bus_register(&vm->mmio, t->base, KAP_VIRTIO_MMIO_SIZE, &kap_virtio_mmio_ops, t,
				 err);
	if (r < 0)
		return r;
	for (unsigned int i = 0; i < d->ops->nqueues; i++) {
		r = kap_vm_ioeventfd_match(vm, t->base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, false,
					   d->kick_fd[i], i, err);
		if (r < 0)
			return kap_error_wrap(err, "%s", d->id);
	}
	/* The DSDT declares the interrupt level-triggered: the line stays up until the EOI. */
	r = kap_vm_irqfd_level(vm, t->gsi, d->irq_fd, d->resample_fd, err);
	if (r < 0)
		return kap_error_wrap(err, "%s", d->id);
	return 0;
}
