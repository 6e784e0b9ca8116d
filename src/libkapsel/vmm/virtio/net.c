/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net (virtio 1.2 §5.1) over a tap: queue 0 receives, queue 1 transmits. No offloads
 * are offered, so every frame is a plain Ethernet frame behind a zeroed virtio_net_hdr_v1 and
 * the tap runs without IFF_VNET_HDR.
 *
 * RX: the tap fd sits in the event loop edge-triggered; each edge kicks queue 0, and the device
 * thread reads frames until the tap is empty or the driver has no buffer left. A frame read
 * while no buffer is available waits in `frame` until the driver adds one (which notifies
 * queue 0), so nothing polls. TX: each chain is header + frame, copied out and written to the
 * tap; a full tap drops the frame, as a wire would.
 */
#include <errno.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_net.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "net/tap.h"
#include "vmm/virtio/transport.h"

#define RXQ 0
#define TXQ 1
#define HDR sizeof(struct virtio_net_hdr_v1)
/* The largest frame a tap delivers without GSO is its MTU plus 18 bytes; 64 KiB covers all. */
#define FRAME_MAX 65536

struct net {
	int fd;
	int ifindex; /* a tap kapsel created (bridge=): deleted on free */
	char ifname[IFNAMSIZ];
	uint8_t config[12]; /* struct virtio_net_config up to max_virtqueue_pairs, padded */
	bool pending;	    /* frame holds a frame that no buffer took yet */
	uint32_t pending_len;
	uint64_t dropped;
	struct kap_vq_elem rx, tx;
	uint8_t frame[HDR + FRAME_MAX]; /* header then frame, as the driver receives it */
	uint8_t out[FRAME_MAX];
};

static void net_config_read(struct kap_virtio_dev *d, uint32_t off, void *data, unsigned int len)
{
	struct net *n = d->priv;
	memcpy(data, n->config + off, len);
}

static void drop(struct kap_virtio_dev *d, struct net *n, const char *why)
{
	/* Rate-limited by construction: the first and then every 1024th. */
	if ((n->dropped++ & 1023) == 0)
		kap_debug("%s: dropped a frame: %s (%llu so far)", d->id, why,
			  (unsigned long long)n->dropped);
}

static void rx_process(struct kap_virtio_dev *d, struct net *n)
{
	bool pushed = false;
	for (;;) {
		if (!n->pending) {
			ssize_t r = read(n->fd, n->frame + HDR, FRAME_MAX);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				if (r < 0 && errno != EAGAIN)
					kap_debug("%s: read tap: %s", d->id, strerror(errno));
				break;
			}
			n->pending = true;
			n->pending_len = (uint32_t)r;
		}
		if (kap_virtio_pop(d, RXQ, &n->rx) <= 0)
			break;
		uint32_t len = (uint32_t)HDR + n->pending_len;
		n->pending = false;
		if (n->rx.write_len < len) {
			/* §5.1.6.3.1: without MRG_RXBUF a buffer must hold a whole frame. */
			drop(d, n, "receive buffer too small");
			kap_vq_push(&d->vq[RXQ], n->rx.head, 0);
		} else {
			/* §5.1.6.4: no checksum or GSO to report; num_buffers is 1. */
			struct virtio_net_hdr_v1 h = {.num_buffers = 1};
			memcpy(n->frame, &h, HDR);
			kap_vq_elem_write(&n->rx, 0, n->frame, len);
			kap_vq_push(&d->vq[RXQ], n->rx.head, len);
		}
		pushed = true;
	}
	if (pushed)
		kap_virtio_notify(d, RXQ);
}

