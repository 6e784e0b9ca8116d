/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The modern virtio-pci transport (virtio 1.2 §4.1): one PCI function per device, vendor
 * 0x1AF4, device 0x1040 + type, revision 1, non-transitional (no I/O BAR, no legacy header).
 * Everything lives in BAR 0 (pci.h: KAP_VPCI_*), described by the vendor capabilities of
 * §4.1.4; the MSI-X table and PBA sit in the same BAR.
 *
 * Interrupts: with MSI-X enabled each vector is an eventfd that is an irqfd on its own KVM GSI,
 * whose MSI route follows the table entry the driver writes (KVM_SET_GSI_ROUTING); a masked
 * vector only sets its PBA bit and fires when unmasked (PCI 3.0 §6.8.3.5). Without MSI-X the
 * function raises INTx pin A, a level-triggered line (a resampling irqfd on an IOAPIC pin,
 * raised again after each EOI while ISR is set), and the driver reads ISR, which clears it
 * (§4.1.4.5). Queue notifications are ioeventfds on the notify region, moved when the
 * driver moves BAR 0 or turns memory decoding off; a write KVM does not catch (an odd size)
 * reaches bar_write and kicks the queue the same way.
 *
 * Every offset, length and value comes from the guest: accesses are bounds checked against the
 * structure they address and anything else reads as zero and is dropped.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/pci_regs.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/virtio/pci.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE 0x1040
/* Capability list layout in configuration space. */
#define CAP_MSIX    0x40
#define CAP_COMMON  0x50
#define CAP_NOTIFY  0x60
#define CAP_ISR	    0x78
#define CAP_DEVICE  0x88
#define CAP_PCI_CFG 0x98
#define CAP_END	    0xac

static uint16_t cfg16(const struct kap_pci_transport *t, unsigned int off)
{
	return (uint16_t)(t->cfg[off] | t->cfg[off + 1] << 8);
}

