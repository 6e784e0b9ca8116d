/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft path's 8254 PIT (Intel 82C54 datasheet), ports 0x40-0x43, 1.193182 MHz, counted
 * from the host's CLOCK_MONOTONIC rather than ticked: a channel remembers when its count was
 * loaded, and the count, OUT and the next IRQ 0 follow from the time now. Channel 0 drives IRQ
 * 0 in modes 0 (one shot), 2 (rate generator) and 3 (square wave); counter latch and read-back
 * of counts work on every channel. Not here yet: port 0x61 (channel 2's gate and OUT, which
 * kapsel's i8042 range covers), BCD counting, modes 1, 4 and 5 (they count like 0 here).
 * With --no-pit there is none, as on the KVM path.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "vmm/soft/irq.h"
#include "vmm/vmm.h"

#define PIT_HZ 1193182ULL

struct channel {
	uint32_t reload; /* 1..65536 */
	uint8_t mode, rw;
	bool write_hi; /* lobyte/hibyte access: the next write is the high byte */
	bool read_hi;  /* likewise for reads */
	bool latched;
	uint16_t latch;
	uint8_t lo; /* the low byte written so far */
	uint64_t start_ns;
	bool armed; /* a count was loaded */
};

struct kap_soft_pit {
	pthread_mutex_t lock;
	struct channel ch[3];
	_Atomic uint64_t next_irq_ns; /* 0: none scheduled */
	struct kap_soft_pic *pic;
};

/* The guest clock (state.c): host time less what pauses took. */
static uint64_t now_ns(void)
{
	return kap_soft_now_ns();
}

static uint64_t ticks_since(const struct channel *c, uint64_t now)
{
	return now > c->start_ns ? (now - c->start_ns) * PIT_HZ / 1000000000ULL : 0;
}

static uint16_t count_now(const struct channel *c, uint64_t now)
{
	if (!c->armed)
		return 0;
	uint64_t t = ticks_since(c, now);
	if (c->mode == 2 || c->mode == 3)
		return (uint16_t)(c->reload - t % c->reload);
	return t >= c->reload ? (uint16_t)(0x10000 - (t - c->reload) % 0x10000)
			      : (uint16_t)(c->reload - t);
}

static uint64_t period_ns(const struct channel *c)
{
	return c->reload * 1000000000ULL / PIT_HZ;
}

/* Loads a count: channel 0 schedules its first IRQ 0 after one period. Lock held. */
static void load(struct kap_soft_pit *p, unsigned int n, uint32_t v)
{
	struct channel *c = &p->ch[n];
	c->reload = v ? v : 0x10000;
	if (c->mode == 2 && c->reload == 1)
		c->reload = 2; /* a count of 1 is illegal in mode 2 */
	c->start_ns = now_ns();
	c->armed = true;
	if (n == 0)
		atomic_store(&p->next_irq_ns, c->start_ns + period_ns(c));
}

static void pit_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_soft_pit *p = dev;
	uint8_t v = *(const uint8_t *)data;
	(void)len;
	pthread_mutex_lock(&p->lock);
	uint64_t now = now_ns();
	if (off == 3) {
		unsigned int sel = v >> 6;
		if (sel == 3) { /* read-back: latch the counts of the selected channels */
			for (unsigned int i = 0; i < 3; i++)
				if (!(v & 0x20) && (v & (2u << i)) && !p->ch[i].latched) {
					p->ch[i].latch = count_now(&p->ch[i], now);
					p->ch[i].latched = true;
				}
		} else if (((v >> 4) & 3) == 0) { /* counter latch */
			if (!p->ch[sel].latched) {
				p->ch[sel].latch = count_now(&p->ch[sel], now);
				p->ch[sel].latched = true;
			}
		} else {
			struct channel *c = &p->ch[sel];
			c->rw = (v >> 4) & 3;
			c->mode = (v >> 1) & 7;
			if (c->mode > 5)
				c->mode -= 4; /* 6 and 7 are 2 and 3 */
			c->write_hi = c->read_hi = c->latched = false;
			c->armed = false;
			if (sel == 0)
				atomic_store(&p->next_irq_ns, 0);
		}
	} else if (off < 3) {
		struct channel *c = &p->ch[off];
		switch (c->rw) {
		case 1:
			load(p, (unsigned int)off, v);
			break;
		case 2:
			load(p, (unsigned int)off, (uint32_t)v << 8);
			break;
		default:
			if (!c->write_hi) {
				c->lo = v;
				c->write_hi = true;
			} else {
				c->write_hi = false;
				load(p, (unsigned int)off, c->lo | ((uint32_t)v << 8));
			}
		}
	}
	pthread_mutex_unlock(&p->lock);
}

