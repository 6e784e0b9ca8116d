/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The i8042 keyboard controller, without a keyboard: enough for Linux's probe (command byte,
 * self test, interface test) and for the classic reset, command 0xFE on port 0x64 pulsing the
 * CPU reset line, which ends the VM (Linux's reboot=k). No input device is attached, so the
 * output buffer only ever holds controller replies.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/devices.h"

#define STATUS_OBF	0x01
#define STATUS_SYS	0x04 /* system flag: POST passed */
#define STATUS_CMD	0x08 /* last write was to the command port */
#define CMD_READ_CB	0x20
#define CMD_WRITE_CB	0x60
#define CMD_SELF_TEST	0xaa
#define CMD_KBD_TEST	0xab
#define CMD_DISABLE_KBD 0xad
#define CMD_ENABLE_KBD	0xae
#define CMD_PULSE_RESET 0xfe

struct kap_i8042 {
	struct kap_vm *vm;
	pthread_mutex_t lock;
	uint8_t status, cb, out, pending_cmd;
};

struct kap_i8042 *kap_i8042_new(struct kap_vm *vm)
{
	struct kap_i8042 *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->vm = vm;
	pthread_mutex_init(&k->lock, NULL);
	k->status = STATUS_SYS;
	k->cb = 0x45; /* kbd interrupt on, system flag, translation */
	return k;
}

static void reply(struct kap_i8042 *k, uint8_t v)
{
	k->out = v;
	k->status |= STATUS_OBF;
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
		k->status &= (uint8_t)~STATUS_OBF;
	}
	pthread_mutex_unlock(&k->lock);
	*(uint8_t *)data = v;
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
		switch (v) {
		case CMD_READ_CB:
			reply(k, k->cb);
			break;
		case CMD_WRITE_CB:
			k->pending_cmd = v;
			break;
		case CMD_SELF_TEST:
			reply(k, 0x55);
			break;
		case CMD_KBD_TEST:
			reply(k, 0x00);
			break;
		case CMD_PULSE_RESET:
			reset = true;
			break;
		default:
			break; /* enable/disable ports and the rest have nothing to act on */
		}
	} else {
		k->status &= (uint8_t)~STATUS_CMD;
		if (k->pending_cmd == CMD_WRITE_CB)
			k->cb = v;
		k->pending_cmd = 0;
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
	k->cb = 0x45;
	k->pending_cmd = 0;
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
	*st = (struct kap_i8042_state){k->status, k->cb, k->out, k->pending_cmd};
	pthread_mutex_unlock(&k->lock);
}

void kap_i8042_load(struct kap_i8042 *k, const struct kap_i8042_state *st)
{
	pthread_mutex_lock(&k->lock);
	k->status = st->status;
	k->cb = st->cb;
	k->out = st->out;
	k->pending_cmd = st->pending_cmd;
	pthread_mutex_unlock(&k->lock);
}
