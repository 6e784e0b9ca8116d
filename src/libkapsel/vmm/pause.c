/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pause and resume (PATCH /vm, docs/vm.md). Pausing parks every vCPU outside KVM_RUN: the
 * request flag is set, each vCPU is kicked (immediate_exit plus a signal, vcpu.c), and each
 * one waits on a condition variable at the top of its loop. KVM completes a pending port or
 * MMIO read before KVM_RUN returns EINTR (api.rst, immediate_exit), so no instruction is left
 * half done, and interrupts raised while paused (irqfds, the PIT, a device thread) stay
 * pending in the in-kernel LAPIC/IOAPIC until the vCPUs run again: none is lost.
 *
 * Time: left alone, a paused guest's clocks keep running with the host's, and on resume the
 * guest sees the pause as time it lost (Linux's soft-lockup watchdog fires, timers expire at
 * once). kapsel stops the guest's clocks for the pause, as QEMU does for a stopped VM:
 *  - kvmclock: KVM_GET_CLOCK when pausing, KVM_SET_CLOCK with that value when resuming
 *    (api.rst 4.66/4.67), so kvmclock continues from where it stopped;
 *  - the TSC: each vCPU's IA32_TSC is read when pausing (KVM_GET_MSRS) and vCPU 0's value is
 *    written back to all of them when resuming. A host-initiated IA32_TSC write sets the TSC
 *    offset (leaving IA32_TSC_ADJUST alone), and KVM's TSC matching (x86.c,
 *    kvm_synchronize_tsc: writes within a second of each other) gives every vCPU the same
 *    offset, so the vCPUs stay synchronised. It is written before KVM_SET_CLOCK, which then
 *    recomputes kvmclock from the new TSC;
 *  - KVM_KVMCLOCK_CTRL on each vCPU when resuming sets PVCLOCK_GUEST_STOPPED in its pvclock
 *    page, which tells Linux's watchdogs that the host stopped it (it fails with EINVAL when
 *    the guest never enabled kvmclock; that is not an error).
 * The guest's wall clock (kvmclock's system time plus its boot-time offset) is then behind by
 * the pause; NTP or the guest agent corrects that, as after a QEMU stop/cont.
 *
 * The soft path (--accel soft): a soft vCPU parks at a block boundary (it looks at the request
 * there, and a halted one is woken to see it), and the guest clock its TSC, LAPIC timers and
 * PIT read stops for the pause and goes on from where it stopped (soft/state.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/devices/devices.h"
#include "vmm/soft/soft.h"
#include "vmm/soft/state.h"
#include "vmm/vmm.h"
#include "vmm/x86/acpi.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/x86.h"

#define MSR_IA32_TSC 0x10

struct kap_vm_clock {
	struct kvm_clock_data clock;
	bool have_clock;
	uint64_t tsc;
	bool have_tsc;
};

void kap_vm_pause_init(struct kap_vm *vm)
{
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->pause_cond, &ca);
	pthread_condattr_destroy(&ca);
}

void kap_vm_pause_destroy(struct kap_vm *vm)
{
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_cond_destroy(&vm->pause_cond);
	free(vm->clock);
	vm->clock = NULL;
}

bool kap_vm_is_paused(struct kap_vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	bool p = vm->paused;
	pthread_mutex_unlock(&vm->pause_lock);
	return p;
}

void kap_vm_park(struct kap_vcpu *v)
{
	struct kap_vm *vm = v->vm;
	pthread_mutex_lock(&vm->pause_lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->pause_cond);
	while (atomic_load(&vm->pause_req) && !atomic_load(&vm->stop))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	vm->parked--;
	/*
	 * The kick that parked us left immediate_exit set. A stop that raced with the clear
	 * set vm->stop first, which the loop checks before KVM_RUN.
	 */
	if (v->run) /* a soft vCPU has none */
		v->run->immediate_exit = 0;
	pthread_mutex_unlock(&vm->pause_lock);
}

static unsigned int running_vcpus(struct kap_vm *vm)
{
	unsigned int n = 0;
	for (unsigned int i = 0; i < vm->ncpus; i++)
		n += vm->vcpus[i].started;
	return n;
}

