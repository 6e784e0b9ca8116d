/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The i8042 keyboard controller with a PS/2 keyboard attached that never sends a key, and an
 * auxiliary port with no mouse on it. Firmware (SeaBIOS's keyboard_init) resets and configures
 * the keyboard and waits for its answers, up to seconds when none come; Linux's i8042 driver
 * probes the controller (command byte, self test, interface test) and atkbd identifies the
 * keyboard. Command 0xFE on port 0x64 pulses the CPU reset line, which ends the VM (Linux's
 * reboot=k).
 *
 * References: IBM PS/2 Technical Reference (8042 commands, status and command byte); the
 * PS/2 keyboard command set (reset 0xFF answers 0xFA then the self-test result 0xAA, identify
 * 0xF2 answers 0xFA 0xAB 0x83); QEMU's hw/input/pckbd.c and ps2.c as the peer guests are
 * written against (identify answers 0xAB 0x41 and scan-set queries the translated set number
 * while the controller translates, as a translating 8042 does).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/devices.h"

#define STATUS_OBF     0x01
#define STATUS_SYS     0x04 /* system flag: POST passed */
#define STATUS_CMD     0x08 /* last write was to the command port */
#define STATUS_AUX     0x20 /* the output buffer holds a byte from the aux port */
#define STATUS_TIMEOUT 0x40 /* the aux device did not answer (no mouse) */

#define CB_KBD_INT 0x01
#define CB_AUX_INT 0x02
#define CB_SYS	   0x04
#define CB_KBD_DIS 0x10
#define CB_AUX_DIS 0x20
#define CB_XLATE   0x40
#define CB_DEFAULT (CB_KBD_INT | CB_SYS | CB_XLATE)

#define CMD_READ_CB	0x20
#define CMD_WRITE_CB	0x60
#define CMD_AUX_DISABLE 0xa7
#define CMD_AUX_ENABLE	0xa8
#define CMD_AUX_TEST	0xa9
#define CMD_SELF_TEST	0xaa
#define CMD_KBD_TEST	0xab
#define CMD_DISABLE_KBD 0xad
#define CMD_ENABLE_KBD	0xae
#define CMD_WRITE_OUT	0xd1 /* write the output port: the next data byte */
#define CMD_KBD_LOOP	0xd2 /* the next data byte comes back as keyboard data */
#define CMD_AUX_LOOP	0xd3 /* the next data byte comes back as aux data */
#define CMD_AUX_SEND	0xd4 /* the next data byte goes to the aux device */
#define CMD_PULSE_RESET 0xfe

/* Keyboard commands and answers (PS/2 keyboard command set). */
#define KBD_SET_LEDS   0xed
#define KBD_ECHO       0xee
#define KBD_SCANCODE   0xf0
#define KBD_GET_ID     0xf2
#define KBD_TYPEMATIC  0xf3
#define KBD_ENABLE     0xf4
#define KBD_DISABLE    0xf5
#define KBD_DEFAULTS   0xf6
#define KBD_RESEND     0xfe
#define KBD_RESET      0xff
#define KBD_ACK	       0xfa
#define KBD_BAT_OK     0xaa
#define KBD_RESEND_REQ 0xfe
#define KBD_ID0	       0xab
#define KBD_ID1	       0x83
#define KBD_ID1_XLATE  0x41

enum { SRC_CTRL, SRC_KBD, SRC_AUX };

struct kap_i8042 {
	struct kap_vm *vm;
	pthread_mutex_t lock;
	uint8_t status, cb, out, pending_cmd, out_src;
	uint8_t kbd_cmd; /* a keyboard command awaiting its parameter byte (0: none) */
	uint8_t scan_set, last;
	uint8_t levels; /* bit 0: IRQ 1 raised, bit 1: IRQ 12 raised */
	uint8_t q_len, q[KAP_I8042_QUEUE];
};

static void kbd_defaults(struct kap_i8042 *k)
{
	k->kbd_cmd = 0;
	k->scan_set = 2;
}

struct kap_i8042 *kap_i8042_new(struct kap_vm *vm)
{
	struct kap_i8042 *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->vm = vm;
	pthread_mutex_init(&k->lock, NULL);
	k->status = STATUS_SYS;
	k->cb = CB_DEFAULT;
	kbd_defaults(k);
	return k;
}

/*
 * IRQ 1 follows "output buffer full with keyboard or controller data and the command byte's
 * bit 0 set", IRQ 12 the same for aux data and bit 1 (IBM PS/2 8042). The PIC and IOAPIC pins
 * are edge-triggered ISA lines: a read that empties the buffer lowers the line, so the next
 * byte's raise is an edge. Called with the lock held; the irqchip hears only changes.
 */
static void update_irq(struct kap_i8042 *k)
{
	bool full = k->status & STATUS_OBF, aux = k->status & STATUS_AUX;
	uint8_t levels = (uint8_t)((full && !aux && (k->cb & CB_KBD_INT) ? 1 : 0) |
				   (full && aux && (k->cb & CB_AUX_INT) ? 2 : 0));
	if ((levels ^ k->levels) & 1)
		kap_vm_set_irq(k->vm, KAP_I8042_KBD_IRQ, levels & 1);
	if ((levels ^ k->levels) & 2)
		kap_vm_set_irq(k->vm, KAP_I8042_AUX_IRQ, (levels >> 1) & 1);
	k->levels = levels;
}

/* The keyboard's next byte moves into an empty output buffer unless its clock is disabled. */
static void refill(struct kap_i8042 *k)
{
	if (!(k->status & STATUS_OBF) && k->q_len && !(k->cb & CB_KBD_DIS)) {
		k->out = k->q[0];
		memmove(k->q, k->q + 1, --k->q_len);
		k->out_src = SRC_KBD;
		k->status = (uint8_t)((k->status & ~(STATUS_AUX | STATUS_TIMEOUT)) | STATUS_OBF);
	}
	update_irq(k);
}

/* A byte from the keyboard; a full queue drops it, as the keyboard's own buffer would. */
static void kbd_send(struct kap_i8042 *k, uint8_t v)
{
	if (k->q_len < KAP_I8042_QUEUE)
		k->q[k->q_len++] = v;
	k->last = v;
}

/*
 * A byte the controller itself puts in the output buffer. It takes the buffer at once; a
 * keyboard byte not yet read goes back to the head of the queue rather than being lost.
 */
static void ctrl_reply(struct kap_i8042 *k, uint8_t v, uint8_t src, uint8_t flags)
{
	if ((k->status & STATUS_OBF) && k->out_src == SRC_KBD && k->q_len < KAP_I8042_QUEUE) {
		memmove(k->q + 1, k->q, k->q_len++);
		k->q[0] = k->out;
	}
	k->out = v;
	k->out_src = src;
	k->status = (uint8_t)((k->status & ~(STATUS_AUX | STATUS_TIMEOUT)) | STATUS_OBF | flags);
	update_irq(k);
}

/* Translated scan-set numbers (the 8042's translation of set 2's codes 0x01-0x03). */
static uint8_t set_number(const struct kap_i8042 *k)
{
	static const uint8_t xlate[4] = {0, 0x43, 0x41, 0x3f};
	return k->cb & CB_XLATE ? xlate[k->scan_set] : k->scan_set;
}

/* A data-port byte for the keyboard: a command, or the parameter of the one before. */
static void kbd_write(struct kap_i8042 *k, uint8_t v)
{
	uint8_t cmd = k->kbd_cmd;
	k->kbd_cmd = 0;
	if (cmd == KBD_SCANCODE) {
		if (v == 0) {
			kbd_send(k, KBD_ACK);
			kbd_send(k, set_number(k));
		} else if (v <= 3) {
			k->scan_set = v;
			kbd_send(k, KBD_ACK);
		} else {
			kbd_send(k, KBD_RESEND_REQ);
		}
		return;
	}
	if (cmd == KBD_SET_LEDS || cmd == KBD_TYPEMATIC) {
		kbd_send(k, KBD_ACK); /* no LEDs to light, no keys to repeat */
		return;
	}
	switch (v) {
	case KBD_SET_LEDS:
	case KBD_TYPEMATIC:
	case KBD_SCANCODE:
		k->kbd_cmd = v;
		kbd_send(k, KBD_ACK);
		break;
	case KBD_ECHO:
		kbd_send(k, KBD_ECHO);
		break;
	case KBD_GET_ID:
		kbd_send(k, KBD_ACK);
		kbd_send(k, KBD_ID0);
		kbd_send(k, k->cb & CB_XLATE ? KBD_ID1_XLATE : KBD_ID1);
		break;
	case KBD_ENABLE: /* scanning on or off: no key is ever pressed */
		kbd_send(k, KBD_ACK);
		break;
	case KBD_DISABLE: /* restores the defaults, as 0xF6 does, and stops scanning */
	case KBD_DEFAULTS:
		kbd_defaults(k);
		kbd_send(k, KBD_ACK);
		break;
	case KBD_RESEND:
		kbd_send(k, k->last);
		break;
	case KBD_RESET:
		kbd_defaults(k);
		k->q_len = 0;
		kbd_send(k, KBD_ACK);
		kbd_send(k, KBD_BAT_OK);
		break;
	default:
		/* 0xF7-0xFD, the scan set 3 key-type commands: nothing to set without keys. */
		kbd_send(k, v >= 0xf7 ? KBD_ACK : KBD_RESEND_REQ);
		break;
	}
}

static void i8042_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_i8042 *k = dev;
	pthread_mutex_lock(&k->lock);
	uint8_t v;
	if (off == KAP_I8042_COMMAND - KAP_I8042_DATA) {
		v = k->status;
	} else {
		v = k->out;
		if (k->status & STATUS_OBF) {
			k->status &= (uint8_t)~STATUS_OBF;
			update_irq(k); /* lower the line, so the next byte's raise is an edge */
			refill(k);
		}
	}
	pthread_mutex_unlock(&k->lock);
	*(uint8_t *)data = v;
}