static uint32_t cfg32(const struct kap_pci_transport *t, unsigned int off)
{
	uint32_t v;
	memcpy(&v, t->cfg + off, 4);
	return v;
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

/* A virtio_pci_cap (§4.1.4) at off: type, BAR 0, the structure's offset and length. */
static void put_cap(struct kap_pci_transport *t, unsigned int off, unsigned int next,
		    uint8_t cap_len, uint8_t type, uint32_t offset, uint32_t len)
{
	uint8_t *p = t->cfg + off;
	p[0] = PCI_CAP_ID_VNDR;
	p[1] = (uint8_t)next;
	p[2] = cap_len;
	p[3] = type;
	p[4] = 0; /* bar */
	put32(p + 8, offset);
	put32(p + 12, len);
}

static bool msix_enabled(const struct kap_pci_transport *t)
{
	return cfg16(t, CAP_MSIX + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE;
}

static bool vector_masked(const struct kap_pci_transport *t, unsigned int v)
{
	return (cfg16(t, CAP_MSIX + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_MASKALL) ||
	       (t->msix[v].ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT);
}

static void signal_fd(int fd)
{
	uint64_t one = 1;
	/* EAGAIN: the counter is saturated, an interrupt is pending anyway. */
	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		kap_debug("virtio-pci: irqfd: %s", strerror(errno));
}

/* Device lock held. */
static void fire_vector(struct kap_pci_transport *t, unsigned int v)
{
	if (v >= t->nvec)
		return;
	if (vector_masked(t, v)) {
		t->pba |= 1u << v;
		return;
	}
	t->pba &= ~(1u << v);
	signal_fd(t->vec_fd[v]);
}

/* After an unmask or enable: send what the PBA holds. Device lock held. */
static void deliver_pending(struct kap_pci_transport *t)
{
	if (!msix_enabled(t))
		return;
	for (unsigned int v = 0; v < t->nvec; v++)
		if ((t->pba & (1u << v)) && !vector_masked(t, v))
			fire_vector(t, v);
}

/* virtio.c's resample check: INTx is in use. d->lock held. */
static bool pci_line_enabled(struct kap_virtio_dev *d)
{
	struct kap_pci_transport *t = d->transport;
	return !msix_enabled(t) && !(cfg16(t, PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE);
}

/* virtio.c's interrupt hook: d->lock held, d->isr already updated. */
static void pci_interrupt(struct kap_virtio_dev *d, unsigned int q)
{
	struct kap_pci_transport *t = d->transport;
	if (msix_enabled(t)) {
		uint16_t v = q == KAP_VIRTIO_IRQ_CONFIG	 ? t->msix_config
			     : q < KAP_VIRTIO_MAX_QUEUES ? t->queue_vector[q]
							 : VIRTIO_MSI_NO_VECTOR;
		fire_vector(t, v);
	} else if (!(cfg16(t, PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE)) {
		signal_fd(d->irq_fd);
	}
}

/* The MSI route of vector v follows its table entry. */
static void update_route(struct kap_pci_transport *t, unsigned int v)
{
	if (!t->vm)
		return;
	const struct kap_vpci_msix_entry *e = &t->msix[v];
	struct kapsel_error *err = NULL;
	if (kap_vm_msi_route(t->vm, t->vec_gsi[v], (uint64_t)e->addr_hi << 32 | e->addr_lo, e->data,
			     &err) < 0) {
		kap_warn("%s: MSI-X vector %u: %s", t->dev->id, v, (err ? err->msg : "?"));
		kapsel_error_free(err);
	}
}

/* ---- BAR 0 ---- */

static uint64_t bar_base(const struct kap_pci_transport *t)
{
	return cfg32(t, PCI_BASE_ADDRESS_0) & PCI_BASE_ADDRESS_MEM_MASK;
}

/* Where BAR 0 decodes now: only with memory decoding on and wholly inside the window. */
static uint64_t decoded_base(const struct kap_pci_transport *t)
{
	uint64_t b = bar_base(t);
	if (!(cfg16(t, PCI_COMMAND) & PCI_COMMAND_MEMORY) || b < KAP_PCI_MMIO_BASE ||
	    b + KAP_VPCI_BAR_SIZE > KAP_PCI_MMIO_BASE + KAP_PCI_MMIO_SIZE)
		return 0;
	return b;
}

/*
 * Moves the notify ioeventfds to where BAR 0 decodes now. A failure leaves that queue on the
 * trapping path (bar_write still kicks it), so it is logged, not fatal.
 */
static void remap_notify(struct kap_pci_transport *t)
{
	uint64_t nb = decoded_base(t);
	if (!t->vm || nb == t->notify_base)
		return;
	struct kap_virtio_dev *d = t->dev;
	for (unsigned int q = 0; q < d->ops->nqueues; q++) {
		uint64_t off = KAP_VPCI_NOTIFY_OFF + (uint64_t)q * KAP_VPCI_NOTIFY_MULT;
		if (t->notify_base)
			kap_vm_ioeventfd_del(t->vm, t->notify_base + off, 2, d->kick_fd[q]);
		struct kapsel_error *err = NULL;
		if (nb && kap_vm_ioeventfd(t->vm, nb + off, 2, false, d->kick_fd[q], &err) < 0) {
			kap_debug("%s: %s", d->id, (err ? err->msg : "?"));
			kapsel_error_free(err);
		}
	}
	t->notify_base = nb;
}

static void reset_vectors(struct kap_pci_transport *t)
{
	t->msix_config = VIRTIO_MSI_NO_VECTOR;
	for (unsigned int q = 0; q < KAP_VIRTIO_MAX_QUEUES; q++)
		t->queue_vector[q] = VIRTIO_MSI_NO_VECTOR;
}

static uint16_t checked_vector(const struct kap_pci_transport *t, uint16_t v)
{
	/* §4.1.5.1.2: a vector the device cannot use reads back as NO_VECTOR. */
	return v < t->nvec ? v : VIRTIO_MSI_NO_VECTOR;
}

/* struct virtio_pci_common_cfg as the driver reads it now (§4.1.4.3). */
static void common_image(struct kap_pci_transport *t, uint8_t img[64])
{
	struct kap_virtio_dev *d = t->dev;
	struct kap_vq *q = d->queue_sel < d->ops->nqueues ? &d->vq[d->queue_sel] : NULL;
	memset(img, 0, 64);
	put32(img + VIRTIO_PCI_COMMON_DFSELECT, d->dev_feat_sel);
	put32(img + VIRTIO_PCI_COMMON_DF,
	      d->dev_feat_sel < 2 ? (uint32_t)(d->features >> (32 * d->dev_feat_sel)) : 0);
	put32(img + VIRTIO_PCI_COMMON_GFSELECT, d->drv_feat_sel);
	put32(img + VIRTIO_PCI_COMMON_GF,
	      d->drv_feat_sel < 2 ? (uint32_t)(d->driver_features >> (32 * d->drv_feat_sel)) : 0);
	put16(img + VIRTIO_PCI_COMMON_MSIX, t->msix_config);
	put16(img + VIRTIO_PCI_COMMON_NUMQ, (uint16_t)d->ops->nqueues);
	img[VIRTIO_PCI_COMMON_STATUS] = d->status;
	img[VIRTIO_PCI_COMMON_CFGGENERATION] = (uint8_t)d->config_generation;
	put16(img + VIRTIO_PCI_COMMON_Q_SELECT, d->queue_sel);
	if (!q)
		return; /* §4.1.4.3.2: queue_size 0 for a queue that does not exist */
	put16(img + VIRTIO_PCI_COMMON_Q_SIZE, q->size);
	put16(img + VIRTIO_PCI_COMMON_Q_MSIX, t->queue_vector[d->queue_sel]);
	put16(img + VIRTIO_PCI_COMMON_Q_ENABLE, q->ready);
	put16(img + VIRTIO_PCI_COMMON_Q_NOFF, d->queue_sel);
	memcpy(img + VIRTIO_PCI_COMMON_Q_DESCLO, &q->desc_gpa, 8);
	memcpy(img + VIRTIO_PCI_COMMON_Q_AVAILLO, &q->avail_gpa, 8);
	memcpy(img + VIRTIO_PCI_COMMON_Q_USEDLO, &q->used_gpa, 8);
	put16(img + VIRTIO_PCI_COMMON_Q_NDATA, d->queue_sel);
}

static void set_half(uint64_t *field, bool hi, uint32_t v)
{
	*field = hi ? (*field & 0xffffffffULL) | (uint64_t)v << 32
		    : (*field & 0xffffffff00000000ULL) | v;
}

/* A driver write to the common structure: each field at its own width (§4.1.3.1). */
static void common_write(struct kap_pci_transport *t, uint64_t off, uint64_t v, unsigned int len)
{
	struct kap_virtio_dev *d = t->dev;
	struct kap_vq *q = d->queue_sel < d->ops->nqueues ? &d->vq[d->queue_sel] : NULL;
	/* §4.1.4.3.2: the queue's fields are frozen once it is enabled. */
	bool q_writable = q && !q->ready && !(d->status & VIRTIO_CONFIG_S_DRIVER_OK);
	uint32_t v32 = (uint32_t)v;
	if (len == 8 && off >= VIRTIO_PCI_COMMON_Q_DESCLO && off <= VIRTIO_PCI_COMMON_Q_USEDLO &&
	    !(off & 7)) {
		if (!q_writable)
			return;
		uint64_t *f = off == VIRTIO_PCI_COMMON_Q_DESCLO	   ? &q->desc_gpa
			      : off == VIRTIO_PCI_COMMON_Q_AVAILLO ? &q->avail_gpa
								   : &q->used_gpa;
		*f = v;
		return;
	}
	if (len == 4) {
		switch (off) {
		case VIRTIO_PCI_COMMON_DFSELECT:
			d->dev_feat_sel = v32;
			return;
		case VIRTIO_PCI_COMMON_GFSELECT:
			d->drv_feat_sel = v32;
			return;
		case VIRTIO_PCI_COMMON_GF:
			if (d->drv_feat_sel < 2 && !(d->status & VIRTIO_CONFIG_S_FEATURES_OK)) {
				unsigned int sh = 32 * d->drv_feat_sel;
				d->driver_features = (d->driver_features & ~(0xffffffffULL << sh)) |
						     ((uint64_t)v32 << sh);
			}
			return;
		case VIRTIO_PCI_COMMON_Q_DESCLO:
		case VIRTIO_PCI_COMMON_Q_DESCHI:
			if (q_writable)
				set_half(&q->desc_gpa, off & 4, v32);
			return;
		case VIRTIO_PCI_COMMON_Q_AVAILLO:
		case VIRTIO_PCI_COMMON_Q_AVAILHI:
			if (q_writable)
				set_half(&q->avail_gpa, off & 4, v32);
			return;
		case VIRTIO_PCI_COMMON_Q_USEDLO:
		case VIRTIO_PCI_COMMON_Q_USEDHI:
			if (q_writable)
				set_half(&q->used_gpa, off & 4, v32);
			return;
		}
		return;
	}
	if (len == 1 && off == VIRTIO_PCI_COMMON_STATUS) {
		kap_virtio_set_status(d, (uint8_t)v);
		if (v == 0) {
			/* §4.1.4.3.2: a reset also forgets the vectors. */
			reset_vectors(t);
			t->pba = 0;
		}
		return;
	}
	if (len != 2)
		return;
	uint16_t v16 = (uint16_t)v;
	switch (off) {
	case VIRTIO_PCI_COMMON_MSIX:
		t->msix_config = checked_vector(t, v16);
		return;
	case VIRTIO_PCI_COMMON_Q_SELECT:
		d->queue_sel = v16;
		return;
	case VIRTIO_PCI_COMMON_Q_SIZE:
		if (q_writable)
			q->size = v16;
		return;
	case VIRTIO_PCI_COMMON_Q_MSIX:
		if (q)
			t->queue_vector[d->queue_sel] = checked_vector(t, v16);
		return;
	case VIRTIO_PCI_COMMON_Q_ENABLE:
		/* §4.1.4.3.2: the driver only ever writes 1; disabling is a reset. */
		if (q && v16 == 1 && !q->ready)
			kap_virtio_queue_enable(d, d->queue_sel);
		return;
	}
}

/* MSI-X table and PBA (PCI 3.0 §6.8.2.6-§6.8.2.10): dword or qword, naturally aligned. */
static void msix_read(struct kap_pci_transport *t, uint64_t off, void *data, unsigned int len)
{
	if ((len != 4 && len != 8) || (off & (len - 1)))
		return;
	if (off >= KAP_VPCI_MSIX_OFF && off - KAP_VPCI_MSIX_OFF < (uint64_t)t->nvec * 16) {
		uint64_t o = off - KAP_VPCI_MSIX_OFF;
		memcpy(data, (const uint8_t *)&t->msix[o / 16] + (o % 16), len);
	} else if (off == KAP_VPCI_PBA_OFF) {
		uint64_t pba = t->pba;
		memcpy(data, &pba, len);
	}
}

static void msix_write(struct kap_pci_transport *t, uint64_t off, const void *data,
		       unsigned int len)
{
	if ((len != 4 && len != 8) || (off & (len - 1)) || off < KAP_VPCI_MSIX_OFF ||
	    off - KAP_VPCI_MSIX_OFF >= (uint64_t)t->nvec * 16)
		return;
	uint64_t o = off - KAP_VPCI_MSIX_OFF;
	unsigned int v = (unsigned int)(o / 16);
	struct kap_vpci_msix_entry *e = &t->msix[v];
	bool was_masked = e->ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT;
	uint32_t w[2];
	memcpy(w, data, len);
	for (unsigned int i = 0; i < len / 4; i++) {
		unsigned int field = (unsigned int)(o % 16) / 4 + i;
		if (field == 0)
			e->addr_lo = w[i];
		else if (field == 1)
			e->addr_hi = w[i];
		else if (field == 2)
			e->data = w[i];
		else
			e->ctrl = w[i] & PCI_MSIX_ENTRY_CTRL_MASKBIT;
	}
	if (o % 16 < 12)
		update_route(t, v);
	if (was_masked && !(e->ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT))
		deliver_pending(t);
}

/* Device lock held. */
static void bar_read_locked(struct kap_pci_transport *t, uint64_t off, void *data, unsigned int len)
{
	struct kap_virtio_dev *d = t->dev;
	memset(data, 0, len);
	if (off < KAP_VPCI_ISR_OFF) {
		uint8_t img[64];
		if (off + len <= sizeof(img) && !(off & (len - 1))) {
			common_image(t, img);
			memcpy(data, img + off, len);
		}
	} else if (off == KAP_VPCI_ISR_OFF && len == 1) {
		/* §4.1.4.5.1: reading ISR clears it (and with it the INTx level). */
		*(uint8_t *)data = (uint8_t)atomic_exchange(&d->isr, 0);
	} else if (off >= KAP_VPCI_DEVICE_OFF && off < KAP_VPCI_NOTIFY_OFF) {
		uint64_t c = off - KAP_VPCI_DEVICE_OFF;
		if (c < d->ops->config_len && len <= d->ops->config_len - c && d->ops->config_read)
			d->ops->config_read(d, (uint32_t)c, data, len);
	} else if (off >= KAP_VPCI_MSIX_OFF) {
		msix_read(t, off, data, len);
	}
}

static void bar_write_locked(struct kap_pci_transport *t, uint64_t off, const void *data,
			     unsigned int len)
{
	struct kap_virtio_dev *d = t->dev;
	uint64_t v = 0;
	memcpy(&v, data, len);
	if (off < KAP_VPCI_ISR_OFF) {
		if (off + len <= 64 && !(off & (len - 1)))
			common_write(t, off, v, len);
	} else if (off >= KAP_VPCI_DEVICE_OFF && off < KAP_VPCI_NOTIFY_OFF) {
		uint64_t c = off - KAP_VPCI_DEVICE_OFF;
		if (c < d->ops->config_len && len <= d->ops->config_len - c && d->ops->config_write)
			d->ops->config_write(d, (uint32_t)c, data, len);
	} else if (off >= KAP_VPCI_NOTIFY_OFF && off < KAP_VPCI_MSIX_OFF) {
		/* A notification KVM did not catch: §4.1.4.4, the queue is the offset's. */
		uint64_t q = (off - KAP_VPCI_NOTIFY_OFF) / KAP_VPCI_NOTIFY_MULT;
		if (q < d->ops->nqueues)
			signal_fd(d->kick_fd[q]);
	} else if (off >= KAP_VPCI_MSIX_OFF) {
		msix_write(t, off, data, len);
	}
}

static void bar_read(void *opaque, uint64_t off, void *data, unsigned int len)
{
	struct kap_pci_transport *t = opaque;
	memset(data, 0, len);
	if (off >= KAP_VPCI_BAR_SIZE || len > KAP_VPCI_BAR_SIZE - off || len > 8)
		return;
	pthread_mutex_lock(&t->dev->lock);
	bar_read_locked(t, off, data, len);
	pthread_mutex_unlock(&t->dev->lock);
}

static void bar_write(void *opaque, uint64_t off, const void *data, unsigned int len)
{
	struct kap_pci_transport *t = opaque;
	if (off >= KAP_VPCI_BAR_SIZE || len > KAP_VPCI_BAR_SIZE - off || len > 8)
		return;
	pthread_mutex_lock(&t->dev->lock);
	bar_write_locked(t, off, data, len);
	pthread_mutex_unlock(&t->dev->lock);
}

static void bar_window(void *opaque, uint64_t *base, uint64_t *size)
{
	struct kap_pci_transport *t = opaque;
	pthread_mutex_lock(&t->dev->lock);
	*base = decoded_base(t);
	*size = *base ? KAP_VPCI_BAR_SIZE : 0;
	pthread_mutex_unlock(&t->dev->lock);
}

/* ---- configuration space ---- */

/*
 * VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9): an access to pci_cfg_data reaches BAR 0 at cap.offset,
 * cap.length bytes (1, 2 or 4), naturally aligned; anything else is ignored.
 */
static bool pci_cfg_window(const struct kap_pci_transport *t, uint64_t *off, unsigned int *len)
{
	*off = cfg32(t, CAP_PCI_CFG + VIRTIO_PCI_CAP_OFFSET);
	*len = cfg32(t, CAP_PCI_CFG + VIRTIO_PCI_CAP_LENGTH);
	return t->cfg[CAP_PCI_CFG + VIRTIO_PCI_CAP_BAR] == 0 &&
	       (*len == 1 || *len == 2 || *len == 4) && !(*off & (*len - 1)) &&
	       *off + *len <= KAP_VPCI_BAR_SIZE;
}

static void cfg_read(void *opaque, uint32_t off, void *data, unsigned int len)
{
	struct kap_pci_transport *t = opaque;
	struct kap_virtio_dev *d = t->dev;
	memset(data, 0, len);
	if (off >= KAP_PCI_CONFIG_SIZE || len > KAP_PCI_CONFIG_SIZE - off || len > 4)
		return;
	pthread_mutex_lock(&d->lock);
	uint8_t buf[4];
	memcpy(buf, t->cfg + off, len);
	/* Status bit 3: the INTx line is asserted while ISR is non-zero (PCI 3.0 §6.2.3). */
	if (off <= PCI_STATUS && off + len > PCI_STATUS && atomic_load(&d->isr) && !msix_enabled(t))
		buf[PCI_STATUS - off] |= PCI_STATUS_INTERRUPT;
	uint32_t data_off = CAP_PCI_CFG + sizeof(struct virtio_pci_cap);
	uint64_t boff;
	unsigned int blen;
	if (off == data_off && pci_cfg_window(t, &boff, &blen) && len >= blen) {
		uint32_t v = 0;
		bar_read_locked(t, boff, &v, blen);
		memcpy(buf, &v, len);
	}
	memcpy(data, buf, len);
	pthread_mutex_unlock(&d->lock);
}

static void cfg_write(void *opaque, uint32_t off, const void *data, unsigned int len)
{
	struct kap_pci_transport *t = opaque;
	struct kap_virtio_dev *d = t->dev;
	if (off >= KAP_PCI_CONFIG_SIZE || len > KAP_PCI_CONFIG_SIZE - off || len > 4)
		return;
	const uint8_t *p = data;
	pthread_mutex_lock(&d->lock);
	uint32_t data_off = CAP_PCI_CFG + sizeof(struct virtio_pci_cap);
	uint64_t boff;
	unsigned int blen;
	if (off == data_off && pci_cfg_window(t, &boff, &blen) && len >= blen) {
		bar_write_locked(t, boff, data, blen);
		pthread_mutex_unlock(&d->lock);
		return;
	}
	uint16_t old_msix = cfg16(t, CAP_MSIX + PCI_MSIX_FLAGS);
	for (unsigned int i = 0; i < len; i++) {
		uint8_t m = t->wmask[off + i];
		t->cfg[off + i] = (uint8_t)((t->cfg[off + i] & ~m) | (p[i] & m));
	}
	/*
	 * BAR 0 keeps its size alignment, so writing all ones reads back the size mask (PCI 3.0
	 * §6.2.5.1, how Linux sizes it); the wmask already keeps the type bits at zero.
	 */
	put32(t->cfg + PCI_BASE_ADDRESS_0,
	      cfg32(t, PCI_BASE_ADDRESS_0) & ~(uint32_t)(KAP_VPCI_BAR_SIZE - 1));
	remap_notify(t);
	uint16_t now_msix = cfg16(t, CAP_MSIX + PCI_MSIX_FLAGS);
	if (now_msix != old_msix)
		deliver_pending(t);
	pthread_mutex_unlock(&d->lock);
}

static void pci_reset(struct kap_pci_transport *t)
{
	reset_vectors(t);
	t->pba = 0;
	for (unsigned int v = 0; v < KAP_VPCI_MSIX_VECTORS; v++)
		t->msix[v] = (struct kap_vpci_msix_entry){.ctrl = PCI_MSIX_ENTRY_CTRL_MASKBIT};
}

/* PCI class codes for the device types (class << 16 | subclass << 8). */
static uint32_t class_code(uint32_t device_id)
{
	switch (device_id) {
	case 1: /* net */
		return 0x020000;
	case 2: /* blk */
		return 0x018000;
	case 3: /* console */
		return 0x078000;
	default:
		return 0xff0000;
	}
}

int kap_virtio_pci_init(struct kap_pci_transport *t, struct kap_virtio_dev *d, unsigned int slot,
			uint64_t bar, struct kapsel_error **err)
{
	memset(t, 0, sizeof(*t));
	t->dev = d;
	t->slot = slot;
	t->intx_gsi = KAP_PCI_INTX_GSI + (slot - 1) % 8;
	t->nvec = d->ops->nqueues + 1;
	for (unsigned int v = 0; v < KAP_VPCI_MSIX_VECTORS; v++)
		t->vec_fd[v] = -EBADF;
	if (bar & (KAP_VPCI_BAR_SIZE - 1) || bar > UINT32_MAX)
		return kap_error_plain(err, EINVAL, "%s: bad BAR address 0x%" PRIx64, d->id, bar);
	pci_reset(t);

	uint8_t *c = t->cfg, *w = t->wmask;
	put16(c + PCI_VENDOR_ID, VIRTIO_PCI_VENDOR);
	put16(c + PCI_DEVICE_ID, (uint16_t)(VIRTIO_PCI_DEVICE + d->ops->device_id));
	/* Decoding on, as firmware leaves a device it assigned; the driver may turn it off. */
	put16(c + PCI_COMMAND, PCI_COMMAND_MEMORY);
	put16(w + PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
	put16(c + PCI_STATUS, PCI_STATUS_CAP_LIST);
	c[PCI_REVISION_ID] = 1; /* §4.1.2.1: non-transitional */
	uint32_t cls = class_code(d->ops->device_id);
	c[PCI_CLASS_PROG] = (uint8_t)cls;
	c[PCI_CLASS_DEVICE] = (uint8_t)(cls >> 8);
	c[PCI_CLASS_DEVICE + 1] = (uint8_t)(cls >> 16);
	c[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;
	put32(c + PCI_BASE_ADDRESS_0, (uint32_t)bar);
	put32(w + PCI_BASE_ADDRESS_0, ~(uint32_t)0xf);
	put16(c + PCI_SUBSYSTEM_VENDOR_ID, VIRTIO_PCI_VENDOR);
	put16(c + PCI_SUBSYSTEM_ID, 0x40); /* §4.1.2.1: 0x40 or more */
	c[PCI_CAPABILITY_LIST] = CAP_MSIX;
	c[PCI_INTERRUPT_LINE] = (uint8_t)t->intx_gsi;
	w[PCI_INTERRUPT_LINE] = 0xff;
	c[PCI_INTERRUPT_PIN] = 1; /* INTA# */

	/* MSI-X: table size N-1, table and PBA in BAR 0 (BIR 0). */
	c[CAP_MSIX] = PCI_CAP_ID_MSIX;
	c[CAP_MSIX + 1] = CAP_COMMON;
	put16(c + CAP_MSIX + PCI_MSIX_FLAGS, (uint16_t)(t->nvec - 1));
	put16(w + CAP_MSIX + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
	put32(c + CAP_MSIX + PCI_MSIX_TABLE, KAP_VPCI_MSIX_OFF);
	put32(c + CAP_MSIX + PCI_MSIX_PBA, KAP_VPCI_PBA_OFF);

	put_cap(t, CAP_COMMON, CAP_NOTIFY, sizeof(struct virtio_pci_cap), VIRTIO_PCI_CAP_COMMON_CFG,
		KAP_VPCI_COMMON_OFF, 64);
	put_cap(t, CAP_NOTIFY, CAP_ISR, sizeof(struct virtio_pci_notify_cap),
		VIRTIO_PCI_CAP_NOTIFY_CFG, KAP_VPCI_NOTIFY_OFF,
		d->ops->nqueues * KAP_VPCI_NOTIFY_MULT);
	put32(c + CAP_NOTIFY + sizeof(struct virtio_pci_cap), KAP_VPCI_NOTIFY_MULT);
	/* §4.1.4.7: no device-specific structure when the device has no config space. */
	put_cap(t, CAP_ISR, d->ops->config_len ? CAP_DEVICE : CAP_PCI_CFG,
		sizeof(struct virtio_pci_cap), VIRTIO_PCI_CAP_ISR_CFG, KAP_VPCI_ISR_OFF, 1);
	if (d->ops->config_len)
		put_cap(t, CAP_DEVICE, CAP_PCI_CFG, sizeof(struct virtio_pci_cap),
			VIRTIO_PCI_CAP_DEVICE_CFG, KAP_VPCI_DEVICE_OFF, d->ops->config_len);
	put_cap(t, CAP_PCI_CFG, 0, sizeof(struct virtio_pci_cfg_cap), VIRTIO_PCI_CAP_PCI_CFG, 0, 0);
	/* §4.1.4.9: the driver writes bar, offset, length and data. */
	w[CAP_PCI_CFG + VIRTIO_PCI_CAP_BAR] = 0xff;
	memset(w + CAP_PCI_CFG + VIRTIO_PCI_CAP_OFFSET, 0xff, 8);
	_Static_assert(CAP_PCI_CFG + sizeof(struct virtio_pci_cfg_cap) == CAP_END, "layout");

	t->func = (struct kap_pci_func){
	    .opaque = t,
	    .cfg_read = cfg_read,
	    .cfg_write = cfg_write,
	    .bar_window = bar_window,
	    .bar_read = bar_read,
	    .bar_write = bar_write,
	};
	d->interrupt = pci_interrupt;
	d->line_enabled = pci_line_enabled;
	d->transport = t;
	return 0;
}

int kap_virtio_pci_attach(struct kap_vm *vm, struct kap_pci_host *h, struct kap_pci_transport *t,
			  struct kapsel_error **err)
{
	struct kap_virtio_dev *d = t->dev;
	if (t->slot == 0 || t->slot >= KAP_PCI_MAX_SLOTS || h->slot[t->slot])
		return kap_error_plain(err, EEXIST, "%s: PCI slot %u taken", d->id, t->slot);
	for (unsigned int v = 0; v < t->nvec; v++) {
		t->vec_fd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (t->vec_fd[v] < 0)
			return kap_error(err, errno, "%s: eventfd", d->id);
		int r = kap_vm_alloc_gsi(vm, &t->vec_gsi[v], err);
		if (r < 0 || (r = kap_vm_irqfd(vm, t->vec_gsi[v], t->vec_fd[v], err)) < 0)
			return kap_error_wrap(err, "%s: MSI-X vector %u", d->id, v);
	}
	/* INTx is level-triggered (PCI 3.0 §2.2.6): up until the EOI, again while ISR is set. */
	int r = kap_vm_irqfd_level(vm, t->intx_gsi, d->irq_fd, d->resample_fd, err);
	if (r < 0)
		return kap_error_wrap(err, "%s: INTx", d->id);
	t->vm = vm;
	h->slot[t->slot] = &t->func;
	pthread_mutex_lock(&d->lock);
	remap_notify(t);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

void kap_virtio_pci_destroy(struct kap_pci_transport *t)
{
	if (!t->dev)
		return; /* never initialised */
	for (unsigned int v = 0; v < KAP_VPCI_MSIX_VECTORS; v++)
		if (t->vec_fd[v] >= 0)
			close(t->vec_fd[v]);
	for (unsigned int v = 0; v < KAP_VPCI_MSIX_VECTORS; v++)
		t->vec_fd[v] = -EBADF;
}

void kap_virtio_pci_save(struct kap_pci_transport *t, struct kap_vpci_state *s)
{
	memset(s, 0, sizeof(*s));
	memcpy(s->cfg, t->cfg, sizeof(s->cfg));
	memcpy(s->msix, t->msix, sizeof(s->msix));
	s->pba = t->pba;
	s->nvec = t->nvec;
	s->msix_config = t->msix_config;
	memcpy(s->queue_vector, t->queue_vector, sizeof(s->queue_vector));
}

int kap_virtio_pci_load(struct kap_pci_transport *t, const struct kap_vpci_state *s,
			const char **why)
{
	if (s->nvec != t->nvec) {
		*why = "a PCI function with another number of MSI-X vectors";
		return -1;
	}
	/* Only what the driver may write comes from the file; the rest is this function's. */
	for (unsigned int i = 0; i < KAP_PCI_CONFIG_SIZE; i++) {
		if ((s->cfg[i] ^ t->cfg[i]) & ~t->wmask[i]) {
			*why = "a PCI function with another configuration space (read-only bytes "
			       "differ)";
			return -1;
		}
		t->cfg[i] = s->cfg[i];
	}
	put32(t->cfg + PCI_BASE_ADDRESS_0,
	      cfg32(t, PCI_BASE_ADDRESS_0) & ~(uint32_t)(KAP_VPCI_BAR_SIZE - 1));
	for (unsigned int v = 0; v < KAP_VPCI_MSIX_VECTORS; v++) {
		t->msix[v] = s->msix[v];
		t->msix[v].ctrl &= PCI_MSIX_ENTRY_CTRL_MASKBIT;
	}
	t->pba = s->pba & ((1u << t->nvec) - 1);
	t->msix_config = checked_vector(t, s->msix_config);
	for (unsigned int q = 0; q < KAP_VIRTIO_MAX_QUEUES; q++)
		t->queue_vector[q] = checked_vector(t, s->queue_vector[q]);
	remap_notify(t);
	for (unsigned int v = 0; v < t->nvec; v++)
		update_route(t, v);
	/* A PBA bit belongs to a masked vector: it fires when the driver unmasks it. */
	return 0;
}
