/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft path's 8259A pair (Intel 8259A datasheet; the PC/AT wiring: slave on master IRQ 2,
 * ports 0x20/0x21 and 0xA0/0xA1, ELCR at 0x4D0/0x4D1). The KVM path keeps KVM's in-kernel
 * PIC; this one exists only with --accel soft. Edge-triggered inputs, fully nested priority
 * (IRQ 0 highest, no rotation), normal and automatic EOI, IRR/ISR reads through OCW3. Special
 * mask and poll modes are not here.
 *
 * Lines are raised from any thread (devices, the event thread); the vCPU takes interrupts at
 * block boundaries. One lock guards the chips; `pending` lets the vCPU skip it when idle.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "vmm/soft/irq.h"
#include "vmm/vmm.h"

struct chip {
	uint8_t irr, isr, imr, last_level;
	uint8_t base;	  /* ICW2: vector of IRQ 0 */
	uint8_t icw_step; /* 0: initialised; 2-4: expecting that ICW */
	bool icw4, auto_eoi, read_isr;
	uint8_t elcr;
};

struct kap_soft_pic {
	pthread_mutex_t lock;
	struct chip c[2];
	atomic_bool pending; /* some unmasked request may be deliverable */
};

/* The highest-priority request of c that outranks everything in service, or -1. */
static int chip_best(const struct chip *c)
{
	uint8_t req = c->irr & ~c->imr;
	for (int i = 0; i < 8; i++) {
		if (c->isr & (1u << i))
			return -1; /* fully nested: an equal or higher one is in service */
		if (req & (1u << i))
			return i;
	}
	return -1;
}

/* Recomputes the cascade (slave output on master IRQ 2) and `pending`. Lock held. */
static void update(struct kap_soft_pic *p)
{
	if (chip_best(&p->c[1]) >= 0)
		p->c[0].irr |= 1u << 2;
	else
		p->c[0].irr &= (uint8_t) ~(1u << 2);
	atomic_store(&p->pending, chip_best(&p->c[0]) >= 0);
}

void kap_soft_pic_set_irq(struct kap_soft_pic *p, unsigned int irq, int level)
{
	if (!p || irq >= 16 || irq == 2)
		return;
	struct chip *c = &p->c[irq >> 3];
	uint8_t m = (uint8_t)(1u << (irq & 7));
	pthread_mutex_lock(&p->lock);
	if (level) {
		if (!(c->last_level & m) || (c->elcr & m))
			c->irr |= m; /* a rising edge (or a level-triggered line that is high) */
		c->last_level |= m;
	} else {
		c->last_level &= (uint8_t)~m;
		if (c->elcr & m)
			c->irr &= (uint8_t)~m;
	}
	update(p);
	pthread_mutex_unlock(&p->lock);
}

bool kap_soft_pic_pending(struct kap_soft_pic *p)
{
	return p && atomic_load_explicit(&p->pending, memory_order_relaxed);
}

/* INTA: the vector to deliver, or -1 (the request went away). */
int kap_soft_pic_ack(struct kap_soft_pic *p)
{
	pthread_mutex_lock(&p->lock);
	int vec = -1;
	struct chip *m = &p->c[0];
	int irq = chip_best(m);
	if (irq >= 0) {
		if (irq == 2) {
			struct chip *s = &p->c[1];
			int sirq = chip_best(s);
			if (sirq >= 0) {
				if (!(s->elcr & (1u << sirq)))
					s->irr &= (uint8_t) ~(1u << sirq);
				if (!s->auto_eoi)
					s->isr |= (uint8_t)(1u << sirq);
				vec = s->base + sirq;
			} else {
				vec = s->base + 7; /* spurious */
			}
		} else {
			if (!(m->elcr & (1u << irq)))
				m->irr &= (uint8_t) ~(1u << irq);
			vec = m->base + irq;
		}
		if (!m->auto_eoi)
			m->isr |= (uint8_t)(1u << irq);
	}
	update(p);
	pthread_mutex_unlock(&p->lock);
	return vec;
}

static void chip_write(struct chip *c, unsigned int port, uint8_t v)
{
	if (port == 0) {
		if (v & 0x10) { /* ICW1 */
			c->icw4 = v & 1;
			c->icw_step = 2;
			c->imr = c->isr = c->irr = 0;
			c->read_isr = false;
			c->auto_eoi = false;
			c->last_level = 0;
		} else if (v & 0x08) { /* OCW3 */
			if (v & 2)
				c->read_isr = v & 1;
		} else { /* OCW2 */
			unsigned int cmd = v >> 5;
			if (cmd == 1 || cmd == 5) { /* non-specific EOI (and rotate) */
				for (int i = 0; i < 8; i++)
					if (c->isr & (1u << i)) {
						c->isr &= (uint8_t) ~(1u << i);
						break;
					}
			} else if (cmd == 3 || cmd == 7) { /* specific EOI */
				c->isr &= (uint8_t) ~(1u << (v & 7));
			}
		}
		return;
	}
	switch (c->icw_step) {
	case 2:
		c->base = v & 0xf8;
		c->icw_step = 3;
		return;
	case 3:
		c->icw_step = c->icw4 ? 4 : 0;
		return;
	case 4:
		c->auto_eoi = v & 2;
		c->icw_step = 0;
		return;
	default:
		c->imr = v; /* OCW1 */
	}
}