static void controller_command(struct kap_i8042 *k, uint8_t v, bool *reset)
{
	switch (v) {
	case CMD_READ_CB:
		ctrl_reply(k, k->cb, SRC_CTRL, 0);
		break;
	case CMD_WRITE_CB:
	case CMD_WRITE_OUT:
	case CMD_KBD_LOOP:
	case CMD_AUX_LOOP:
	case CMD_AUX_SEND:
		k->pending_cmd = v;
		break;
	case CMD_AUX_DISABLE:
		k->cb |= CB_AUX_DIS;
		break;
	case CMD_AUX_ENABLE:
		k->cb &= (uint8_t)~CB_AUX_DIS;
		break;
	case CMD_AUX_TEST: /* the aux port's clock and data lines are fine: 0x00 */
	case CMD_KBD_TEST:
		ctrl_reply(k, 0x00, SRC_CTRL, 0);
		break;
	case CMD_SELF_TEST:
		ctrl_reply(k, 0x55, SRC_CTRL, 0);
		break;
	case CMD_DISABLE_KBD:
		k->cb |= CB_KBD_DIS;
		break;
	case CMD_ENABLE_KBD:
		k->cb &= (uint8_t)~CB_KBD_DIS;
		refill(k);
		break;
	case CMD_PULSE_RESET:
		*reset = true;
		break;
	default:
		break; /* the rest (input/output port reads, RAM beyond the command byte) unused */
	}
}

