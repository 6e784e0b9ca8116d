/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vCPU threads: each runs KVM_RUN and dispatches the exits KVM hands to user space (port I/O,
 * MMIO, system events, faults) on its own thread, so device register emulation needs no
 * hand-off. Stopping uses kvm_run.immediate_exit plus a signal (api.rst, KVM_CAP_IMMEDIATE_EXIT):
 * whichever comes first, KVM_RUN returns EINTR and the thread sees vm->stop.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/jail.h"
#include "vmm/soft/soft.h"
#include "vmm/vmm.h"

static void kick_handler(int sig)
{
	(void)sig; /* only here to interrupt KVM_RUN */
}

int kap_vcpu_signals_init(struct kapsel_error **err)
{
	struct sigaction sa = {.sa_handler = kick_handler}; /* no SA_RESTART: KVM_RUN -> EINTR */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGRTMIN, &sa, NULL) < 0)
		return kap_error(err, errno, "sigaction SIGRTMIN");
	return 0;
}

int kap_vcpu_create(struct kap_vm *vm, unsigned int id, struct kapsel_error **err)
{
	struct kap_vcpu *v = &vm->vcpus[id];
	*v = (struct kap_vcpu){.vm = vm, .id = id, .fd = -EBADF};
	v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0)
		return kap_error(err, errno, "KVM_CREATE_VCPU %u", id);
	void *p =
	    mmap(NULL, (size_t)vm->kvm.run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (p == MAP_FAILED) {
		int r = kap_error(err, errno, "mmap kvm_run of vCPU %u", id);
		close(v->fd);
		v->fd = -EBADF;
		return r;
	}
	v->run = p;
	return 0;
}

