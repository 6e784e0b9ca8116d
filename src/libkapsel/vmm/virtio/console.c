/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-console (virtio 1.2 §5.3), one port without MULTIPORT: Linux's hvc0. Queue 0 carries
 * input to the guest, queue 1 its output, which goes to the VM's console backend like the
 * UART's. With this device the backend's input (stdin) comes here instead of the UART.
 *
 * Input arrives on the event thread into a bounded ring (kept while the driver has posted no
 * buffer, dropped beyond INPUT_MAX as a full UART FIFO would) and the event thread kicks
 * queue 0; the device thread moves it into the driver's buffers. EMERG_WRITE (§5.3.4) writes
 * one character from the config space, which works before the queues do.
 */
#include <errno.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/virtio/transport.h"

#define RXQ	  0
#define TXQ	  1
#define INPUT_MAX 4096

struct vcon {
	struct kap_console *con;
	struct kap_vq_elem elem;
	uint8_t in[INPUT_MAX]; /* ring: in_len bytes from in_head */
	size_t in_head, in_len;
	uint64_t in_dropped;
};

static void vcon_config_read(struct kap_virtio_dev *d, uint32_t off, void *data, unsigned int len)
{
	(void)d;
	(void)off;
	/* cols, rows (no F_SIZE), max_nr_ports (no F_MULTIPORT), emerg_wr: all read as 0. */
	memset(data, 0, len);
}

static void vcon_config_write(struct kap_virtio_dev *d, uint32_t off, const void *data,
			      unsigned int len)
{
	struct vcon *v = d->priv;
	/* emerg_wr at offset 8: the low byte is a character to print. */
	if (off == offsetof(struct virtio_console_config, emerg_wr) && len == 4)
		kap_console_write(v->con, data, 1);
}

static void rx_process(struct kap_virtio_dev *d, struct vcon *v)
{
	bool pushed = false;
	while (v->in_len && kap_virtio_pop(d, RXQ, &v->elem) > 0) {
		uint64_t done = 0;
		/* The ring wraps at most once: two copies fill as much of the buffer as fits. */
		while (v->in_len && done < v->elem.write_len) {
			size_t run = INPUT_MAX - v->in_head;
			if (run > v->in_len)
				run = v->in_len;
			uint64_t n = kap_vq_elem_write(&v->elem, done, v->in + v->in_head, run);
			if (n == 0)
				break;
			done += n;
			v->in_head = (v->in_head + n) % INPUT_MAX;
			v->in_len -= n;
		}
		kap_vq_push(&d->vq[RXQ], v->elem.head, (uint32_t)done);
		pushed = true;
	}
	if (pushed)
		kap_virtio_notify(d, RXQ);
}

static void tx_process(struct kap_virtio_dev *d, struct vcon *v)
{
	bool pushed = false;
	while (kap_virtio_pop(d, TXQ, &v->elem) > 0) {
		for (unsigned int i = 0; i < v->elem.nread; i++)
			kap_console_write(v->con, v->elem.seg[i].host, v->elem.seg[i].len);
		kap_vq_push(&d->vq[TXQ], v->elem.head, 0);
		pushed = true;
	}
	if (pushed)
		kap_virtio_notify(d, TXQ);
}

static void vcon_process(struct kap_virtio_dev *d, unsigned int q)
{
	struct vcon *v = d->priv;
	pthread_mutex_lock(&d->lock);
	if (q == RXQ)
		rx_process(d, v);
	else if (q == TXQ)
		tx_process(d, v);
	pthread_mutex_unlock(&d->lock);
}

void kap_virtio_console_input(void *dev, const uint8_t *buf, size_t len)
{
	struct kap_virtio_dev *d = dev;
	struct vcon *v = d->priv;
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < len; i++) {
		if (v->in_len == INPUT_MAX) {
			v->in_dropped += len - i;
			kap_debug("%s: input buffer full, dropped %zu bytes", d->id, len - i);
			break;
		}
		v->in[(v->in_head + v->in_len) % INPUT_MAX] = buf[i];
		v->in_len++;
	}
	pthread_mutex_unlock(&d->lock);
	kap_virtio_kick(d, RXQ);
}

static int vcon_attach_loop(struct kap_virtio_dev *d, struct kap_loop *l, struct kapsel_error **err)
{
	(void)l;
	(void)err;
	struct vcon *v = d->priv;
	/* Runs after vm.c pointed the input at the UART: hvc0 takes it over. */
	v->con->input = kap_virtio_console_input;
	v->con->input_dev = d;
	return 0;
}

static void vcon_free(struct kap_virtio_dev *d)
{
	free(d->priv);
	d->priv = NULL;
}

/* Snapshots: input the guest has not taken yet, in order. */
static int vcon_save(struct kap_virtio_dev *d, uint8_t *buf, size_t cap, const char **why)
{
	(void)why;
	struct vcon *v = d->priv;
	if (cap < v->in_len)
		return -1;
	for (size_t i = 0; i < v->in_len; i++)
		buf[i] = v->in[(v->in_head + i) % INPUT_MAX];
	return (int)v->in_len;
}

static int vcon_load(struct kap_virtio_dev *d, const uint8_t *buf, size_t len, const char **why)
{
	struct vcon *v = d->priv;
	if (len > INPUT_MAX) {
		*why = "virtio-console input longer than its buffer";
		return -1;
	}
	memcpy(v->in, buf, len);
	v->in_head = 0;
	v->in_len = len;
	return 0;
}

static const struct kap_virtio_ops vcon_ops = {
    .name = "virtio-console",
    .device_id = VIRTIO_ID_CONSOLE,
    .nqueues = 2,
    .config_len = sizeof(struct virtio_console_config),
    .config_read = vcon_config_read,
    .config_write = vcon_config_write,
    .process = vcon_process,
    .free = vcon_free,
    .attach_loop = vcon_attach_loop,
    .save = vcon_save,
    .load = vcon_load,
};

int kap_virtio_console_new(struct kap_virtio_dev *d, struct kap_console *con,
			   const struct kap_guest_mem *mem, struct kapsel_error **err)
{
	int r = kap_virtio_init(d, &vcon_ops, "console0", mem, err);
	if (r < 0)
		return r;
	struct vcon *v = calloc(1, sizeof(*v));
	if (!v)
		return kap_error(err, ENOMEM, "console0");
	v->con = con;
	d->priv = v;
	d->features |= 1ULL << VIRTIO_CONSOLE_F_EMERG_WRITE;
	return 0;
}
