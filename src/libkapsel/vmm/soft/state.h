/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft path's snapshot sections and guest clock (state.c). snapshot.c writes and finds
 * the sections through these callbacks, so the file's framing (header, CRC) stays its own.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

struct kap_vm;

/* Section types in the state file (docs/vm.md, Snapshot format); index: the vCPU for 80-82. */
enum {
	KAP_SOFT_SEC_CPU = 80, /* registers, segment caches, control registers, MSRs */
	KAP_SOFT_SEC_FXSAVE,   /* the 512-byte FXSAVE image: x87, MMX, SSE */
	KAP_SOFT_SEC_LAPIC,    /* struct kap_soft_lapic_state */
	KAP_SOFT_SEC_IOAPIC = 96,
	KAP_SOFT_SEC_PIC,
	KAP_SOFT_SEC_PIT,
	KAP_SOFT_SEC_CLOCK, /* the guest clock (ns) when the state was taken */
};

typedef void (*kap_soft_put_fn)(void *ctx, uint32_t type, uint32_t index, const void *data,
				size_t len);
typedef const void *(*kap_soft_get_fn)(const void *ctx, uint32_t type, uint32_t index,
				       uint64_t *len);

/* The soft VM's sections; its vCPUs are parked (pause.c). */
int kap_soft_state_save(struct kap_vm *vm, kap_soft_put_fn put, void *ctx,
			struct kapsel_error **err);
/* Reads and checks every soft section, then applies them to a VM that has not run. */
int kap_soft_state_load(struct kap_vm *vm, kap_soft_get_fn get, const void *ctx, const char *what,
			struct kapsel_error **err);

/* Pause and resume stop and restart the guest clock (kap_soft_now_ns). */
void kap_soft_clock_pause(void);
void kap_soft_clock_resume(void);
/* The host CLOCK_MONOTONIC time at which the guest clock reads guest_ns. */
uint64_t kap_soft_host_ns(uint64_t guest_ns);