static void i8042_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_i8042 *k = dev;
	uint8_t v = *(const uint8_t *)data;
	bool reset = false;
	pthread_mutex_lock(&k->lock);
	if (off == KAP_I8042_COMMAND - KAP_I8042_DATA) {
		k->status |= STATUS_CMD;
		k->pending_cmd = 0;
		controller_command(k, v, &reset);
	} else {
		uint8_t cmd = k->pending_cmd;
		k->status &= (uint8_t)~STATUS_CMD;
		k->pending_cmd = 0;
		switch (cmd) {
		case CMD_WRITE_CB:
			k->cb = v;
			refill(k); /* the clock or interrupt bits may have changed */
			break;
		case CMD_WRITE_OUT:
			break; /* A20 and the reset line: A20 is always on here */
		case CMD_KBD_LOOP:
			ctrl_reply(k, v, SRC_CTRL, 0);
			break;
		case CMD_AUX_LOOP:
			ctrl_reply(k, v, SRC_AUX, STATUS_AUX);
			break;
		case CMD_AUX_SEND:
			/* No mouse: the controller's transmission times out and it answers 0xFE
			 * with the timeout bit, at once rather than after the device's timeout. */
			ctrl_reply(k, KBD_RESEND_REQ, SRC_AUX, STATUS_AUX | STATUS_TIMEOUT);
			break;
		default:
			kbd_write(k, v);
			refill(k);
			break;
		}
	}
	pthread_mutex_unlock(&k->lock);
	if (reset)
		kap_vm_request_exit(k->vm, KAP_VM_RESET, 0, NULL);
}

