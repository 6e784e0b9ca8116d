/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A 16550A UART, as Linux's 8250 driver and polling test kernels use it: divisor latch, FIFO
 * (reported by IIR bits 7:6 after FCR enables it, which is how the driver tells a 16550A),
 * loopback (the driver's probe checks that MSR mirrors MCR), and the RX-data and THR-empty
 * interrupts on a level-triggered ISA line. Transmission is instantaneous: LSR always shows
 * THRE|TEMT. Received bytes queue in a software buffer in front of the FIFO so pasted text
 * is not lost. Register map: PC16550D datasheet, table II.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/devices.h"

enum {
	UART_RBR_THR = 0, /* DLL with DLAB */
	UART_IER = 1,	  /* DLM with DLAB */
	UART_IIR_FCR = 2,
	UART_LCR = 3,
	UART_MCR = 4,
	UART_LSR = 5,
	UART_MSR = 6,
	UART_SCR = 7,
};

#define IER_RDI	   0x01
#define IER_THRI   0x02
#define IER_RLSI   0x04
#define IER_MSI	   0x08
#define IIR_NONE   0x01
#define IIR_THRI   0x02
#define IIR_RDI	   0x04
#define IIR_FIFO   0xc0
#define FCR_FIFO   0x01
#define FCR_CLR_RX 0x02
#define LCR_DLAB   0x80
#define MCR_LOOP   0x10
#define MCR_OUT2   0x08
#define LSR_DR	   0x01
#define LSR_THRE   0x20
#define LSR_TEMT   0x40

#define RX_BUF KAP_SERIAL_RX_BUF

struct kap_serial {
	struct kap_vm *vm;
	unsigned int irq;
	pthread_mutex_t lock;
	uint8_t ier, iir_fifo, lcr, mcr, scr, dll, dlm, msr;
	bool thr_pending; /* THR-empty interrupt raised and not yet acknowledged */
	int level;
	uint8_t rx[RX_BUF];
	size_t rx_head, rx_len;
};

struct kap_serial *kap_serial_new(struct kap_vm *vm, unsigned int irq)
{
	struct kap_serial *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->vm = vm;
	s->irq = irq;
	pthread_mutex_init(&s->lock, NULL);
	s->dll = 12; /* 9600 baud from the 1.8432 MHz clock, the power-on value */
	s->mcr = MCR_OUT2;
	s->msr = 0xb0; /* DCD, DSR, CTS: a cable with the other end present */
	return s;
}

void kap_serial_free(struct kap_serial *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static uint8_t iir(const struct kap_serial *s)
{
	if ((s->ier & IER_RDI) && s->rx_len)
		return IIR_RDI;
	if ((s->ier & IER_THRI) && s->thr_pending)
		return IIR_THRI;
	return IIR_NONE;
}

/* Called with the lock held; the irqchip is told only when the line changes. */
static void update_irq(struct kap_serial *s)
{
	int level = iir(s) != IIR_NONE;
	if (level != s->level) {
		s->level = level;
		kap_vm_set_irq(s->vm, s->irq, level);
	}
}

static void rx_push(struct kap_serial *s, const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len && s->rx_len < RX_BUF; i++) {
		s->rx[(s->rx_head + s->rx_len) % RX_BUF] = buf[i];
		s->rx_len++;
	}
}

void kap_serial_input(void *serial, const uint8_t *buf, size_t len)
{
	struct kap_serial *s = serial;
	pthread_mutex_lock(&s->lock);
	/* In loopback the receiver is wired to the transmitter, not the line. */
	if (!(s->mcr & MCR_LOOP))
		rx_push(s, buf, len);
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static uint8_t msr_value(const struct kap_serial *s)
{
	if (!(s->mcr & MCR_LOOP))
		return s->msr;
	/* Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD. */
	return (uint8_t)(((s->mcr & 0x01) << 5) | ((s->mcr & 0x02) << 3) | ((s->mcr & 0x04) << 4) |
			 ((s->mcr & 0x08) << 4));
}

static void serial_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_serial *s = dev;
	uint8_t v = 0;
	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB) {
			v = s->dll;
		} else if (s->rx_len) {
			v = s->rx[s->rx_head];
			s->rx_head = (s->rx_head + 1) % RX_BUF;
			s->rx_len--;
		}
		break;
	case UART_IER:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case UART_IIR_FCR:
		v = iir(s) | s->iir_fifo;
		/* Reading IIR while THRE is the source acknowledges it (PC16550D table IV). */
		if (iir(s) == IIR_THRI)
			s->thr_pending = false;
		break;
	case UART_LCR:
		v = s->lcr;
		break;
	case UART_MCR:
		v = s->mcr;
		break;
	case UART_LSR:
		v = LSR_THRE | LSR_TEMT | (s->rx_len ? LSR_DR : 0);
		break;
	case UART_MSR:
		v = msr_value(s);
		break;
	case UART_SCR:
		v = s->scr;
		break;
	}
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	memset(data, v, 1);
	if (len > 1)
		memset((uint8_t *)data + 1, 0, len - 1);
}