static void pit_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_soft_pit *p = dev;
	memset(data, 0, len);
	if (off >= 3) {
		*(uint8_t *)data = 0xff;
		return;
	}
	pthread_mutex_lock(&p->lock);
	struct channel *c = &p->ch[off];
	uint16_t v = c->latched ? c->latch : count_now(c, now_ns());
	uint8_t b;
	if (c->rw == 1) {
		b = (uint8_t)v;
		c->latched = false;
	} else if (c->rw == 2) {
		b = (uint8_t)(v >> 8);
		c->latched = false;
	} else {
		b = c->read_hi ? (uint8_t)(v >> 8) : (uint8_t)v;
		if (c->read_hi)
			c->latched = false;
		c->read_hi = !c->read_hi;
	}
	pthread_mutex_unlock(&p->lock);
	*(uint8_t *)data = b;
}

static const struct kap_dev_ops pit_ops = {
    .name = "8254 PIT (soft)",
    .read = pit_read,
    .write = pit_write,
};

uint64_t kap_soft_pit_poll(struct kap_soft_pit *p, uint64_t now)
{
	if (!p)
		return 0;
	uint64_t next = atomic_load_explicit(&p->next_irq_ns, memory_order_relaxed);
	if (!next || now < next)
		return next;
	pthread_mutex_lock(&p->lock);
	struct channel *c = &p->ch[0];
	next = atomic_load(&p->next_irq_ns);
	if (next && now >= next) {
		/* An edge on IRQ 0; ticks missed while the vCPU was busy are dropped, not queued.
		 */
		kap_soft_pic_set_irq(p->pic, 0, 1);
		kap_soft_pic_set_irq(p->pic, 0, 0);
		if (c->armed && (c->mode == 2 || c->mode == 3)) {
			uint64_t per = period_ns(c);
			next += per;
			if (next <= now)
				next = now + per;
		} else {
			next = 0;
		}
		atomic_store(&p->next_irq_ns, next);
	}
	pthread_mutex_unlock(&p->lock);
	return next;
}

int kap_soft_pit_create(struct kap_bus *pio, struct kap_soft_pic *pic, struct kap_soft_pit **out,
			struct kapsel_error **err)
{
	struct kap_soft_pit *p = calloc(1, sizeof(*p));
	if (!p)
		return kap_error(err, ENOMEM, "soft PIT");
	pthread_mutex_init(&p->lock, NULL);
	p->pic = pic;
	for (int i = 0; i < 3; i++)
		p->ch[i].rw = 3;
	int r = kap_bus_register(pio, 0x40, 4, &pit_ops, p, err);
	if (r < 0) {
		kap_soft_pit_free(p);
		return r;
	}
	*out = p;
	return 0;
}

void kap_soft_pit_free(struct kap_soft_pit *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void kap_soft_pit_save(struct kap_soft_pit *p, struct kap_soft_pit_state *s)
{
	*s = (struct kap_soft_pit_state){0};
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < 3; i++) {
		const struct channel *c = &p->ch[i];
		s->ch[i].start_ns = c->start_ns;
		s->ch[i].reload = c->reload;
		s->ch[i].latch = c->latch;
		s->ch[i].mode = c->mode;
		s->ch[i].rw = c->rw;
		s->ch[i].write_hi = c->write_hi;
		s->ch[i].read_hi = c->read_hi;
		s->ch[i].latched = c->latched;
		s->ch[i].lo = c->lo;
		s->ch[i].armed = c->armed;
	}
	s->next_irq_ns = atomic_load(&p->next_irq_ns);
	pthread_mutex_unlock(&p->lock);
}

int kap_soft_pit_load(struct kap_soft_pit *p, const struct kap_soft_pit_state *s, const char **why)
{
	for (int i = 0; i < 3; i++) {
		/* count_now and period_ns divide by the reload value of an armed channel. */
		if (s->ch[i].mode > 5 || s->ch[i].rw > 3 || s->ch[i].write_hi > 1 ||
		    s->ch[i].read_hi > 1 || s->ch[i].latched > 1 || s->ch[i].armed > 1 ||
		    s->ch[i].reload > 0x10000 || (s->ch[i].armed && !s->ch[i].reload)) {
			*why = "soft 8254 state out of range (a channel's mode, access or reload)";
			return -1;
		}
	}
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < 3; i++) {
		struct channel *c = &p->ch[i];
		c->start_ns = s->ch[i].start_ns;
		c->reload = s->ch[i].reload;
		c->latch = s->ch[i].latch;
		c->mode = s->ch[i].mode;
		c->rw = s->ch[i].rw;
		c->write_hi = s->ch[i].write_hi;
		c->read_hi = s->ch[i].read_hi;
		c->latched = s->ch[i].latched;
		c->lo = s->ch[i].lo;
		c->armed = s->ch[i].armed;
	}
	atomic_store(&p->next_irq_ns, s->next_irq_ns);
	pthread_mutex_unlock(&p->lock);
	return 0;
}
