/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio transports (mmio.c) and the devices (blk.c, rng.c, net.c, console.c, vsock.c, fs.c) that
 * vm.c creates.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "vmm/virtio/virtio.h"
#include "vmm/virtio/pci.h"
#include "vmm/vmm.h"

/*
 * virtio-mmio windows (docs/vm.md): device i at KAP_VIRTIO_MMIO_BASE + i * 0x200, interrupt
 * GSI KAP_VIRTIO_MMIO_GSI + i (IOAPIC pins 16-23, clear of the ISA IRQs).
 */
#define KAP_VIRTIO_MMIO_BASE 0xD0000000ULL
#define KAP_VIRTIO_MMIO_SIZE 0x200
#define KAP_VIRTIO_MMIO_GSI  16
#define KAP_VIRTIO_MMIO_MAX  8

struct kap_mmio_transport {
	struct kap_virtio_dev *dev;
	uint64_t base;
	unsigned int gsi;
};

/* A device and its transport, as vm.c keeps them. */
struct kap_virtio_slot {
	struct kap_virtio_dev dev;
	struct kap_mmio_transport mmio;
	struct kap_pci_transport pci; /* --transport pci */
	bool initialised;	      /* kap_virtio_init ran: kap_virtio_destroy must */
};

extern const struct kap_dev_ops kap_virtio_mmio_ops;
/* Registers the window, the queues' ioeventfds and the irqfd. */
int kap_virtio_mmio_attach(struct kap_vm *vm, struct kap_mmio_transport *t,
			   struct kapsel_error **err);

/* virtio-blk over a raw file, block device or qcow2 image (blk.c). Opens and checks the disk. */
int kap_virtio_blk_new(struct kap_virtio_dev *d, const struct kapsel_vm_disk *disk,
		       const struct kap_guest_mem *mem, struct kapsel_error **err);
struct kap_disk;
/* The same over a disk already opened (kap_disk_open_config), which it takes, even on error. */
int kap_virtio_blk_new_disk(struct kap_virtio_dev *d, const struct kapsel_vm_disk *disk,
			    struct kap_disk *opened, const struct kap_guest_mem *mem,
			    struct kapsel_error **err);
/* virtio-rng from getrandom(2) (rng.c). */
int kap_virtio_rng_new(struct kap_virtio_dev *d, const struct kap_guest_mem *mem,
		       struct kapsel_error **err);
/* virtio-net over a tap (net.c): opens the tap, or creates one on a bridge. */
int kap_virtio_net_new(struct kap_virtio_dev *d, const struct kapsel_vm_net *net,
		       const struct kap_guest_mem *mem, struct kapsel_error **err);
/* virtio-console, port 0 as hvc0 (console.c), over the VM's console backend. */
int kap_virtio_console_new(struct kap_virtio_dev *d, struct kap_console *con,
			   const struct kap_guest_mem *mem, struct kapsel_error **err);
/* Console input for hvc0: the backend's input callback (event thread). */
void kap_virtio_console_input(void *dev, const uint8_t *buf, size_t len);
/* virtio-fs over a host directory (fs.c): opens it. */
int kap_virtio_fs_new(struct kap_virtio_dev *d, const struct kapsel_vm_fs *share,
		      const struct kap_guest_mem *mem, struct kapsel_error **err);
/* The jail's own procfs (its root fd): the share reopens its nodes through its self/fd. */
int kap_virtio_fs_use_proc(struct kap_virtio_dev *d, int proc_root, struct kapsel_error **err);
/* virtio-vsock with Firecracker's unix-socket multiplexer on the host (vsock.c). */
int kap_virtio_vsock_new(struct kap_virtio_dev *d, uint32_t cid, const char *path,
			 const struct kap_guest_mem *mem, struct kapsel_error **err);
/*
 * Live migration (migrate.c): the source's connection sockets, in the order its saved state
 * lists them (at most cap; the device quiesced); and, on the destination before the state is
 * loaded, the sockets handed over: the load takes those it keeps (sets them to -1).
 */
unsigned int kap_virtio_vsock_fds(struct kap_virtio_dev *d, int *fds, unsigned int cap);
void kap_virtio_vsock_handover(struct kap_virtio_dev *d, int *fds, unsigned int n);
#define KAP_VSOCK_MAX_CONNS 64
