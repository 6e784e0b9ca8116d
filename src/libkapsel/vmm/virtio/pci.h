/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PCI: the host bridge on bus 0 (devices/pci-host.c, configuration mechanism #1 through ports
 * 0xCF8/0xCFC) and the modern virtio-pci transport (virtio/pci.c, virtio 1.2 §4.1), one
 * function per virtio device. Layout and interrupt routing are in docs/vm.md.
 *
 * Locking: the host bridge serialises every configuration and BAR access under its lock (they
 * are rare: queue notifications are ioeventfds), then a function takes its device's lock. The
 * interrupt path (device thread, device lock held) never takes the host lock.
 */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/virtio/virtio.h"
#include "vmm/vmm.h"

#define KAP_PCI_CONFIG_ADDRESS 0xcf8
#define KAP_PCI_CONFIG_DATA    0xcfc
#define KAP_PCI_CONFIG_SIZE    256
/* Slot 0 is the host bridge; virtio functions take slots 1.. in device order. */
#define KAP_PCI_MAX_SLOTS 32
/*
 * The window BARs live in (the DSDT's PCI0 _CRS); the VMM assigns them at its bottom at boot.
 * It ends at the IOAPIC, as QEMU's pc machine's does, because firmware (SeaBIOS
 * src/fw/pciinit.c pci_bios_init_root_regions_mem) assigns BARs downwards from 0xFEC00000.
 */
#define KAP_PCI_MMIO_BASE 0xE0000000ULL
#define KAP_PCI_MMIO_SIZE 0x1EC00000ULL
/* INTx: slot s pin A is GSI KAP_PCI_INTX_GSI + (s - 1) % 8 (IOAPIC pins 16-23). */
#define KAP_PCI_INTX_GSI 16
/* KVM GSIs above the IOAPIC's 24 pins carry MSI routes. */
#define KAP_PCI_MSI_GSI_BASE 24

/* One PCI function as the host bridge sees it. */
struct kap_pci_func {
	void *opaque;
	/* Configuration space, off + len <= KAP_PCI_CONFIG_SIZE checked by the caller. */
	void (*cfg_read)(void *opaque, uint32_t off, void *data, unsigned int len);
	void (*cfg_write)(void *opaque, uint32_t off, const void *data, unsigned int len);
	/* The memory BAR the function decodes now: size 0 when none or decoding is off. */
	void (*bar_window)(void *opaque, uint64_t *base, uint64_t *size);
	void (*bar_read)(void *opaque, uint64_t off, void *data, unsigned int len);
	void (*bar_write)(void *opaque, uint64_t off, const void *data, unsigned int len);
};

struct kap_pci_host {
	pthread_mutex_t lock;
	uint32_t config_address; /* the last dword written to 0xCF8 */
	struct kap_pci_func *slot[KAP_PCI_MAX_SLOTS];
	uint8_t self[KAP_PCI_CONFIG_SIZE]; /* the bridge's own configuration space (00:00.0) */
	bool pam;			   /* i440FX: PAM0-PAM6 (0x59-0x5f) are writable */
};

extern const struct kap_dev_ops kap_pci_host_cfg_ops;  /* ports 0xCF8-0xCFF */
extern const struct kap_dev_ops kap_pci_host_mmio_ops; /* the BAR window */
void kap_pci_host_init(struct kap_pci_host *h);
void kap_pci_host_destroy(struct kap_pci_host *h);
/* For firmware: QEMU's i440FX ids and its PAM registers (devices/pci-host.c). */
void kap_pci_host_i440fx(struct kap_pci_host *h);
/* Registers the ports and the BAR window on vm's buses. */
int kap_pci_host_attach(struct kap_pci_host *h, struct kap_vm *vm, struct kapsel_error **err);

/*
 * BAR 0 of a virtio-pci function (32-bit, non-prefetchable memory), one page per structure
 * (virtio 1.2 §4.1.4): common, ISR, device-specific, notify (multiplier 4), MSI-X table, PBA.
 */
#define KAP_VPCI_BAR_SIZE     0x8000
#define KAP_VPCI_COMMON_OFF   0x0000
#define KAP_VPCI_ISR_OFF      0x1000
#define KAP_VPCI_DEVICE_OFF   0x2000
#define KAP_VPCI_NOTIFY_OFF   0x3000
#define KAP_VPCI_NOTIFY_MULT  4
#define KAP_VPCI_MSIX_OFF     0x4000
#define KAP_VPCI_PBA_OFF      0x5000
#define KAP_VPCI_MSIX_VECTORS (KAP_VIRTIO_MAX_QUEUES + 1)

struct kap_vpci_msix_entry {
	uint32_t addr_lo, addr_hi, data, ctrl;
};

struct kap_pci_transport {
	struct kap_virtio_dev *dev;
	struct kap_vm *vm; /* NULL: no KVM (fuzzing): interrupts and ioeventfds are skipped */
	struct kap_pci_func func;
	unsigned int slot;
	unsigned int intx_gsi;
	uint8_t cfg[KAP_PCI_CONFIG_SIZE];
	uint8_t wmask[KAP_PCI_CONFIG_SIZE]; /* bits the driver may write */
	/* The notify ioeventfds are registered at this BAR base (0: none). */
	uint64_t notify_base;
	/* MSI-X (PCI 3.0 §6.8.2), under the device lock. */
	unsigned int nvec;
	struct kap_vpci_msix_entry msix[KAP_VPCI_MSIX_VECTORS];
	uint32_t pba;
	uint16_t msix_config;
	uint16_t queue_vector[KAP_VIRTIO_MAX_QUEUES];
	int vec_fd[KAP_VPCI_MSIX_VECTORS]; /* eventfds: irqfds on vec_gsi */
	unsigned int vec_gsi[KAP_VPCI_MSIX_VECTORS];
};

/* Builds the function's configuration space; BAR 0 at bar (the boot-time assignment). */
int kap_virtio_pci_init(struct kap_pci_transport *t, struct kap_virtio_dev *d, unsigned int slot,
			uint64_t bar, struct kapsel_error **err);
/* Plugs it into the host bridge, registers the notify ioeventfds and the MSI/INTx irqfds. */
int kap_virtio_pci_attach(struct kap_vm *vm, struct kap_pci_host *h, struct kap_pci_transport *t,
			  struct kapsel_error **err);
/* Closes the eventfds. */
void kap_virtio_pci_destroy(struct kap_pci_transport *t);

/* The transport's state as the state file stores it (docs/vm.md, Snapshot format). */
struct kap_vpci_state {
	uint8_t cfg[KAP_PCI_CONFIG_SIZE];
	struct kap_vpci_msix_entry msix[KAP_VPCI_MSIX_VECTORS];
	uint32_t pba, nvec;
	uint16_t msix_config, queue_vector[KAP_VIRTIO_MAX_QUEUES], pad[3];
};
_Static_assert(sizeof(struct kap_vpci_state) == 360, "virtio-pci state layout");
/* Device lock held. */
void kap_virtio_pci_save(struct kap_pci_transport *t, struct kap_vpci_state *s);
/*
 * Takes s into a function just attached: its read-only configuration bytes must be this
 * function's; the BAR's ioeventfds and the MSI routes follow. -1 with *why. Device lock held.
 */
int kap_virtio_pci_load(struct kap_pci_transport *t, const struct kap_vpci_state *s,
			const char **why);
