/* SPDX-License-Identifier: Apache-2.0 */
/*
 * /dev/kvm: open it, check the API and the extensions the VMM relies on, and read the limits
 * and the supported CPUID. KVM is probed through these ioctls only: a nested or emulating KVM
 * works even where the host CPUID shows no vmx/svm flag.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/error.h"
#include "vmm/vmm.h"

static const struct {
	int cap;
	const char *name;
} required_caps[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
};

int kap_kvm_open(struct kap_kvm *k, struct kapsel_error **err)
{
	*k = (struct kap_kvm){.fd = -EBADF};
	k->fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->fd < 0) {
		if (errno == ENOENT)
			return kap_error_plain(
			    err, ENOENT,
			    "open /dev/kvm: no such device (KVM is not available "
			    "on this host: load kvm-intel/kvm-amd or enable "
			    "nested virtualization)");
		if (errno == EACCES || errno == EPERM)
			return kap_error(err, errno,
					 "open /dev/kvm (add the user to the kvm group or run "
					 "as root)");
		return kap_error(err, errno, "open /dev/kvm");
	}
	int v = ioctl(k->fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		kap_kvm_close(k);
		return kap_error_plain(err, ENOTSUP, "/dev/kvm: API version %d, expected %d", v,
				       KVM_API_VERSION);
	}
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++) {
		if (ioctl(k->fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			kap_kvm_close(k);
			return kap_error_plain(err, ENOTSUP, "/dev/kvm: %s is not supported",
					       required_caps[i].name);
		}
	}
	k->run_size = ioctl(k->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_size <= 0) {
		int r = kap_error(err, errno, "KVM_GET_VCPU_MMAP_SIZE");
		kap_kvm_close(k);
		return r;
	}
	k->max_vcpus = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (k->max_vcpus <= 0)
		k->max_vcpus = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (k->max_vcpus <= 0)
		k->max_vcpus = 4; /* Documentation/virt/kvm/api.rst: assume 4 when unreported */

	/* KVM_GET_SUPPORTED_CPUID fails with E2BIG until the buffer is large enough. */
	for (int n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c) {
			kap_kvm_close(k);
			return kap_error(err, ENOMEM, "KVM_GET_SUPPORTED_CPUID");
		}
		c->nent = n;
		if (ioctl(k->fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			k->cpuid = c;
			return 0;
		}
		int e = errno;
		free(c);
		if (e != E2BIG) {
			kap_kvm_close(k);
			return kap_error(err, e, "KVM_GET_SUPPORTED_CPUID");
		}
	}
	kap_kvm_close(k);
	return kap_error_plain(err, E2BIG, "KVM_GET_SUPPORTED_CPUID: too many entries");
}

void kap_kvm_close(struct kap_kvm *k)
{
	free(k->cpuid);
	k->cpuid = NULL;
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -EBADF;
}