static void tx_process(struct kap_virtio_dev *d, struct net *n)
{
	bool pushed = false;
	while (kap_virtio_pop(d, TXQ, &n->tx) > 0) {
		/* §5.1.6.2: header then frame, all device-readable. */
		uint64_t len = n->tx.read_len;
		if (len < HDR || len - HDR > FRAME_MAX) {
			drop(d, n, "transmit chain without header or larger than 64 KiB");
		} else {
			len -= HDR;
			kap_vq_elem_read(&n->tx, HDR, n->out, len);
			ssize_t r;
			do
				r = write(n->fd, n->out, len);
			while (r < 0 && errno == EINTR);
			if (r < 0)
				drop(d, n, strerror(errno));
		}
		kap_vq_push(&d->vq[TXQ], n->tx.head, 0);
		pushed = true;
	}
	if (pushed)
		kap_virtio_notify(d, TXQ);
}

static void net_process(struct kap_virtio_dev *d, unsigned int q)
{
	struct net *n = d->priv;
	pthread_mutex_lock(&d->lock);
	if (q == RXQ)
		rx_process(d, n);
	else if (q == TXQ)
		tx_process(d, n);
	pthread_mutex_unlock(&d->lock);
}

static void net_reset(struct kap_virtio_dev *d)
{
	struct net *n = d->priv;
	n->pending = false;
}

static void on_tap(void *opaque, uint32_t events)
{
	(void)events;
	kap_virtio_kick(opaque, RXQ);
}

static int net_attach_loop(struct kap_virtio_dev *d, struct kap_loop *l, struct kapsel_error **err)
{
	struct net *n = d->priv;
	/* Edge-triggered: a frame no buffer can take yet must not wake the loop again. */
	return kap_loop_add(l, n->fd, EPOLLIN | EPOLLET, on_tap, d, err);
}

static void net_free(struct kap_virtio_dev *d)
{
	struct net *n = d->priv;
	if (!n)
		return;
	if (n->ifindex > 0) {
		struct kapsel_error *err = NULL;
		if (kap_tap_delete(n->ifindex, &err) < 0) {
			kap_warn("%s: %s", d->id, err ? err->msg : "?");
			kapsel_error_free(err);
		}
	}
	if (n->fd >= 0)
		close(n->fd);
	free(n);
	d->priv = NULL;
}

static const struct kap_virtio_ops net_ops = {
    .name = "virtio-net",
    .device_id = VIRTIO_ID_NET,
    .nqueues = 2,
    .config_len = 12,
    .config_read = net_config_read,
    .process = net_process,
    .reset = net_reset,
    .free = net_free,
    .attach_loop = net_attach_loop,
};

int kap_virtio_net_new(struct kap_virtio_dev *d, const struct kapsel_vm_net *cfg,
		       const struct kap_guest_mem *mem, struct kapsel_error **err)
{
	int r = kap_virtio_init(d, &net_ops, cfg->id, mem, err);
	if (r < 0)
		return r;
	struct net *n = calloc(1, sizeof(*n));
	if (!n)
		return kap_error(err, ENOMEM, "%s", cfg->id);
	n->fd = -EBADF;
	d->priv = n;
	if (cfg->tap) {
		r = kap_tap_open(cfg->tap, &n->fd, err);
		snprintf(n->ifname, sizeof(n->ifname), "%s", cfg->tap);
	} else {
		r = kap_tap_create_on_bridge(cfg->bridge, n->ifname, &n->ifindex, &n->fd, err);
	}
	if (r < 0)
		return kap_error_wrap(err, "--net %s", cfg->id);
	uint8_t mac[6];
	if (cfg->has_mac) {
		memcpy(mac, cfg->mac, 6);
	} else {
		/* A random locally administered unicast address: bit 1 set, bit 0 clear. */
		if (getrandom(mac, sizeof(mac), 0) != sizeof(mac))
			return kap_error(err, errno, "%s: random MAC address", cfg->id);
		mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);
	}
	memcpy(n->config, mac, 6);
	uint16_t status = VIRTIO_NET_S_LINK_UP, pairs = 1;
	memcpy(n->config + 6, &status, 2);
	memcpy(n->config + 8, &pairs, 2);
	d->features |= (1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_STATUS);
	kap_debug("%s: tap %s, mac %02x:%02x:%02x:%02x:%02x:%02x", cfg->id, n->ifname, mac[0],
		  mac[1], mac[2], mac[3], mac[4], mac[5]);
	return 0;
}