static void i8042_reset(void *dev)
{
	struct kap_i8042 *k = dev;
	pthread_mutex_lock(&k->lock);
	k->status = STATUS_SYS;
	k->cb = CB_DEFAULT;
	k->pending_cmd = 0;
	k->q_len = 0;
	kbd_defaults(k);
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
}

/* Registered over 0x60-0x64; 0x61-0x63 are not the controller's and read as zero here. */
const struct kap_dev_ops kap_i8042_ops = {
    .name = "i8042",
    .read = i8042_read,
    .write = i8042_write,
    .reset = i8042_reset,
};

void kap_i8042_save(struct kap_i8042 *k, struct kap_i8042_state *st)
{
	pthread_mutex_lock(&k->lock);
	*st = (struct kap_i8042_state){
	    .version = KAP_I8042_STATE_VERSION,
	    .status = k->status,
	    .cb = k->cb,
	    .out = k->out,
	    .pending_cmd = k->pending_cmd,
	    .out_src = k->out_src,
	    .kbd_cmd = k->kbd_cmd,
	    .scan_set = k->scan_set,
	    .last = k->last,
	    .levels = k->levels,
	    .q_len = k->q_len,
	};
	memcpy(st->q, k->q, sizeof(st->q));
	pthread_mutex_unlock(&k->lock);
}

int kap_i8042_load(struct kap_i8042 *k, const struct kap_i8042_state *st, const char **why)
{
	if (st->version != KAP_I8042_STATE_VERSION) {
		*why = "i8042: state of another version";
		return -EINVAL;
	}
	if (st->q_len > KAP_I8042_QUEUE || st->out_src > SRC_AUX || st->scan_set < 1 ||
	    st->scan_set > 3 || st->levels > 3) {
		*why = "i8042: queue length, scan set or interrupt state out of range";
		return -EINVAL;
	}
	pthread_mutex_lock(&k->lock);
	k->status = st->status;
	k->cb = st->cb;
	k->out = st->out;
	k->pending_cmd = st->pending_cmd;
	k->out_src = st->out_src;
	k->kbd_cmd = st->kbd_cmd;
	k->scan_set = st->scan_set;
	k->last = st->last;
	/* The irqchip's own state (its section) already holds the lines as saved. */
	k->levels = st->levels;
	k->q_len = st->q_len;
	memcpy(k->q, st->q, sizeof(k->q));
	pthread_mutex_unlock(&k->lock);
	return 0;
}