static void serial_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_serial *s = dev;
	uint8_t v = *(const uint8_t *)data;
	bool out = false;
	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
			break;
		}
		if (s->mcr & MCR_LOOP)
			rx_push(s, &v, 1);
		else
			out = true;
		/* The byte left at once: THR is empty again. */
		s->thr_pending = true;
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
			break;
		}
		/* Enabling ETBEI with THR empty raises the interrupt right away. */
		if ((v & IER_THRI) && !(s->ier & IER_THRI))
			s->thr_pending = true;
		s->ier = v & (IER_RDI | IER_THRI | IER_RLSI | IER_MSI);
		break;
	case UART_IIR_FCR:
		s->iir_fifo = (v & FCR_FIFO) ? IIR_FIFO : 0;
		if (v & FCR_CLR_RX)
			s->rx_head = s->rx_len = 0;
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		s->mcr = v & 0x1f;
		break;
	case UART_SCR:
		s->scr = v;
		break;
	}
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	/* Outside the lock: a slow terminal must not block console input. */
	if (out)
		kap_console_write(&s->vm->console, &v, 1);
}

static void serial_reset(void *dev)
{
	struct kap_serial *s = dev;
	pthread_mutex_lock(&s->lock);
	s->ier = s->iir_fifo = s->lcr = s->scr = s->dlm = 0;
	s->dll = 12;
	s->mcr = MCR_OUT2;
	s->thr_pending = false;
	s->rx_head = s->rx_len = 0;
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

const struct kap_dev_ops kap_serial_ops = {
    .name = "serial8250",
    .read = serial_read,
    .write = serial_write,
    .reset = serial_reset,
};

void kap_serial_save(struct kap_serial *s, struct kap_serial_state *st)
{
	pthread_mutex_lock(&s->lock);
	*st = (struct kap_serial_state){
	    .ier = s->ier,
	    .iir_fifo = s->iir_fifo,
	    .lcr = s->lcr,
	    .mcr = s->mcr,
	    .scr = s->scr,
	    .dll = s->dll,
	    .dlm = s->dlm,
	    .msr = s->msr,
	    .thr_pending = s->thr_pending,
	    .level = (uint8_t)s->level,
	    .rx_len = (uint32_t)s->rx_len,
	};
	for (size_t i = 0; i < s->rx_len; i++)
		st->rx[i] = s->rx[(s->rx_head + i) % RX_BUF];
	pthread_mutex_unlock(&s->lock);
}

int kap_serial_load(struct kap_serial *s, const struct kap_serial_state *st, const char **why)
{
	if (st->rx_len > RX_BUF || st->thr_pending > 1 || st->level > 1) {
		*why = "serial: receive length or interrupt state out of range";
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	s->ier = st->ier;
	s->iir_fifo = st->iir_fifo;
	s->lcr = st->lcr;
	s->mcr = st->mcr;
	s->scr = st->scr;
	s->dll = st->dll;
	s->dlm = st->dlm;
	s->msr = st->msr;
	s->thr_pending = st->thr_pending;
	s->level = st->level;
	s->rx_head = 0;
	s->rx_len = st->rx_len;
	memcpy(s->rx, st->rx, st->rx_len);
	pthread_mutex_unlock(&s->lock);
	return 0;
}
