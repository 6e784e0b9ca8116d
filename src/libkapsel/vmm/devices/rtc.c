/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MC146818 CMOS RTC: index port 0x70 (bit 7 is the NMI mask), data port 0x71. Time of day
 * comes from the host clock at each read (UTC), in BCD or binary and 12/24 h as register B
 * asks; UIP is never set because the value is always consistent. Registers 0x0e-0x7f are
 * 114 bytes of battery-backed RAM holding what a BIOS reads there, at the offsets QEMU's pc
 * machine uses (hw/i386/pc.c pc_cmos_init; SeaBIOS src/hw/rtc.h): the memory sizes (0x17/0x18
 * and 0x30/0x31: KiB above 1 MiB; 0x34/0x35: 64 KiB units above 16 MiB; 0x5b-0x5d: 64 KiB units
 * above 4 GiB), the CPU count less one (0x5f; SeaBIOS waits for that many APs), and the boot
 * order (0x3d: hard disk first; 0x38 bit 0: no floppy signature check). No alarm or periodic
 * interrupt.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/devices/devices.h"

enum {
	RTC_SECONDS = 0x00,
	RTC_MINUTES = 0x02,
	RTC_HOURS = 0x04,
	RTC_WEEKDAY = 0x06,
	RTC_DAY = 0x07,
	RTC_MONTH = 0x08,
	RTC_YEAR = 0x09,
	RTC_REG_A = 0x0a,
	RTC_REG_B = 0x0b,
	RTC_REG_C = 0x0c,
	RTC_REG_D = 0x0d,
	RTC_CENTURY = 0x32,
};
#define REG_B_24H    0x02
#define REG_B_BINARY 0x04
#define REG_D_VRT    0x80

struct kap_rtc {
	struct kap_vm *vm;
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t ram[128];
};

static uint8_t to_bcd(unsigned int v)
{
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

struct kap_rtc *kap_rtc_new(struct kap_vm *vm)
{
	struct kap_rtc *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->vm = vm;
	pthread_mutex_init(&r->lock, NULL);
	r->ram[RTC_REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz rate */
	r->ram[RTC_REG_B] = REG_B_24H;
	r->ram[RTC_REG_D] = REG_D_VRT;
	/* Extended memory in KiB between 1 MiB and 64 MiB, then 64 KiB units above 16 MiB. */
	uint64_t low = vm->mem.low_size;
	uint64_t ext = low > (1 << 20) ? (low - (1 << 20)) >> 10 : 0;
	if (ext > 0xffff)
		ext = 0xffff;
	r->ram[0x30] = r->ram[0x17] = (uint8_t)ext;
	r->ram[0x31] = r->ram[0x18] = (uint8_t)(ext >> 8);
	uint64_t above16 = low > (16 << 20) ? (low - (16 << 20)) >> 16 : 0;
	if (above16 > 0xffff)
		above16 = 0xffff;
	r->ram[0x34] = (uint8_t)above16;
	r->ram[0x35] = (uint8_t)(above16 >> 8);
	uint64_t above4g = (vm->mem.size - low) >> 16;
	if (above4g > 0xffffff)
		above4g = 0xffffff;
	r->ram[0x5b] = (uint8_t)above4g;
	r->ram[0x5c] = (uint8_t)(above4g >> 8);
	r->ram[0x5d] = (uint8_t)(above4g >> 16);
	r->ram[0x5f] = (uint8_t)(vm->ncpus ? vm->ncpus - 1 : 0);
	r->ram[0x3d] = 0x02;
	r->ram[0x38] = 0x01;
	return r;
}

static uint8_t time_reg(const struct kap_rtc *r, unsigned int reg)
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	bool bin = r->ram[RTC_REG_B] & REG_B_BINARY;
	unsigned int v;
	switch (reg) {
	case RTC_SECONDS:
		v = (unsigned int)tm.tm_sec;
		break;
	case RTC_MINUTES:
		v = (unsigned int)tm.tm_min;
		break;
	case RTC_HOURS:
		v = (unsigned int)tm.tm_hour;
		if (!(r->ram[RTC_REG_B] & REG_B_24H)) {
			/* 12-hour mode: 1-12, bit 7 set for PM. */
			unsigned int h = v % 12 ? v % 12 : 12;
			return (uint8_t)((bin ? h : to_bcd(h)) | (v >= 12 ? 0x80 : 0));
		}
		break;
	case RTC_WEEKDAY:
		v = (unsigned int)tm.tm_wday + 1;
		break;
	case RTC_DAY:
		v = (unsigned int)tm.tm_mday;
		break;
	case RTC_MONTH:
		v = (unsigned int)tm.tm_mon + 1;
		break;
	case RTC_YEAR:
		v = (unsigned int)(tm.tm_year % 100);
		break;
	default: /* RTC_CENTURY */
		v = (unsigned int)(1900 + tm.tm_year) / 100;
		break;
	}
	return bin ? (uint8_t)v : to_bcd(v);
}

static void rtc_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_rtc *r = dev;
	uint8_t v = 0xff;
	pthread_mutex_lock(&r->lock);
	if (off == 1) {
		unsigned int reg = r->index;
		switch (reg) {
		case RTC_SECONDS:
		case RTC_MINUTES:
		case RTC_HOURS:
		case RTC_WEEKDAY:
		case RTC_DAY:
		case RTC_MONTH:
		case RTC_YEAR:
		case RTC_CENTURY:
			v = time_reg(r, reg);
			break;
		case RTC_REG_C:
			v = 0; /* no interrupt flags: reading clears nothing */
			break;
		default:
			v = r->ram[reg];
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	*(uint8_t *)data = v;
}

static void rtc_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_rtc *r = dev;
	uint8_t v = *(const uint8_t *)data;
	pthread_mutex_lock(&r->lock);
	if (off == 0) {
		r->index = v & 0x7f; /* bit 7 masks NMI: nothing to mask here */
	} else {
		switch (r->index) {
		case RTC_REG_A:
			r->ram[RTC_REG_A] = v & 0x7f; /* UIP is read-only */
			break;
		case RTC_REG_B:
			r->ram[RTC_REG_B] = v;
			break;
		case RTC_REG_C:
		case RTC_REG_D:
			break; /* read-only */
		case RTC_SECONDS:
		case RTC_MINUTES:
		case RTC_HOURS:
		case RTC_WEEKDAY:
		case RTC_DAY:
		case RTC_MONTH:
		case RTC_YEAR:
		case RTC_CENTURY:
			break; /* setting the clock would need an offset; the host clock rules */
		default:
			r->ram[r->index] = v;
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
}

const struct kap_dev_ops kap_rtc_ops = {
    .name = "rtc",
    .read = rtc_read,
    .write = rtc_write,
};

void kap_rtc_save(struct kap_rtc *r, struct kap_rtc_state *st)
{
	pthread_mutex_lock(&r->lock);
	*st = (struct kap_rtc_state){.index = r->index};
	memcpy(st->ram, r->ram, sizeof(st->ram));
	pthread_mutex_unlock(&r->lock);
}

int kap_rtc_load(struct kap_rtc *r, const struct kap_rtc_state *st, const char **why)
{
	if (st->index > 0x7f) {
		*why = "rtc: index register out of range";
		return -EINVAL;
	}
	pthread_mutex_lock(&r->lock);
	r->index = st->index;
	memcpy(r->ram, st->ram, sizeof(r->ram));
	pthread_mutex_unlock(&r->lock);
	return 0;
}
