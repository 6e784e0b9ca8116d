/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft path's interrupt sources (pic.c, pit.c): what KVM's in-kernel 8259 pair and 8254
 * are on the KVM path. Registered on the port bus when the VM is soft; devices reach the PIC
 * through kap_vm_set_irq, the vCPU takes its requests at block boundaries (cpu.c).
 */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <kapsel/error.h>

struct kap_bus;
struct kap_dev_ops;

struct kap_soft_pic;
int kap_soft_pic_create(struct kap_bus *pio, struct kap_soft_pic **out, struct kapsel_error **err);
void kap_soft_pic_free(struct kap_soft_pic *p);
/* An ISA line (0-15) goes to level; any thread. */
void kap_soft_pic_set_irq(struct kap_soft_pic *p, unsigned int irq, int level);
/* Whether a request may be deliverable (cheap; the vCPU then acknowledges it). */
bool kap_soft_pic_pending(struct kap_soft_pic *p);
/* The interrupt acknowledge cycle: the vector, or -1 when nothing is deliverable after all. */
int kap_soft_pic_ack(struct kap_soft_pic *p);
extern const struct kap_dev_ops kap_soft_pic_slave_ops;

struct kap_soft_pit;
int kap_soft_pit_create(struct kap_bus *pio, struct kap_soft_pic *pic, struct kap_soft_pit **out,
			struct kapsel_error **err);
void kap_soft_pit_free(struct kap_soft_pit *p);
/*
 * Raises IRQ 0 when channel 0's time has come (now: kap_soft_now_ns); returns when the next
 * one is due, 0 when none is scheduled.
 */
uint64_t kap_soft_pit_poll(struct kap_soft_pit *p, uint64_t now);
uint64_t kap_soft_now_ns(void);

struct kap_soft_lapic;
/* vCPU id's local APIC at 0xFEE00000 on the MMIO bus (one vCPU: one APIC). */
int kap_soft_lapic_create(struct kap_bus *mmio, unsigned int id, struct kap_soft_lapic **out,
			  struct kapsel_error **err);
void kap_soft_lapic_free(struct kap_soft_lapic *l);
/* Fires the timer when due; returns when it is next due, 0 when not armed. */
uint64_t kap_soft_lapic_poll(struct kap_soft_lapic *l, uint64_t now);
bool kap_soft_lapic_pending(struct kap_soft_lapic *l);
/* Moves the highest deliverable vector from IRR to ISR and returns it, or -1. */
int kap_soft_lapic_ack(struct kap_soft_lapic *l);
/* Whether the 8259's INTR reaches the CPU: APIC off, or LINT0 unmasked in ExtINT mode. */
bool kap_soft_lapic_accepts_pic(struct kap_soft_lapic *l, uint64_t apic_base);
