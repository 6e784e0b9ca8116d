/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-rng (virtio 1.2 §5.4): fills the driver's writable buffers from getrandom(2). */
#include <errno.h>
#include <linux/virtio_ids.h>
#include <stdlib.h>
#include <sys/random.h>

#include "core/error.h"
#include "vmm/virtio/transport.h"

struct rng {
	struct kap_vq_elem elem;
};

static void rng_process(struct kap_virtio_dev *d, unsigned int q)
{
	struct rng *g = d->priv;
	pthread_mutex_lock(&d->lock);
	bool pushed = false;
	while (kap_virtio_pop(d, q, &g->elem) > 0) {
		uint32_t done = 0;
		for (unsigned int i = g->elem.nread; i < g->elem.nseg; i++) {
			/* A short or failed read gives the driver fewer bytes, never stale ones. */
			ssize_t n =
			    getrandom(g->elem.seg[i].host, g->elem.seg[i].len, GRND_NONBLOCK);
			if (n <= 0)
				break;
			done += (uint32_t)n;
			if ((uint32_t)n < g->elem.seg[i].len)
				break;
		}
		kap_vq_push(&d->vq[q], g->elem.head, done);
		pushed = true;
	}
	if (pushed)
		kap_virtio_notify(d, q);
	pthread_mutex_unlock(&d->lock);
}

static void rng_free(struct kap_virtio_dev *d)
{
	free(d->priv);
	d->priv = NULL;
}

static const struct kap_virtio_ops rng_ops = {
    .name = "virtio-rng",
    .device_id = VIRTIO_ID_RNG,
    .nqueues = 1,
    .process = rng_process,
    .free = rng_free,
};

int kap_virtio_rng_new(struct kap_virtio_dev *d, const struct kap_guest_mem *mem,
		       struct kapsel_error **err)
{
	int r = kap_virtio_init(d, &rng_ops, "rng0", mem, err);
	if (r < 0)
		return r;
	d->priv = calloc(1, sizeof(struct rng));
	if (!d->priv)
		return kap_error(err, ENOMEM, "rng0");
	return 0;
}
