/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The split virtqueue (vmm/virtio/queue.c) over a fake guest memory: well-formed direct and
 * indirect chains, every malformed case the device must refuse (virtio 1.2 §2.7.5.3.1), index
 * wrap-around at 65535, and EVENT_IDX / NO_INTERRUPT suppression (§2.7.10).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmm/virtio/queue.h"

#define RAM   (1u << 20)
#define QSIZE 8
#define DESC  0x1000
#define AVAIL 0x2000
#define USED  0x3000
#define IND   0x4000
#define BUF   0x10000

struct fake {
	struct kap_guest_mem mem;
	struct kap_vq q;
	struct kap_vq_elem e;
	uint8_t *ram;
};

static struct fake *F;

static int setup(void **state)
{
	F = calloc(1, sizeof(*F));
	F->ram = calloc(1, RAM);
	F->mem = (struct kap_guest_mem){.host = F->ram, .size = RAM, .low_size = RAM, .fd = -1};
	kap_vq_reset(&F->q, QSIZE);
	F->q.desc_gpa = DESC;
	F->q.avail_gpa = AVAIL;
	F->q.used_gpa = USED;
	F->q.indirect = true;
	assert_int_equal(kap_vq_enable(&F->q, &F->mem), 0);
	*state = F;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	free(F->ram);
	free(F);
	return 0;
}

static struct vring_desc *desc(uint64_t table, unsigned int i)
{
	return (struct vring_desc *)(F->ram + table) + i;
}

static void set_desc(uint64_t table, unsigned int i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	*desc(table, i) = (struct vring_desc){addr, len, flags, next};
}

static struct vring_avail *avail(void)
{
	return (struct vring_avail *)(F->ram + AVAIL);
}

static struct vring_used *used(void)
{
	return (struct vring_used *)(F->ram + USED);
}

/* Makes head available at the driver's next avail slot. */
static void offer(uint16_t head)
{
	avail()->ring[avail()->idx % QSIZE] = head;
	avail()->idx++;
}

static void expect_fault(const char *substr)
{
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), -EINVAL);
	assert_non_null(F->q.fault);
	assert_non_null(strstr(F->q.fault, substr));
}

static void test_simple_chain(void **state)
{
	(void)state;
	set_desc(DESC, 0, BUF, 16, VRING_DESC_F_NEXT, 3);
	set_desc(DESC, 3, BUF + 16, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 5);
	set_desc(DESC, 5, BUF + 1024, 1, VRING_DESC_F_WRITE, 0);
	memcpy(F->ram + BUF, "header-bytes....", 16);
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 0);
	offer(0);
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
	assert_int_equal(F->e.head, 0);
	assert_int_equal(F->e.nseg, 3);
	assert_int_equal(F->e.nread, 1);
	assert_int_equal(F->e.read_len, 16);
	assert_int_equal(F->e.write_len, 513);
	char h[16];
	assert_int_equal(kap_vq_elem_read(&F->e, 0, h, 16), 16);
	assert_memory_equal(h, "header-bytes....", 16);
	uint8_t st = 7;
	assert_int_equal(kap_vq_elem_write(&F->e, 512, &st, 1), 1);
	assert_int_equal(F->ram[BUF + 1024], 7);
	kap_vq_push(&F->q, F->e.head, 513);
	assert_int_equal(used()->idx, 1);
	assert_int_equal(used()->ring[0].id, 0);
	assert_int_equal(used()->ring[0].len, 513);
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 0);
	assert_false(kap_vq_has_work(&F->q));
}

static void test_indirect_chain(void **state)
{
	(void)state;
	set_desc(DESC, 2, IND, 3 * 16, VRING_DESC_F_INDIRECT, 0);
	set_desc(IND, 0, BUF, 16, VRING_DESC_F_NEXT, 2);
	set_desc(IND, 2, BUF + 64, 100, VRING_DESC_F_NEXT, 1);
	set_desc(IND, 1, BUF + 256, 8, VRING_DESC_F_WRITE, 0);
	offer(2);
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
	assert_int_equal(F->e.head, 2);
	assert_int_equal(F->e.nseg, 3);
	assert_int_equal(F->e.read_len, 116);
	assert_int_equal(F->e.write_len, 8);
}

static void test_bad_head(void **state)
{
	(void)state;
	offer(QSIZE);
	expect_fault("head");
}