static void save_clock(struct kap_vm *vm, struct kap_vm_clock *c)
{
	*c = (struct kap_vm_clock){0};
	if (ioctl(vm->fd, KVM_GET_CLOCK, &c->clock) == 0)
		c->have_clock = true;
	else
		kap_debug("vm pause: KVM_GET_CLOCK: %s; kvmclock will count the pause",
			  strerror(errno));
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = {.h.nmsrs = 1, .e.index = MSR_IA32_TSC};
	if (vm->ncpus && ioctl(vm->vcpus[0].fd, KVM_GET_MSRS, &m) == 1) {
		c->tsc = m.e.data;
		c->have_tsc = true;
	} else {
		kap_debug("vm pause: KVM_GET_MSRS IA32_TSC failed; the TSC will count the pause");
	}
}

static void restore_clock(struct kap_vm *vm, const struct kap_vm_clock *c)
{
	for (unsigned int i = 0; c->have_tsc && i < vm->ncpus; i++) {
		struct {
			struct kvm_msrs h;
			struct kvm_msr_entry e;
		} m = {.h.nmsrs = 1, .e.index = MSR_IA32_TSC, .e.data = c->tsc};
		if (ioctl(vm->vcpus[i].fd, KVM_SET_MSRS, &m) != 1)
			kap_debug("vm resume: KVM_SET_MSRS IA32_TSC on vCPU %u failed", i);
	}
	if (c->have_clock) {
		struct kvm_clock_data d = {.clock = c->clock.clock};
		if (ioctl(vm->fd, KVM_SET_CLOCK, &d) < 0)
			kap_debug("vm resume: KVM_SET_CLOCK: %s", strerror(errno));
	}
	for (unsigned int i = 0; i < vm->ncpus; i++)
		if (ioctl(vm->vcpus[i].fd, KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
			kap_debug("vm resume: KVM_KVMCLOCK_CTRL on vCPU %u: %s", i,
				  strerror(errno));
}

int kap_vm_pause(struct kap_vm *vm, struct kapsel_error **err)
{
	pthread_mutex_lock(&vm->pause_lock);
	if (vm->suspended) {
		pthread_mutex_unlock(&vm->pause_lock);
		return kap_error_plain(err, EBUSY, "the VM is suspended (ACPI S3): wake it first");
	}
	if (vm->paused || atomic_load(&vm->pause_req)) {
		pthread_mutex_unlock(&vm->pause_lock);
		return kap_error_plain(err, EBUSY, "the VM is already paused");
	}
	atomic_store(&vm->pause_req, true);
	pthread_mutex_unlock(&vm->pause_lock);
	for (unsigned int i = 0; i < vm->ncpus; i++)
		kap_vcpu_kick(&vm->vcpus[i]);
	if (vm->soft)
		kap_soft_wake(vm); /* halted soft vCPUs see the request now, not at their timeout */
	pthread_mutex_lock(&vm->pause_lock);
	while (vm->parked < running_vcpus(vm) && !atomic_load(&vm->stop)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&vm->pause_cond, &vm->pause_lock, &ts);
	}
	if (atomic_load(&vm->stop)) {
		atomic_store(&vm->pause_req, false);
		pthread_cond_broadcast(&vm->pause_cond);
		pthread_mutex_unlock(&vm->pause_lock);
		return kap_error_plain(err, ESHUTDOWN, "the VM is shutting down");
	}
	if (vm->soft)
		kap_soft_clock_pause(); /* the soft TSC, LAPIC timers and PIT stop (soft/state.c) */
	else if (!vm->clock)
		vm->clock = malloc(sizeof(*vm->clock));
	if (vm->clock)
		save_clock(vm, vm->clock);
	vm->paused = true;
	vm->paused_at_ms = kap_vmm_now_ms();
	pthread_mutex_unlock(&vm->pause_lock);
	return 0;
}

int kap_vm_resume(struct kap_vm *vm, struct kapsel_error **err)
{
	pthread_mutex_lock(&vm->pause_lock);
	if (vm->suspended) {
		pthread_mutex_unlock(&vm->pause_lock);
		return kap_error_plain(
		    err, EBUSY, "the VM is suspended (ACPI S3), not paused: wake it instead");
	}
	if (!vm->paused) {
		pthread_mutex_unlock(&vm->pause_lock);
		return kap_error_plain(err, EBUSY, "the VM is not paused");
	}
	if (vm->soft)
		kap_soft_clock_resume();
	else if (vm->clock)
		restore_clock(vm, vm->clock);
	vm->paused = false;
	vm->paused_total_ms += kap_vmm_now_ms() - vm->paused_at_ms;
	atomic_store(&vm->pause_req, false);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	return 0;
}

int kap_vm_saved_clock(struct kap_vm *vm, struct kvm_clock_data *clock, uint64_t *tsc)
{
	if (!vm->clock)
		return 0;
	*clock = vm->clock->clock;
	*tsc = vm->clock->tsc;
	return (vm->clock->have_clock ? 1 : 0) | (vm->clock->have_tsc ? 2 : 0);
}

/* ---- ACPI S3 ---- */

bool kap_vm_is_suspended(struct kap_vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	bool s = vm->suspended;
	pthread_mutex_unlock(&vm->pause_lock);
	return s;
}

/*
 * From the vCPU thread that wrote SLP_EN: it parks too once it is back at the top of its
 * loop (the kick set its immediate_exit), after KVM has completed that OUT. Unlike a pause the
 * clocks are not stopped: a sleeping machine's time goes on.
 */
void kap_vm_suspend(struct kap_vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	bool already = vm->suspended;
	vm->suspended = true;
	atomic_store(&vm->pause_req, true);
	pthread_mutex_unlock(&vm->pause_lock);
	if (already)
		return;
	kap_info("vm: the guest suspended to RAM (ACPI S3); 'kapsel vm wake' resumes it");
	for (unsigned int i = 0; i < vm->ncpus; i++)
		kap_vcpu_kick(&vm->vcpus[i]);
}

/* The FACS kapsel built (x86/acpi.c: 64-byte aligned among the tables at KAP_ACPI_BASE). */
static uint32_t waking_vector(struct kap_vm *vm)
{
	const uint8_t *t = kap_mem_ptr(&vm->mem, KAP_ACPI_BASE, KAP_ACPI_SIZE);
	for (size_t off = 0; t && off + KAP_FACS_LENGTH <= KAP_ACPI_SIZE; off += 64) {
		uint32_t len, vec;
		memcpy(&len, t + off + 4, 4);
		if (memcmp(t + off, "FACS", 4) || len != KAP_FACS_LENGTH)
			continue;
		memcpy(&vec, t + off + 12, 4); /* firmware_waking_vector (§5.2.10) */
		return vec;
	}
	return 0;
}

int kap_vm_wake(struct kap_vm *vm, struct kapsel_error **err)
{
	pthread_mutex_lock(&vm->pause_lock);
	if (!vm->suspended) {
		pthread_mutex_unlock(&vm->pause_lock);
		return kap_error_plain(err, EBUSY, "the VM is not suspended (ACPI S3)");
	}
	while (vm->parked < running_vcpus(vm) && !atomic_load(&vm->stop)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&vm->pause_cond, &vm->pause_lock, &ts);
	}
	int r = 0;
	uint32_t vector = waking_vector(vm);
	if (atomic_load(&vm->stop))
		r = kap_error_plain(err, ESHUTDOWN, "the VM is shutting down");
	else if (!vector || vector >= 0x100000)
		r = kap_error_plain(err, EINVAL,
				    "the guest left no waking vector below 1 MiB in its FACS "
				    "(0x%x): it cannot resume",
				    vector);
	for (unsigned int i = 0; r == 0 && i < vm->ncpus; i++)
		r = kap_x86_vcpu_wake(vm->vcpus[i].fd, vector, i == 0, err);
	if (r == 0) {
		kap_acpi_pm_woke(vm->acpi_pm);
		vm->suspended = false;
		vm->paused = false;
		atomic_store(&vm->pause_req, false);
		pthread_cond_broadcast(&vm->pause_cond);
		kap_info("vm: woke from ACPI S3 at %04x:%04x", vector >> 4, vector & 0xf);
	}
	pthread_mutex_unlock(&vm->pause_lock);
	return r;
}