void kap_vcpu_destroy(struct kap_vcpu *v)
{
	kap_soft_vcpu_destroy(v);
	if (v->run)
		munmap(v->run, (size_t)v->vm->kvm.run_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -EBADF;
}

/* Reads up to 15 bytes at RIP for the fault message; "?" when not mapped. */
static void insn_bytes(struct kap_vcpu *v, uint64_t rip, char *out, size_t outlen)
{
	struct kvm_sregs sregs;
	snprintf(out, outlen, "?");
	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return;
	struct kvm_translation t = {.linear_address = sregs.cs.base + rip};
	uint64_t gpa = t.linear_address;
	if (sregs.cr0 & (1ULL << 31)) {
		if (ioctl(v->fd, KVM_TRANSLATE, &t) < 0 || !t.valid)
			return;
		gpa = t.physical_address;
	}
	uint8_t b[15];
	size_t n = 15;
	while (n > 0 && kap_mem_read(&v->vm->mem, gpa, b, n) < 0)
		n--;
	size_t o = 0;
	out[0] = 0;
	for (size_t i = 0; i < n && o + 4 < outlen; i++)
		o += (size_t)snprintf(out + o, outlen - o, "%s%02x", i ? " " : "", b[i]);
}

static uint64_t vcpu_rip(struct kap_vcpu *v)
{
	struct kvm_regs regs;
	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
		return 0;
	return regs.rip;
}

static void fault(struct kap_vcpu *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fault(struct kap_vcpu *v, const char *fmt, ...)
{
	char msg[480];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	kap_vm_request_exit(v->vm, KAP_VM_FAULT, 0, msg);
}

static void internal_error(struct kap_vcpu *v)
{
	struct kvm_run *run = v->run;
	uint64_t rip = vcpu_rip(v);
	char bytes[64];
	if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) {
		if (run->emulation_failure.ndata >= 3 &&
		    (run->emulation_failure.flags &
		     KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
			size_t o = 0;
			bytes[0] = 0;
			for (unsigned int i = 0; i < run->emulation_failure.insn_size && i < 15 &&
						 o + 4 < sizeof(bytes);
			     i++)
				o += (size_t)snprintf(bytes + o, sizeof(bytes) - o, "%s%02x",
						      i ? " " : "",
						      run->emulation_failure.insn_bytes[i]);
		} else {
			insn_bytes(v, rip, bytes, sizeof(bytes));
		}
		fault(v,
		      "guest fault on vCPU %u: KVM internal error: emulation failure at RIP "
		      "0x%" PRIx64
		      " (instruction bytes %s); this KVM cannot run that instruction: mask the CPU "
		      "feature the guest uses with --cpu-features (e.g. -xsave,-avx,-movbe)",
		      v->id, rip, bytes);
		return;
	}
	insn_bytes(v, rip, bytes, sizeof(bytes));
	fault(v,
	      "guest fault on vCPU %u: KVM internal error (suberror %u) at RIP 0x%" PRIx64
	      " (instruction bytes %s)",
	      v->id, run->internal.suberror, rip, bytes);
}

static enum kap_exit_kind exit_kind(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_IO:
		return KAP_EXIT_IO;
	case KVM_EXIT_MMIO:
		return KAP_EXIT_MMIO;
	case KVM_EXIT_INTR:
		return KAP_EXIT_INTR;
	case KVM_EXIT_SYSTEM_EVENT:
		return KAP_EXIT_SYSTEM;
	case KVM_EXIT_SHUTDOWN:
	case KVM_EXIT_INTERNAL_ERROR:
	case KVM_EXIT_FAIL_ENTRY:
	case KVM_EXIT_HLT:
		return KAP_EXIT_FAULT;
	default:
		return KAP_EXIT_OTHER;
	}
}

const char *kap_vcpu_exit_name(enum kap_exit_kind k)
{
	static const char *const names[KAP_EXIT_KINDS] = {
	    [KAP_EXIT_IO] = "io",	  [KAP_EXIT_MMIO] = "mmio",   [KAP_EXIT_INTR] = "intr",
	    [KAP_EXIT_SYSTEM] = "system", [KAP_EXIT_FAULT] = "fault", [KAP_EXIT_OTHER] = "other",
	};
	return k < KAP_EXIT_KINDS ? names[k] : "?";
}

uint64_t kap_vcpu_cpu_ns(struct kap_vcpu *v)
{
	clockid_t cid;
	struct timespec ts;
	if (!v->started || pthread_getcpuclockid(v->thread, &cid) != 0 ||
	    clock_gettime(cid, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Handles one exit; false ends this vCPU's loop. */
static bool handle_exit(struct kap_vcpu *v)
{
	struct kvm_run *run = v->run;
	struct kap_vm *vm = v->vm;
	atomic_fetch_add_explicit(&v->exits[exit_kind(run->exit_reason)], 1, memory_order_relaxed);
	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		bool write = run->io.direction == KVM_EXIT_IO_OUT;
		/* rep ins/outs arrive as count back-to-back items. */
		for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
			kap_bus_access(&vm->pio, run->io.port, data, run->io.size, write);
		return true;
	}
	case KVM_EXIT_MMIO:
		kap_bus_access(&vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
			       run->mmio.is_write);
		return true;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SHUTDOWN: {
		char bytes[64];
		uint64_t rip = vcpu_rip(v);
		struct kvm_sregs sregs;
		/*
		 * On AMD, KVM reinitialises the VMCB after a shutdown intercept (svm.c,
		 * shutdown_interception: "VMCB is undefined after a SHUTDOWN intercept"), so the
		 * registers read now are the reset state, not where the guest faulted.
		 */
		if (rip == 0xfff0 && ioctl(v->fd, KVM_GET_SREGS, &sregs) == 0 &&
		    sregs.cs.base == 0xffff0000) {
			fault(v,
			      "guest fault on vCPU %u: triple fault (shutdown); where is unknown: "
			      "KVM "
			      "resets the vCPU's state on this exit (AMD SVM)",
			      v->id);
			return false;
		}
		insn_bytes(v, rip, bytes, sizeof(bytes));
		fault(v,
		      "guest fault on vCPU %u: triple fault (shutdown) at RIP 0x%" PRIx64
		      " (instruction bytes %s)",
		      v->id, rip, bytes);
		return false;
	}
	case KVM_EXIT_INTERNAL_ERROR:
		internal_error(v);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		fault(
		    v,
		    "guest fault on vCPU %u: VM entry failed (hardware entry failure reason 0x%llx "
		    "on host CPU %u)",
		    v->id, (unsigned long long)run->fail_entry.hardware_entry_failure_reason,
		    run->fail_entry.cpu);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			kap_vm_request_exit(vm, KAP_VM_POWEROFF, 0, NULL);
			return false;
		case KVM_SYSTEM_EVENT_RESET:
			kap_vm_request_exit(vm, KAP_VM_RESET, 0, NULL);
			return false;
		default:
			fault(v, "guest fault on vCPU %u: system event %u (crash)", v->id,
			      run->system_event.type);
			return false;
		}
	case KVM_EXIT_HYPERV:
		/*
		 * --cpu-features +hv-synic (api.rst, KVM_EXIT_HYPERV): KVM has already applied a
		 * SynIC MSR write and only tells; a hypercall KVM does not handle itself
		 * (HvPostMessage, HvSignalEvent to a connection with no eventfd) gets "invalid
		 * connection", as no host-side SynIC port exists (TLFS 6.0, 11.10.1).
		 */
		if (run->hyperv.type == KVM_EXIT_HYPERV_HCALL)
			run->hyperv.u.hcall.result = 0x12; /* HV_STATUS_INVALID_CONNECTION_ID */
		return true;
	case KVM_EXIT_HLT:
		/* Only without an in-kernel LAPIC; ours has one, so this is a halted machine. */
		fault(v, "guest halted vCPU %u at RIP 0x%" PRIx64 " with no way to wake it", v->id,
		      vcpu_rip(v));
		return false;
	default:
		fault(v, "vCPU %u: unexpected KVM exit reason %u", v->id, run->exit_reason);
		return false;
	}
}

static void *vcpu_thread(void *arg)
{
	struct kap_vcpu *v = arg;
	struct kap_vm *vm = v->vm;
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", v->id);
	pthread_setname_np(pthread_self(), name);
	kap_jail_thread(KAP_JAIL_VCPU, v->id); /* soft or KVM: each vCPU thread has its filter */
	if (v->soft) {
		kap_soft_vcpu_run(v); /* --accel soft: its own loop over the same buses */
		return NULL;
	}
	while (!atomic_load(&vm->stop)) {
		if (atomic_load_explicit(&vm->pause_req, memory_order_acquire)) {
			kap_vm_park(v);
			continue;
		}
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			char msg[128];
			snprintf(msg, sizeof(msg), "vCPU %u: KVM_RUN: %s", v->id, strerror(errno));
			kap_vm_request_exit(vm, KAP_VM_FAULT, 0, msg);
			break;
		}
		if (!handle_exit(v))
			break;
	}
	return NULL;
}

int kap_vcpu_start(struct kap_vcpu *v, struct kapsel_error **err)
{
	int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
	if (r != 0)
		return kap_error(err, r, "start vCPU %u thread", v->id);
	v->started = true;
	return 0;
}

void kap_vcpu_kick(struct kap_vcpu *v)
{
	if (!v->started || !v->run)
		return; /* a soft vCPU sees vm->stop at its next block boundary */
	v->run->immediate_exit = 1;
	pthread_kill(v->thread, SIGRTMIN);
}

void kap_vcpu_join(struct kap_vcpu *v)
{
	if (!v->started)
		return;
	pthread_join(v->thread, NULL);
	v->started = false;
}