static void test_bad_next(void **state)
{
	(void)state;
	set_desc(DESC, 0, BUF, 16, VRING_DESC_F_NEXT, QSIZE);
	offer(0);
	expect_fault("next");
}

static void test_loop(void **state)
{
	(void)state;
	set_desc(DESC, 0, BUF, 16, VRING_DESC_F_NEXT, 1);
	set_desc(DESC, 1, BUF, 16, VRING_DESC_F_NEXT, 0);
	offer(0);
	expect_fault("longer than the queue");
}

static void test_self_loop_indirect(void **state)
{
	(void)state;
	set_desc(DESC, 0, IND, 2 * 16, VRING_DESC_F_INDIRECT, 0);
	set_desc(IND, 0, BUF, 16, VRING_DESC_F_NEXT, 1);
	set_desc(IND, 1, BUF, 16, VRING_DESC_F_NEXT, 0);
	offer(0);
	expect_fault("longer than the queue");
}

static void test_buffer_outside_ram(void **state)
{
	(void)state;
	set_desc(DESC, 0, RAM - 8, 16, 0, 0);
	offer(0);
	expect_fault("outside guest RAM");
	set_desc(DESC, 0, UINT64_MAX - 4, 16, 0, 0);
	expect_fault("outside guest RAM");
	set_desc(DESC, 0, 0, UINT32_MAX, 0, 0);
	expect_fault("outside guest RAM");
}

static void test_avail_too_far_ahead(void **state)
{
	(void)state;
	avail()->idx = QSIZE + 1;
	expect_fault("ahead");
	/* Exactly size ahead is legal. */
	avail()->idx = QSIZE;
	for (unsigned int i = 0; i < QSIZE; i++)
		set_desc(DESC, i, BUF, 16, 0, 0);
	for (unsigned int i = 0; i < QSIZE; i++)
		assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
}

static void test_indirect_rules(void **state)
{
	(void)state;
	offer(0);
	set_desc(DESC, 0, IND, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
	expect_fault("NEXT");
	set_desc(DESC, 0, IND, 17, VRING_DESC_F_INDIRECT, 0);
	expect_fault("multiple of 16");
	set_desc(DESC, 0, IND, 0, VRING_DESC_F_INDIRECT, 0);
	expect_fault("multiple of 16");
	set_desc(DESC, 0, IND, 16 * (QSIZE + 1), VRING_DESC_F_INDIRECT, 0);
	expect_fault("longer than the queue");
	set_desc(DESC, 0, RAM - 16, 32, VRING_DESC_F_INDIRECT, 0);
	expect_fault("outside guest RAM");
	set_desc(DESC, 0, IND, 16, VRING_DESC_F_INDIRECT, 0);
	set_desc(IND, 0, IND, 16, VRING_DESC_F_INDIRECT, 0);
	expect_fault("nested");
	F->q.indirect = false;
	expect_fault("without VIRTIO_F_INDIRECT_DESC");
}

static void test_read_after_write(void **state)
{
	(void)state;
	set_desc(DESC, 0, BUF, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
	set_desc(DESC, 1, BUF, 16, 0, 0);
	offer(0);
	expect_fault("readable buffer after a writable");
}

static void test_enable_checks(void **state)
{
	(void)state;
	struct kap_vq q;
	kap_vq_reset(&q, 6);
	assert_int_equal(kap_vq_enable(&q, &F->mem), -EINVAL);
	kap_vq_reset(&q, 512);
	assert_int_equal(kap_vq_enable(&q, &F->mem), -EINVAL);
	kap_vq_reset(&q, 8);
	q.desc_gpa = 8;
	assert_int_equal(kap_vq_enable(&q, &F->mem), -EINVAL);
	assert_non_null(strstr(q.fault, "misaligned"));
	kap_vq_reset(&q, 256);
	q.used_gpa = RAM - 16;
	assert_int_equal(kap_vq_enable(&q, &F->mem), -EINVAL);
	assert_non_null(strstr(q.fault, "outside"));
	assert_false(q.ready);
	/* A queue that is not ready yields nothing. */
	assert_int_equal(kap_vq_pop(&q, &F->mem, &F->e), 0);
}

static void test_wraparound(void **state)
{
	(void)state;
	set_desc(DESC, 1, BUF, 16, 0, 0);
	/* Both sides start near the 16-bit limit, as after 65530 requests. */
	F->q.last_avail = 65530;
	F->q.used_idx = 65530;
	avail()->idx = 65530;
	used()->idx = 65530;
	for (unsigned int i = 0; i < 20; i++) {
		offer(1);
		assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
		kap_vq_push(&F->q, F->e.head, 0);
	}
	assert_int_equal(F->q.last_avail, (uint16_t)(65530 + 20));
	assert_int_equal(used()->idx, (uint16_t)(65530 + 20));
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 0);
}

static uint16_t *used_event_field(void)
{
	return (uint16_t *)(F->ram + AVAIL + 4 + 2 * QSIZE);
}

static uint16_t *avail_event_field(void)
{
	return (uint16_t *)(F->ram + USED + 4 + 8 * QSIZE);
}

static void test_event_idx(void **state)
{
	(void)state;
	F->q.event_idx = true;
	set_desc(DESC, 0, BUF, 16, 0, 0);
	/* First completion always interrupts. */
	offer(0);
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
	assert_int_equal(*avail_event_field(), 1);
	kap_vq_push(&F->q, 0, 0);
	assert_true(kap_vq_should_notify(&F->q));
	/* Nothing new: no interrupt. */
	assert_false(kap_vq_should_notify(&F->q));
	/* The driver wants an interrupt only after used idx passes 3. */
	*used_event_field() = 3;
	for (int i = 0; i < 2; i++) {
		offer(0);
		assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
		kap_vq_push(&F->q, 0, 0);
		assert_false(kap_vq_should_notify(&F->q)); /* used idx 2, 3 */
	}
	offer(0);
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
	kap_vq_push(&F->q, 0, 0);
	assert_true(kap_vq_should_notify(&F->q)); /* used idx 4 crosses event 3 */
	/* An empty pop republishes avail_event = last_avail. */
	*avail_event_field() = 0;
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 0);
	assert_int_equal(*avail_event_field(), 4);
}

