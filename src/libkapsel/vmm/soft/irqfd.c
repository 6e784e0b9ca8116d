/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KVM's irqfds (KVM_IRQFD, virt/kvm/eventfd.c) and MSI routes (KVM_SET_GSI_ROUTING) for the
 * soft path, so the virtio devices keep signalling the same eventfds on both paths: one
 * thread waits on every irqfd and raises what it stands for.
 *
 * - GSI 0-23 (virtio-mmio's lines, virtio-pci's INTx): level, with a resample fd. A signal
 *   raises the I/O APIC pin (and the 8259's for an ISA GSI, as KVM's default routing does);
 *   the guest's EOI of that pin lowers it and writes the resample fd, and the device signals
 *   again if its ISR is still set (virtio.c, resample).
 * - GSI 24 and up (virtio-pci's MSI-X vectors): edge; a signal sends the MSI message the
 *   route holds (kap_vm_msi_route) to the local APIC it addresses.
 *
 * ioeventfds need no counterpart: a write the soft CPU makes always reaches the bus, where the
 * transports' own handlers kick the queue (mmio.c QueueNotify, pci.c bar_write).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/jail.h"
#include "vmm/soft/irq.h"
#include "vmm/soft/soft.h"
#include "vmm/vmm.h"

#define IRQFD_MAX 64
#define ROUTE_MAX 64
#define PINS	  24

struct irqfd {
	unsigned int gsi;
	int fd, resample_fd; /* resample_fd < 0: edge */
	bool asserted;
};

struct kap_soft_irqfds {
	struct kap_vm *vm;
	pthread_mutex_t lock;
	struct irqfd fds[IRQFD_MAX];
	unsigned int n;
	struct {
		unsigned int gsi;
		uint64_t addr;
		uint32_t data;
	} routes[ROUTE_MAX];
	unsigned int nroutes;
	int wake_fd; /* a new irqfd, or stop */
	atomic_bool stop;
	pthread_t thread;
	bool started;
};

/* A line GSI (0-23) to level, where KVM's default routing sends it. Lock held. */
static void set_line(struct kap_soft_irqfds *x, unsigned int gsi, int level)
{
	kap_soft_ioapic_set_irq(x->vm->soft_ioapic, gsi, level);
	if (gsi < 16)
		kap_soft_pic_set_irq(x->vm->soft_pic, gsi, level);
}

/* irqfd i was signalled. Lock held. */
static void fire(struct kap_soft_irqfds *x, struct irqfd *f)
{
	if (f->gsi < PINS) {
		if (f->resample_fd >= 0) {
			f->asserted = true;
			set_line(x, f->gsi, 1);
		} else { /* an edge irqfd on a line: a pulse */
			set_line(x, f->gsi, 1);
			set_line(x, f->gsi, 0);
		}
		return;
	}
	for (unsigned int i = 0; i < x->nroutes; i++)
		if (x->routes[i].gsi == f->gsi) {
			kap_soft_msi(x->vm, x->routes[i].addr, x->routes[i].data);
			return;
		}
	/* No route yet: KVM drops it too (the driver has not written the table entry). */
}

/* The I/O APIC's EOI notifier: every asserted level irqfd on pin is lowered and resampled. */
static void resample(void *opaque, unsigned int pin)
{
	struct kap_soft_irqfds *x = opaque;
	pthread_mutex_lock(&x->lock);
	for (unsigned int i = 0; i < x->n; i++) {
		struct irqfd *f = &x->fds[i];
		if (f->gsi != pin || f->resample_fd < 0 || !f->asserted)
			continue;
		f->asserted = false;
		set_line(x, pin, 0);
		uint64_t one = 1;
		if (write(f->resample_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			kap_debug("vm: soft irqfd gsi %u: resample: %s", pin, strerror(errno));
	}
	pthread_mutex_unlock(&x->lock);
}

static void *irqfd_thread(void *opaque)
{
	struct kap_soft_irqfds *x = opaque;
	struct pollfd p[IRQFD_MAX + 1];
	/* --jail: a device thread's syscalls (poll, read, write on eventfds); vm.c starts this
	 * thread after the jail closed, so it gets a filter as every other thread does. */
	kap_jail_thread(KAP_JAIL_DEVICE, 0);
	while (!atomic_load(&x->stop)) {
		pthread_mutex_lock(&x->lock);
		unsigned int n = x->n;
		for (unsigned int i = 0; i < n; i++)
			p[i] = (struct pollfd){.fd = x->fds[i].fd, .events = POLLIN};
		pthread_mutex_unlock(&x->lock);
		p[n] = (struct pollfd){.fd = x->wake_fd, .events = POLLIN};
		if (poll(p, n + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			kap_warn("vm: soft irqfds: poll: %s", strerror(errno));
			return NULL;
		}
		uint64_t v;
		if (p[n].revents && read(x->wake_fd, &v, sizeof(v)) < 0)
			continue;
		bool fired = false;
		pthread_mutex_lock(&x->lock);
		for (unsigned int i = 0; i < n; i++)
			if (p[i].revents && read(x->fds[i].fd, &v, sizeof(v)) == sizeof(v)) {
				fire(x, &x->fds[i]);
				fired = true;
			}
		pthread_mutex_unlock(&x->lock);
		if (fired)
			kap_soft_wake(x->vm); /* a halted vCPU takes it now, not at its next tick */
	}
	return NULL;
}

int kap_soft_irqfds_create(struct kap_vm *vm, struct kap_soft_irqfds **out,
			   struct kapsel_error **err)
{
	struct kap_soft_irqfds *x = calloc(1, sizeof(*x));
	if (!x)
		return kap_error(err, ENOMEM, "soft irqfds");
	x->vm = vm;
	pthread_mutex_init(&x->lock, NULL);
	x->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (x->wake_fd < 0) {
		int r = kap_error(err, errno, "soft irqfds: eventfd");
		kap_soft_irqfds_free(x);
		return r;
	}
	kap_soft_ioapic_set_notify(vm->soft_ioapic, resample, x);
	*out = x;
	return 0;
}

static void wake(struct kap_soft_irqfds *x)
{
	uint64_t one = 1;
	if (write(x->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		kap_debug("vm: soft irqfds: wake: %s", strerror(errno));
}

int kap_soft_irqfd_add(struct kap_soft_irqfds *x, unsigned int gsi, int fd, int resample_fd,
		       struct kapsel_error **err)
{
	if (gsi >= PINS && resample_fd >= 0)
		return kap_error_plain(err, EINVAL, "soft irqfd gsi %u: a resampling MSI", gsi);
	pthread_mutex_lock(&x->lock);
	int r = 0;
	if (x->n == IRQFD_MAX)
		r = kap_error_plain(err, ENOSPC, "soft irqfd gsi %u: %d irqfds already", gsi,
				    IRQFD_MAX);
	else
		x->fds[x->n++] = (struct irqfd){.gsi = gsi, .fd = fd, .resample_fd = resample_fd};
	pthread_mutex_unlock(&x->lock);
	if (r == 0)
		wake(x);
	return r;
}

int kap_soft_irqfd_msi_route(struct kap_soft_irqfds *x, unsigned int gsi, uint64_t addr,
			     uint32_t data, struct kapsel_error **err)
{
	pthread_mutex_lock(&x->lock);
	int r = 0;
	unsigned int i = 0;
	while (i < x->nroutes && x->routes[i].gsi != gsi)
		i++;
	if (i == ROUTE_MAX) {
		r = kap_error_plain(err, ENOSPC, "soft MSI route gsi %u: table full", gsi);
	} else {
		x->routes[i].gsi = gsi;
		x->routes[i].addr = addr;
		x->routes[i].data = data;
		if (i == x->nroutes)
			x->nroutes++;
	}
	pthread_mutex_unlock(&x->lock);
	return r;
}

int kap_soft_irqfds_start(struct kap_soft_irqfds *x, struct kapsel_error **err)
{
	int r = pthread_create(&x->thread, NULL, irqfd_thread, x);
	if (r)
		return kap_error(err, r, "soft irqfds: start the thread");
	x->started = true;
	return 0;
}

void kap_soft_irqfds_free(struct kap_soft_irqfds *x)
{
	if (!x)
		return;
	if (x->started) {
		atomic_store(&x->stop, true);
		wake(x);
		pthread_join(x->thread, NULL);
	}
	if (x->vm->soft_ioapic)
		kap_soft_ioapic_set_notify(x->vm->soft_ioapic, NULL, NULL);
	if (x->wake_fd >= 0)
		close(x->wake_fd);
	pthread_mutex_destroy(&x->lock);
	free(x);
}