static void pic_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_soft_pic *p = dev;
	(void)len;
	uint8_t v = *(const uint8_t *)data;
	pthread_mutex_lock(&p->lock);
	/* The range covers 0x20..0xa1: only the two ports of each chip mean anything. */
	if (off <= 1)
		chip_write(&p->c[0], (unsigned int)off, v);
	else if (off == 0x80 || off == 0x81)
		chip_write(&p->c[1], (unsigned int)off - 0x80, v);
	update(p);
	pthread_mutex_unlock(&p->lock);
}

static void pic_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_soft_pic *p = dev;
	uint8_t v = 0xff;
	pthread_mutex_lock(&p->lock);
	struct chip *c = off <= 1 ? &p->c[0] : (off == 0x80 || off == 0x81) ? &p->c[1] : NULL;
	if (c)
		v = (off & 1) ? c->imr : c->read_isr ? c->isr : c->irr;
	pthread_mutex_unlock(&p->lock);
	memset(data, 0, len);
	*(uint8_t *)data = v;
}

static const struct kap_dev_ops pic_ops = {
    .name = "8259A (soft)",
    .read = pic_read,
    .write = pic_write,
};

static void elcr_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_soft_pic *p = dev;
	(void)len;
	pthread_mutex_lock(&p->lock);
	/* IRQs 0, 1, 2, 8 and 13 are edge-only on the PC (the ELCR's fixed bits). */
	p->c[off & 1].elcr = *(const uint8_t *)data & (off & 1 ? 0xde : 0xf8);
	update(p);
	pthread_mutex_unlock(&p->lock);
}

static void elcr_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_soft_pic *p = dev;
	memset(data, 0, len);
	pthread_mutex_lock(&p->lock);
	*(uint8_t *)data = p->c[off & 1].elcr;
	pthread_mutex_unlock(&p->lock);
}

static const struct kap_dev_ops elcr_ops = {
    .name = "ELCR (soft)",
    .read = elcr_read,
    .write = elcr_write,
};

int kap_soft_pic_create(struct kap_bus *pio, struct kap_soft_pic **out, struct kapsel_error **err)
{
	struct kap_soft_pic *p = calloc(1, sizeof(*p));
	if (!p)
		return kap_error(err, ENOMEM, "soft PIC");
	pthread_mutex_init(&p->lock, NULL);
	int r;
	/*
	 * One range from 0x20 to 0xa1 would swallow the PIT (0x40) and the i8042 (0x60): two
	 * ranges, 0x20-0x21 and 0xa0-0xa1, with offsets 0-1 and (from the first's base) 0x80.
	 */
	if ((r = kap_bus_register(pio, 0x20, 2, &pic_ops, p, err)) < 0 ||
	    (r = kap_bus_register(pio, 0xa0, 2, &kap_soft_pic_slave_ops, p, err)) < 0 ||
	    (r = kap_bus_register(pio, 0x4d0, 2, &elcr_ops, p, err)) < 0) {
		kap_soft_pic_free(p);
		return r;
	}
	*out = p;
	return 0;
}

/* The slave's ports: the same handlers with the slave's offsets. */
static void slave_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	pic_write(dev, off + 0x80, data, len);
}

static void slave_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	pic_read(dev, off + 0x80, data, len);
}

const struct kap_dev_ops kap_soft_pic_slave_ops = {
    .name = "8259A slave (soft)",
    .read = slave_read,
    .write = slave_write,
};

void kap_soft_pic_free(struct kap_soft_pic *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void kap_soft_pic_save(struct kap_soft_pic *p, struct kap_soft_pic_state *s)
{
	*s = (struct kap_soft_pic_state){0};
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < 2; i++) {
		const struct chip *c = &p->c[i];
		s->c[i].irr = c->irr;
		s->c[i].isr = c->isr;
		s->c[i].imr = c->imr;
		s->c[i].last_level = c->last_level;
		s->c[i].base = c->base;
		s->c[i].icw_step = c->icw_step;
		s->c[i].icw4 = c->icw4;
		s->c[i].auto_eoi = c->auto_eoi;
		s->c[i].read_isr = c->read_isr;
		s->c[i].elcr = c->elcr;
	}
	pthread_mutex_unlock(&p->lock);
}

int kap_soft_pic_load(struct kap_soft_pic *p, const struct kap_soft_pic_state *s, const char **why)
{
	for (int i = 0; i < 2; i++) {
		uint8_t step = s->c[i].icw_step;
		if (step == 1 || step > 4 || s->c[i].icw4 > 1 || s->c[i].auto_eoi > 1 ||
		    s->c[i].read_isr > 1) {
			*why = "soft 8259 state out of range (ICW step or a flag)";
			return -1;
		}
	}
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < 2; i++) {
		struct chip *c = &p->c[i];
		c->irr = s->c[i].irr;
		c->isr = s->c[i].isr;
		c->imr = s->c[i].imr;
		c->last_level = s->c[i].last_level;
		c->base = s->c[i].base;
		c->icw_step = s->c[i].icw_step;
		c->icw4 = s->c[i].icw4;
		c->auto_eoi = s->c[i].auto_eoi;
		c->read_isr = s->c[i].read_isr;
		c->elcr = s->c[i].elcr;
	}
	update(p);
	pthread_mutex_unlock(&p->lock);
	return 0;
}