static void test_notify_suppression(void **state)
{
	(void)state;
	set_desc(DESC, 0, BUF, 16, 0, 0);
	/* Without EVENT_IDX: the used ring's NO_NOTIFY flag, set and cleared. */
	kap_vq_set_notify(&F->q, false);
	assert_int_equal(used()->flags & VRING_USED_F_NO_NOTIFY, VRING_USED_F_NO_NOTIFY);
	kap_vq_set_notify(&F->q, true);
	assert_int_equal(used()->flags & VRING_USED_F_NO_NOTIFY, 0);
	/* With EVENT_IDX: avail_event one behind while polling, and pops leave it there. */
	F->q.event_idx = true;
	kap_vq_set_notify(&F->q, false);
	assert_int_equal(*avail_event_field(), (uint16_t)-1);
	for (int i = 0; i < 3; i++) {
		offer(0);
		assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
		kap_vq_push(&F->q, 0, 0);
	}
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 0);
	assert_int_equal(*avail_event_field(), (uint16_t)-1);
	/* The driver at avail idx 3 adding one more: vring_need_event(-1, 4, 3) is false. */
	uint16_t ev = *avail_event_field(), new_idx = 4, old_idx = 3;
	assert_false((uint16_t)(new_idx - ev - 1) < (uint16_t)(new_idx - old_idx));
	/* Enabled again: a kick is asked for at the next entry. */
	kap_vq_set_notify(&F->q, true);
	assert_int_equal(*avail_event_field(), 3);
	assert_true((uint16_t)(new_idx - 3 - 1) < (uint16_t)(new_idx - old_idx));
}

static void test_no_interrupt_flag(void **state)
{
	(void)state;
	set_desc(DESC, 0, BUF, 16, 0, 0);
	offer(0);
	assert_int_equal(kap_vq_pop(&F->q, &F->mem, &F->e), 1);
	kap_vq_push(&F->q, 0, 0);
	avail()->flags = VRING_AVAIL_F_NO_INTERRUPT;
	assert_false(kap_vq_should_notify(&F->q));
	avail()->flags = 0;
	assert_true(kap_vq_should_notify(&F->q));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_simple_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_indirect_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_head, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_next, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_loop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_self_loop_indirect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_buffer_outside_ram, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_avail_too_far_ahead, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_indirect_rules, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_after_write, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enable_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wraparound, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_event_idx, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_interrupt_flag, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_notify_suppression, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
