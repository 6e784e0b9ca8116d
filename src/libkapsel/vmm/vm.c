/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The machine: creates the KVM VM (in-kernel PIC/IOAPIC/LAPIC and PIT), guest RAM, the ACPI
 * tables, the devices (registered here, explicitly, so this file is the machine's inventory),
 * the vCPUs, and runs the event loop on the calling thread until the guest or the host ends
 * the VM. Teardown runs on every path, restoring the terminal and the signal mask.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <net/if.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "vmm/devices/devices.h"
#include "vmm/jail.h"
#include "vmm/soft/irq.h"
#include "vmm/soft/soft.h"
#include "vmm/virtio/balloon.h"
#include "vmm/virtio/disk.h"
#include "vmm/virtio/transport.h"
#include "vmm/vmm.h"
#include "vmm/x86/acpi.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/x86.h"

#define API __attribute__((visibility("default")))

void kap_vm_request_exit(struct kap_vm *vm, enum kap_vm_end end, int status, const char *fault)
{
	pthread_mutex_lock(&vm->end_lock);
	bool first = vm->end == KAP_VM_RUNNING;
	if (first) {
		vm->end = end;
		vm->status = status;
		if (fault)
			snprintf(vm->fault, sizeof(vm->fault), "%s", fault);
		atomic_store(&vm->stop, true);
	}
	pthread_mutex_unlock(&vm->end_lock);
	if (!first)
		return;
	for (unsigned int i = 0; i < vm->ncpus; i++)
		kap_vcpu_kick(&vm->vcpus[i]);
	kap_loop_wake(&vm->loop);
}

void kap_vm_set_irq(struct kap_vm *vm, unsigned int irq, int level)
{
	struct kvm_irq_level l = {.irq = irq, .level = (uint32_t)level};
	if (vm->soft) {
		/* Both chips, as KVM's default routing does (docs/vm.md, Accelerators). */
		kap_soft_pic_set_irq(vm->soft_pic, irq, level);
		kap_soft_ioapic_set_irq(vm->soft_ioapic, irq, level);
		if (level)
			kap_soft_wake(vm);
		return;
	}
	if (ioctl(vm->fd, KVM_IRQ_LINE, &l) < 0)
		kap_debug("KVM_IRQ_LINE %u: %s", irq, strerror(errno));
}

int kap_vm_ioeventfd(struct kap_vm *vm, uint64_t addr, unsigned int len, bool pio, int fd,
		     struct kapsel_error **err)
{
	struct kvm_ioeventfd io = {
	    .addr = addr,
	    .len = len,
	    .fd = fd,
	    .flags = pio ? KVM_IOEVENTFD_FLAG_PIO : 0,
	};
	/* Soft: every guest write reaches the bus, whose handler kicks the queue (irqfd.c). */
	if (vm->soft)
		return 0;
	if (ioctl(vm->fd, KVM_IOEVENTFD, &io) < 0)
		return kap_error(err, errno, "KVM_IOEVENTFD at 0x%" PRIx64, addr);
	return 0;
}

int kap_vm_ioeventfd_match(struct kap_vm *vm, uint64_t addr, unsigned int len, bool pio, int fd,
			   uint64_t datamatch, struct kapsel_error **err)
{
	if (vm->soft)
		return 0; /* as kap_vm_ioeventfd */
	struct kvm_ioeventfd io = {
	    .datamatch = datamatch,
	    .addr = addr,
	    .len = len,
	    .fd = fd,
	    .flags = KVM_IOEVENTFD_FLAG_DATAMATCH | (pio ? KVM_IOEVENTFD_FLAG_PIO : 0),
	};
	if (ioctl(vm->fd, KVM_IOEVENTFD, &io) < 0)
		return kap_error(err, errno, "KVM_IOEVENTFD at 0x%" PRIx64 " (value %" PRIu64 ")",
				 addr, datamatch);
	return 0;
}

int kap_vm_irqfd(struct kap_vm *vm, unsigned int gsi, int fd, struct kapsel_error **err)
{
	struct kvm_irqfd irq = {.fd = (uint32_t)fd, .gsi = gsi};
	if (vm->soft)
		return kap_soft_irqfd_add(vm->soft_irqfds, gsi, fd, -1, err);
	if (ioctl(vm->fd, KVM_IRQFD, &irq) < 0)
		return kap_error(err, errno, "KVM_IRQFD gsi %u", gsi);
	return 0;
}

int kap_vm_irqfd_level(struct kap_vm *vm, unsigned int gsi, int fd, int resample_fd,
		       struct kapsel_error **err)
{
	struct kvm_irqfd irq = {.fd = (uint32_t)fd,
				.gsi = gsi,
				.flags = KVM_IRQFD_FLAG_RESAMPLE,
				.resamplefd = (uint32_t)resample_fd};
	if (vm->soft)
		return kap_soft_irqfd_add(vm->soft_irqfds, gsi, fd, resample_fd, err);
	if (ioctl(vm->fd, KVM_IRQFD, &irq) < 0)
		return kap_error(err, errno, "KVM_IRQFD gsi %u (resample)", gsi);
	return 0;
}

void kap_vm_ioeventfd_del(struct kap_vm *vm, uint64_t addr, unsigned int len, int fd)
{
	if (vm->soft)
		return;
	struct kvm_ioeventfd io = {
	    .addr = addr, .len = len, .fd = fd, .flags = KVM_IOEVENTFD_FLAG_DEASSIGN};
	if (ioctl(vm->fd, KVM_IOEVENTFD, &io) < 0)
		kap_debug("KVM_IOEVENTFD deassign at 0x%" PRIx64 ": %s", addr, strerror(errno));
}

/* Room for KVM's 40 default entries and 4 MSI vectors for each of 8 virtio-pci functions. */
#define ROUTES_MAX 80

/*
 * KVM_SET_GSI_ROUTING replaces the whole table, so ours starts as KVM's default
 * (arch/x86/kvm/irq_comm.c default_routing): GSI 0-15 to both PICs and the IOAPIC pin of the
 * same number, GSI 16-23 to the IOAPIC. route_lock held.
 */
static int routes_init(struct kap_vm *vm, struct kapsel_error **err)
{
	if (vm->routes)
		return 0;
	vm->routes = calloc(1, sizeof(*vm->routes) + ROUTES_MAX * sizeof(vm->routes->entries[0]));
	if (!vm->routes)
		return kap_error(err, ENOMEM, "GSI routing table");
	struct kvm_irq_routing_entry *e = vm->routes->entries;
	unsigned int n = 0;
	for (unsigned int gsi = 0; gsi < 24; gsi++) {
		e[n++] = (struct kvm_irq_routing_entry){
		    .gsi = gsi,
		    .type = KVM_IRQ_ROUTING_IRQCHIP,
		    .u.irqchip = {.irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi}};
		if (gsi < 16)
			e[n++] = (struct kvm_irq_routing_entry){
			    .gsi = gsi,
			    .type = KVM_IRQ_ROUTING_IRQCHIP,
			    .u.irqchip = {.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER
							     : KVM_IRQCHIP_PIC_SLAVE,
					  .pin = gsi % 8}};
	}
	vm->routes->nr = n;
	return 0;
}

int kap_vm_alloc_gsi(struct kap_vm *vm, unsigned int *gsi, struct kapsel_error **err)
{
	pthread_mutex_lock(&vm->route_lock);
	int r = routes_init(vm, err);
	if (r >= 0 && vm->routes->nr + vm->next_gsi >= ROUTES_MAX)
		r = kap_error_plain(err, ENOSPC, "no GSI left for an MSI route");
	if (r >= 0)
		*gsi = KAP_PCI_MSI_GSI_BASE + vm->next_gsi++;
	pthread_mutex_unlock(&vm->route_lock);
	return r;
}

int kap_vm_msi_route(struct kap_vm *vm, unsigned int gsi, uint64_t addr, uint32_t data,
		     struct kapsel_error **err)
{
	if (vm->soft)
		return kap_soft_irqfd_msi_route(vm->soft_irqfds, gsi, addr, data, err);
	pthread_mutex_lock(&vm->route_lock);
	int r = routes_init(vm, err);
	if (r < 0)
		goto out;
	struct kvm_irq_routing_entry *e = NULL;
	for (unsigned int i = 0; i < vm->routes->nr; i++)
		if (vm->routes->entries[i].gsi == gsi)
			e = &vm->routes->entries[i];
	if (!e && vm->routes->nr == ROUTES_MAX) {
		r = kap_error_plain(err, ENOSPC, "GSI routing table full");
		goto out;
	}
	if (!e)
		e = &vm->routes->entries[vm->routes->nr++];
	*e = (struct kvm_irq_routing_entry){.gsi = gsi,
					    .type = KVM_IRQ_ROUTING_MSI,
					    .u.msi = {.address_lo = (uint32_t)addr,
						      .address_hi = (uint32_t)(addr >> 32),
						      .data = data}};
	if (ioctl(vm->fd, KVM_SET_GSI_ROUTING, vm->routes) < 0)
		r = kap_error(err, errno, "KVM_SET_GSI_ROUTING (gsi %u)", gsi);
out:
	pthread_mutex_unlock(&vm->route_lock);
	return r;
}

/* A read-only private mapping of a whole file (kernel, initrd). */
struct mapped_file {
	uint8_t *p;
	size_t len;
};

static int map_file(const char *what, const char *path, struct mapped_file *f,
		    struct kapsel_error **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "%s %s", what, path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kap_error(err, errno, "stat %s %s", what, path);
	if (!S_ISREG(st.st_mode))
		return kap_error_plain(err, EINVAL, "%s %s: not a regular file", what, path);
	if (st.st_size == 0)
		return kap_error_plain(err, ENOEXEC, "%s %s: empty file", what, path);
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return kap_error(err, errno, "map %s %s", what, path);
	f->p = p;
	f->len = (size_t)st.st_size;
	return 0;
}

static void unmap_file(struct mapped_file *f)
{
	if (f->p)
		munmap(f->p, f->len);
	f->p = NULL;
}

/*
 * Everything the config names, opened and checked before /dev/kvm is: bad input gets the same
 * one-line error on a host with KVM and on one without (issue 10), and nothing of the VM
 * exists yet when it does. Disks are opened here (qcow2 headers, tables and backing chains
 * checked) and handed to their virtio-blk devices; the kernel stays mapped until it is loaded.
 */
struct kap_vm_inputs {
	struct mapped_file kernel, initrd;
	struct mapped_file firmware; /* --firmware: a private copy, the ROM memslot's memory */
	struct kap_boot_image img;
	struct kap_disk *disks[KAPSEL_VM_MAX_DISKS];
};

static void inputs_free(struct kap_vm_inputs *in)
{
	unmap_file(&in->kernel);
	unmap_file(&in->initrd);
	unmap_file(&in->firmware);
	for (unsigned int i = 0; i < KAPSEL_VM_MAX_DISKS; i++) {
		kap_disk_close(in->disks[i]);
		in->disks[i] = NULL;
	}
}

/* Device counts and ids across kinds (each parser checks its own kind). */
static int check_devices(const struct kapsel_vm_config *c, struct kapsel_error **err)
{
	unsigned int n = c->ndisks + (c->rng ? 1 : 0) + c->nnets + (c->virtio_console ? 1 : 0) +
			 (c->vsock_path ? 1 : 0) + c->nfs + (c->balloon.enabled ? 1 : 0);
	if (n > KAP_VIRTIO_MMIO_MAX)
		return kap_error_plain(err, E2BIG, "at most %d virtio devices",
				       KAP_VIRTIO_MMIO_MAX);
	uint64_t mem = c->mem_size ? c->mem_size : KAPSEL_VM_DEFAULT_MEM;
	if (c->balloon.enabled && c->balloon.amount_mib > mem >> 20)
		return kap_error_plain(err, EINVAL,
				       "--balloon amount_mib=%" PRIu64
				       ": more than guest RAM (%" PRIu64 " MiB)",
				       c->balloon.amount_mib, mem >> 20);
	for (unsigned int i = 0; c->rng && i < c->ndisks; i++)
		if (!strcmp(c->disks[i].id, "rng0"))
			return kap_error_plain(err, EEXIST, "--disk %s: id rng0 is the rng's",
					       c->disks[i].path);
	for (unsigned int i = 0; i < c->nnets; i++)
		for (unsigned int k = 0; k < c->ndisks; k++)
			if (!strcmp(c->nets[i].id, c->disks[k].id))
				return kap_error_plain(err, EEXIST, "--net: id %s already used",
						       c->nets[i].id);
	/* The interfaces must exist (the messages are tap.c's, which checks again). */
	for (unsigned int i = 0; i < c->nnets; i++) {
		const char *tap = c->nets[i].tap, *br = c->nets[i].bridge;
		if (if_nametoindex(tap ? tap : br) == 0)
			return kap_error_plain(err, ENODEV, "%s %s: no such network interface",
					       tap ? "tap" : "bridge", tap ? tap : br);
	}
	return 0;
}

static int check_inputs(const struct kapsel_vm_config *c, struct kap_vm_inputs *in,
			struct kapsel_error **err)
{
	/* A restore or a migration loads no kernel: the guest's RAM already holds it; firmware
	 * loads its own. */
	bool boot = !c->restore_state && !c->incoming && !c->firmware;
	unsigned int ncpus = c->cpus ? c->cpus : 1;
	if (ncpus > KAP_MAX_VCPUS)
		return kap_error_plain(err, EINVAL, "--cpus %u: kapsel supports at most %d vCPUs",
				       ncpus, KAP_MAX_VCPUS);
	int r;
	if ((r = kap_x86_cpuid_check_features(c->cpu_model, c->cpu_features, err)) < 0 ||
	    (r = check_devices(c, err)) < 0 ||
	    (boot && (r = map_file("kernel", c->kernel, &in->kernel, err)) < 0))
		return r;
	if (boot && (r = kap_boot_parse(in->kernel.p, in->kernel.len, &in->img, err)) < 0)
		return kap_error_wrap(err, "kernel %s", c->kernel);
	if (boot && c->initrd && (r = map_file("initrd", c->initrd, &in->initrd, err)) < 0)
		return r;
	uint64_t mem = c->mem_size ? c->mem_size : KAPSEL_VM_DEFAULT_MEM;
	if (c->firmware && mem < KAP_FIRMWARE_MIN_RAM)
		return kap_error_plain(err, EINVAL,
				       "--firmware: --mem %llu MiB is too small; firmware needs at "
				       "least %llu MiB",
				       (unsigned long long)(mem >> 20),
				       (unsigned long long)(KAP_FIRMWARE_MIN_RAM >> 20));
	if (c->firmware &&
	    (r = kap_firmware_read(c->firmware, &in->firmware.p, &in->firmware.len, err)) < 0)
		return r;
	for (unsigned int i = 0; i < c->ndisks; i++)
		if ((r = kap_disk_open_config(&in->disks[i], &c->disks[i], err)) < 0)
			return r;
	return 0;
}

/* The ACPI description of the devices below (the DSDT's \_SB). */
static const struct kap_acpi_device acpi_devices[] = {
    {"COM1", "PNP0501", 1, false, KAP_SERIAL_PORT, 8, 0, 0, KAP_SERIAL_IRQ},
    {"RTC_", "PNP0B00", 0, false, KAP_RTC_PORT, 2, 0, 0, 8},
    {"PS2K", "PNP0303", 0, false, KAP_I8042_DATA, 1, KAP_I8042_COMMAND, 1, 1},
    {"PEVT", "QEMU0001", 0, false, KAP_PVPANIC_PORT, 1, 0, 0, -1},
    /* fw_cfg as QEMU describes it: Linux's qemu_fw_cfg driver binds to QEMU0002 and then
     * offers the files under /sys/firmware/qemu_fw_cfg (selector, data and DMA: 12 ports). */
    {"FWCF", "QEMU0002", 0, false, KAP_FW_CFG_PORT, 12, 0, 0, -1},
};

static int build_acpi(struct kap_vm *vm, struct kapsel_error **err)
{
	struct kap_acpi_device devs[KAP_ARRAY_SIZE(acpi_devices) + KAP_VIRTIO_MMIO_MAX];
	size_t ndevs = KAP_ARRAY_SIZE(acpi_devices);
	memcpy(devs, acpi_devices, sizeof(acpi_devices));
	/* virtio 1.2 §4.2.1: virtio-mmio devices are LNRO0005 with a memory and an IRQ. */
	for (unsigned int i = 0; !vm->pci && i < vm->nvirtio; i++) {
		struct kap_acpi_device *d = &devs[ndevs++];
		*d = (struct kap_acpi_device){.hid = "LNRO0005",
					      .uid = i,
					      .mmio = true,
					      .base = vm->virtio[i].mmio.base,
					      .len = KAP_VIRTIO_MMIO_SIZE,
					      .irq = (int)vm->virtio[i].mmio.gsi};
		/* ACPI names are four characters: at most 100 virtio-mmio devices exist. */
		snprintf(d->name, sizeof(d->name), "VR%02u", i % 100u);
	}
	struct kap_acpi_config cfg = {
	    .ncpus = vm->ncpus,
	    .ioapic_addr = KAP_IOAPIC_ADDR,
	    .lapic_addr = KAP_LAPIC_ADDR,
	    .sleep_control_port = KAP_ACPI_SLEEP_CONTROL_PORT,
	    .sleep_status_port = KAP_ACPI_SLEEP_STATUS_PORT,
	    .full = vm->cfg->acpi_full,
	    .pm1a_evt_port = KAP_ACPI_PM1A_EVT_PORT,
	    .pm1a_cnt_port = KAP_ACPI_PM1A_CNT_PORT,
	    .pm_tmr_port = KAP_ACPI_PM_TMR_PORT,
	    .sci_irq = KAP_ACPI_SCI_IRQ,
	    .s5_slp_typ = KAP_ACPI_S5_SLP_TYP,
	    /* Resume needs the FACS where kapsel put it: not under firmware, which moves it. */
	    .s3_slp_typ = vm->cfg->acpi_full && !vm->cfg->firmware ? KAP_ACPI_S3_SLP_TYP : 0,
	    .reset_port = KAP_I8042_COMMAND,
	    .reset_value = 0xfe,
	    .rtc_century_reg = 0x32,
	    .devices = devs,
	    .ndevices = ndevs,
	    /* virtio-pci: PCI0 with its windows and _PRT (docs/vm.md, PCI). */
	    .pci = vm->pci != NULL,
	    .pci_mmio_base = KAP_PCI_MMIO_BASE,
	    .pci_mmio_len = KAP_PCI_MMIO_SIZE,
	    .pci_slots = vm->nvirtio + 1,
	    .pci_intx_gsi = KAP_PCI_INTX_GSI,
	    .power_button_gsi = KAP_ACPI_GED_GSI,
	};
	/*
	 * Firmware boot: built at address 0 into a buffer that fw_cfg offers the firmware
	 * (etc/acpi/tables, with a table-loader that relocates it: devices/fw-cfg.c).
	 */
	if (vm->cfg->firmware) {
		vm->fw_acpi = calloc(1, KAP_ACPI_SIZE);
		if (!vm->fw_acpi)
			return kap_error(err, ENOMEM, "ACPI tables");
		return kap_acpi_build(vm->fw_acpi, KAP_ACPI_SIZE, 0, &cfg, &vm->fw_acpi_len, err);
	}
	uint8_t *p = kap_mem_ptr(&vm->mem, KAP_ACPI_BASE, KAP_ACPI_SIZE);
	size_t used;
	if (!p)
		return kap_error_plain(err, E2BIG, "no room for the ACPI tables");
	return kap_acpi_build(p, KAP_ACPI_SIZE, KAP_ACPI_BASE, &cfg, &used, err);
}

static int create_devices(struct kap_vm *vm, struct kapsel_error **err)
{
	vm->serial = kap_serial_new(vm, KAP_SERIAL_IRQ);
	vm->i8042 = kap_i8042_new(vm);
	vm->rtc = kap_rtc_new(vm);
	vm->hypercall = kap_hypercall_new(vm);
	vm->acpi_pm = kap_acpi_pm_new(vm, vm->cfg->acpi_full);
	if (!vm->cfg->no_debug_exit)
		vm->debug_exit = kap_debug_exit_new(vm);
	if (!vm->serial || !vm->i8042 || !vm->rtc || !vm->hypercall || !vm->acpi_pm ||
	    (!vm->cfg->no_debug_exit && !vm->debug_exit))
		return kap_error(err, ENOMEM, "devices");
	int r;
	if ((r = kap_bus_register(&vm->pio, KAP_SERIAL_PORT, 8, &kap_serial_ops, vm->serial, err)) <
		0 ||
	    (r = kap_bus_register(&vm->pio, KAP_I8042_DATA, 5, &kap_i8042_ops, vm->i8042, err)) <
		0 ||
	    (r = kap_bus_register(&vm->pio, KAP_RTC_PORT, 2, &kap_rtc_ops, vm->rtc, err)) < 0 ||
	    (r = kap_bus_register(&vm->pio, KAP_HYPERCALL_PORT, 4, &kap_hypercall_ops,
				  vm->hypercall, err)) < 0 ||
	    (r = kap_bus_register(
		 &vm->pio, vm->cfg->acpi_full ? KAP_ACPI_PM_BASE : KAP_ACPI_SLEEP_CONTROL_PORT,
		 vm->cfg->acpi_full ? KAP_ACPI_PM_LEN : 2, &kap_acpi_pm_ops, vm->acpi_pm, err)) <
		0 ||
	    (r = kap_bus_register(&vm->pio, KAP_POST_PORT, 1, &kap_post_ops, NULL, err)) < 0 ||
	    (r = kap_bus_register(&vm->pio, KAP_PVPANIC_PORT, 1, &kap_pvpanic_ops, vm, err)) < 0)
		return r;
	if (vm->debug_exit && (r = kap_bus_register(&vm->pio, KAP_DEBUG_EXIT_PORT, 4,
						    &kap_debug_exit_ops, vm->debug_exit, err)) < 0)
		return r;
	if (vm->cfg->firmware &&
	    ((r = kap_debugcon_new(vm->cfg->firmware_log, &vm->debugcon, err)) < 0 ||
	     (r = kap_bus_register(&vm->pio, KAP_DEBUGCON_PORT, 1, &kap_debugcon_ops, vm->debugcon,
				   err)) < 0))
		return r;
	return kap_fw_cfg_attach(vm, &vm->fw_cfg, err);
}

/*
 * The k-th of the I/O devices that follow disks and rng: network cards, console, vsock,
 * virtio-fs shares, balloon.
 */
static int create_virtio_io(struct kap_vm *vm, unsigned int k, struct kap_virtio_dev *d,
			    struct kapsel_error **err)
{
	const struct kapsel_vm_config *c = vm->cfg;
	if (k < c->nnets)
		return kap_virtio_net_new(d, &c->nets[k], &vm->mem, err);
	k -= c->nnets;
	if (c->virtio_console && k-- == 0)
		return kap_virtio_console_new(d, &vm->console, &vm->mem, err);
	if (c->vsock_path && k-- == 0)
		return kap_virtio_vsock_new(d, c->vsock_cid, c->vsock_path, &vm->mem, err);
	if (k < c->nfs)
		return kap_virtio_fs_new(d, &c->fs[k], &vm->mem, err);
	return kap_virtio_balloon_new(d, &c->balloon, &vm->mem, c->mem_hugepages, err);
}

/* Host-side fds of the virtio devices (taps, sockets, hvc0's input) join the event loop. */
static int attach_virtio_loop(struct kap_vm *vm, struct kapsel_error **err)
{
	for (unsigned int i = 0; i < vm->nvirtio; i++) {
		struct kap_virtio_dev *d = &vm->virtio[i].dev;
		int r = d->ops->attach_loop ? d->ops->attach_loop(d, &vm->loop, err) : 0;
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * Device i's transport (--transport): virtio-mmio window i, or virtio-pci function in slot
 * i + 1 behind the host bridge, BAR 0 assigned at boot as firmware would (docs/vm.md).
 */
static int attach_transport(struct kap_vm *vm, struct kap_virtio_slot *s, unsigned int i,
			    struct kapsel_error **err)
{
	if (vm->cfg->transport == KAPSEL_VM_TRANSPORT_MMIO)
		return kap_virtio_mmio_attach(vm, &s->mmio, err);
	int r;
	if (!vm->pci) {
		vm->pci = malloc(sizeof(*vm->pci));
		if (!vm->pci)
			return kap_error(err, ENOMEM, "PCI host bridge");
		kap_pci_host_init(vm->pci);
		if (vm->cfg->firmware)
			kap_pci_host_i440fx(vm->pci);
		if ((r = kap_pci_host_attach(vm->pci, vm, err)) < 0)
			return r;
	}
	uint64_t bar = KAP_PCI_MMIO_BASE + (uint64_t)i * KAP_VPCI_BAR_SIZE;
	if ((r = kap_virtio_pci_init(&s->pci, &s->dev, i + 1, bar, err)) < 0)
		return r;
	return kap_virtio_pci_attach(vm, vm->pci, &s->pci, err);
}

/*
 * The virtio devices of the config, in this order: disks, rng, network cards, console, vsock,
 * virtio-fs shares, balloon.
 * Opens every backing file, tap and socket.
 */
static int create_virtio(struct kap_vm *vm, struct kapsel_error **err)
{
	const struct kapsel_vm_config *c = vm->cfg;
	unsigned int n = c->ndisks + (c->rng ? 1 : 0) + c->nnets + (c->virtio_console ? 1 : 0) +
			 (c->vsock_path ? 1 : 0) + c->nfs + (c->balloon.enabled ? 1 : 0);
	if (n == 0)
		return 0;
	vm->virtio = calloc(n, sizeof(*vm->virtio));
	if (!vm->virtio)
		return kap_error(err, ENOMEM, "virtio devices");
	for (unsigned int i = 0; i < n; i++) {
		struct kap_virtio_slot *s = &vm->virtio[i];
		int r;
		vm->nvirtio = i + 1;
		s->initialised = true;
		if (i < c->ndisks) {
			/* The disk opened by check_inputs: the device takes it. */
			struct kap_disk *disk = vm->in->disks[i];
			vm->in->disks[i] = NULL;
			r = kap_virtio_blk_new_disk(&s->dev, &c->disks[i], disk, &vm->mem, err);
		} else if (c->rng && i == c->ndisks)
			r = kap_virtio_rng_new(&s->dev, &vm->mem, err);
		else
			r = create_virtio_io(vm, i - c->ndisks - (c->rng ? 1 : 0), &s->dev, err);
		if (r < 0)
			return r;
		s->mmio = (struct kap_mmio_transport){
		    .dev = &s->dev,
		    .base = KAP_VIRTIO_MMIO_BASE + (uint64_t)i * KAP_VIRTIO_MMIO_SIZE,
		    .gsi = KAP_VIRTIO_MMIO_GSI + i,
		};
		/* A jailed VMM starts the device threads once the jail is closed (vm_setup). */
		if ((r = attach_transport(vm, s, i, err)) < 0 ||
		    (!vm->jail && (r = kap_virtio_start(&s->dev, err)) < 0))
			return r;
	}
	return 0;
}

/* The command line plus virtio_mmio.device=SIZE@BASE:GSI for each device, when asked. */
static char *build_cmdline(const struct kap_vm *vm)
{
	const char *base = vm->cfg->cmdline ? vm->cfg->cmdline : "";
	size_t len = strlen(base) + 1 + (size_t)vm->nvirtio * 64;
	char *s = malloc(len);
	if (!s)
		return NULL;
	size_t n = (size_t)snprintf(s, len, "%s", base);
	for (unsigned int i = 0; vm->cfg->virtio_mmio_cmdline && !vm->pci && i < vm->nvirtio; i++)
		n += (size_t)snprintf(s + n, len - n, "%svirtio_mmio.device=%u@0x%" PRIx64 ":%u",
				      n ? " " : "", KAP_VIRTIO_MMIO_SIZE, vm->virtio[i].mmio.base,
				      vm->virtio[i].mmio.gsi);
	return s;
}

static void free_devices(struct kap_vm *vm)
{
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		if (vm->virtio[i].initialised)
			kap_virtio_destroy(&vm->virtio[i].dev);
	for (unsigned int i = 0; vm->pci && i < vm->nvirtio; i++)
		kap_virtio_pci_destroy(&vm->virtio[i].pci);
	if (vm->pci)
		kap_pci_host_destroy(vm->pci);
	free(vm->pci);
	vm->pci = NULL;
	free(vm->routes);
	vm->routes = NULL;
	free(vm->virtio);
	vm->virtio = NULL;
	vm->nvirtio = 0;
	kap_serial_free(vm->serial);
	free(vm->i8042);
	free(vm->rtc);
	free(vm->hypercall);
	free(vm->acpi_pm);
	free(vm->debug_exit);
	kap_fw_cfg_free(vm->fw_cfg);
	kap_debugcon_free(vm->debugcon);
	free(vm->fw_acpi);
	vm->fw_acpi = NULL;
}

static void on_signal(void *opaque, uint32_t events)
{
	struct kap_vm *vm = opaque;
	struct signalfd_siginfo si;
	if (read(vm->signal_fd, &si, sizeof(si)) != sizeof(si))
		return;
	kap_vm_request_exit(vm, KAP_VM_SIGNAL, 128 + (int)si.ssi_signo, NULL);
}

/* How the config wants guest RAM backed (memory.c). */
static unsigned int mem_flags(const struct kapsel_vm_config *c)
{
	return (c->mem_shared ? KAP_MEM_SHARED : 0u) | (c->mem_hugepages ? KAP_MEM_HUGETLB : 0u) |
	       (c->mem_merge ? KAP_MEM_MERGEABLE : 0u);
}

static int create_vm(struct kap_vm *vm, struct kapsel_error **err)
{
	vm->fd = ioctl(vm->kvm.fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		return kap_error(err, errno, "KVM_CREATE_VM");
	/* VMX needs these below 4 GiB, outside RAM (api.rst KVM_SET_TSS_ADDR). */
	if (ioctl(vm->fd, KVM_SET_TSS_ADDR, (unsigned long)KAP_TSS_ADDR) < 0)
		return kap_error(err, errno, "KVM_SET_TSS_ADDR");
	uint64_t idmap = KAP_IDENTITY_MAP_ADDR;
	if (ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return kap_error(err, errno, "KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return kap_error(err, errno, "KVM_CREATE_IRQCHIP");
	if (vm->cfg->no_pit)
		return 0;
	/* Port 0x61 (speaker/PIT gate) is emulated in the kernel with the dummy speaker. */
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0)
		return kap_error(err, errno, "KVM_CREATE_PIT2");
	return 0;
}

/*
 * --accel (docs/vm.md, Accelerators): KVM, or the soft CPU (vmm/soft/). auto takes KVM when
 * /dev/kvm opens and KVM_CREATE_VM works, else soft. For KVM this creates the VM (create_vm).
 */
static int open_accel(struct kap_vm *vm, struct kapsel_error **err)
{
	const struct kapsel_vm_config *c = vm->cfg;
	struct kapsel_error *kerr = NULL;
	if (c->accel != KAPSEL_VM_ACCEL_SOFT) {
		int r = kap_kvm_open(&vm->kvm, c->accel == KAPSEL_VM_ACCEL_KVM ? err : &kerr);
		if (r >= 0)
			r = create_vm(vm, c->accel == KAPSEL_VM_ACCEL_KVM ? err : &kerr);
		if (r >= 0 || c->accel == KAPSEL_VM_ACCEL_KVM) {
			if (r >= 0)
				kap_debug("vm: accelerator kvm");
			return r;
		}
		if (vm->fd >= 0)
			close(vm->fd);
		vm->fd = -EBADF;
		kap_kvm_close(&vm->kvm);
	}
	vm->soft = true;
	const char *no = kap_soft_unsupported(c);
	int r = 0;
	if (no && kerr)
		r = kap_error_plain(err, ENOTSUP,
				    "KVM is not usable (%s) and the soft CPU cannot run %s yet",
				    kerr->msg, no);
	else if (no)
		r = kap_error_plain(err, ENOTSUP, "--accel soft: cannot run %s", no);
	else if (kerr && (kerr->code == EACCES || kerr->code == EPERM))
		/* A /dev/kvm this user may not open: likely not what they meant, so say it. */
		kap_warn("vm: %s; running on the soft CPU instead (--accel kvm to insist)",
			 kerr->msg);
	else
		kap_debug("vm: accelerator soft%s%s%s", kerr ? " (KVM is not usable: " : "",
			  kerr ? kerr->msg : "", kerr ? ")" : "");
	kapsel_error_free(kerr);
	return r;
}

/*
 * What the devices' interrupt calls reach on the soft path before they attach: the I/O APIC,
 * the userspace irqfds, and the record of the VMM's own writes to RAM that the soft CPU's
 * block cache drops translations by (kap_mem_track_written).
 */
static int setup_soft_irqchip(struct kap_vm *vm, struct kapsel_error **err)
{
	int r = kap_soft_ioapic_create(vm, &vm->soft_ioapic, err);
	if (r < 0 || (r = kap_soft_irqfds_create(vm, &vm->soft_irqfds, err)) < 0)
		return r;
	return kap_mem_track_written(&vm->mem, vm->ncpus, err);
}

/*
 * The soft CPU's vCPUs, the BSP starting where the boot protocol says (kap_x86_boot_state),
 * and the interrupt sources KVM would have in the kernel: the 8259 pair and (unless --no-pit)
 * the 8254.
 */
static int setup_soft_vcpus(struct kap_vm *vm, const struct kap_boot_entry *entry,
			    struct kapsel_error **err)
{
	int r = kap_soft_pic_create(&vm->pio, &vm->soft_pic, err);
	if (r < 0 || (!vm->cfg->no_pit &&
		      (r = kap_soft_pit_create(&vm->pio, vm->soft_pic, &vm->soft_pit, err)) < 0))
		return r;
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		r = kap_soft_vcpu_create(vm, i, entry, err);
		if (r < 0)
			return r;
	}
	/* The irqfds deliver to the local APICs, which exist now. In a jail the thread starts
	 * once the jail is closed (vm_setup), so that it runs under its seccomp filter. */
	return vm->jail ? 0 : kap_soft_irqfds_start(vm->soft_irqfds, err);
}

static int boot(struct kap_vm *vm, struct kap_boot_entry *entry, struct kapsel_error **err)
{
	const struct kapsel_vm_config *c = vm->cfg;
	struct kap_vm_inputs *in = vm->in;
	int r;
	/*
	 * Firmware boots from its reset vector, and its image fills 0xE0000-0xFFFFF, where the
	 * ACPI tables would go: the firmware gets them through fw_cfg and places them itself.
	 */
	if (c->firmware) {
		*entry = (struct kap_boot_entry){0};
		if ((r = build_acpi(vm, err)) < 0)
			return r;
		kap_debug("vm: firmware %s (%zu KiB), %u vCPU(s), %llu MiB", c->firmware,
			  in->firmware.len >> 10, vm->ncpus,
			  (unsigned long long)(vm->mem.size >> 20));
		return kap_firmware_load(vm, in->firmware.p, in->firmware.len, err);
	}
	r = build_acpi(vm, err);
	if (r < 0)
		return r;
	cleanup_free char *cmdline = build_cmdline(vm);
	if (!cmdline)
		return kap_error(err, ENOMEM, "kernel command line");
	if (vm->soft && in->img.kind == KAP_BOOT_BZIMAGE) {
		/* The soft CPU boots the vmlinux inside through PVH (x86/boot-unpack.c). */
		struct mapped_file v;
		struct kap_boot_image img;
		r = kap_boot_unpack_bzimage(in->kernel.p, in->kernel.len, &v.p, &v.len, &img, err);
		if (r < 0)
			return kap_error_wrap(err, "kernel %s", c->kernel);
		if (r > 0) {
			kap_debug("vm: bzImage %s unpacked on the host: %zu bytes of vmlinux",
				  c->kernel, v.len);
			unmap_file(&in->kernel);
			in->kernel = v;
			in->img = img;
		}
	}
	r = kap_boot_load(vm, &in->img, in->kernel.p, in->kernel.len, in->initrd.p, in->initrd.len,
			  cmdline, entry, err);
	if (r < 0)
		return kap_error_wrap(err, "%s kernel %s", kap_boot_kind_name(in->img.kind),
				      c->kernel);
	kap_debug("vm: %s kernel %s, entry 0x%" PRIx64 ", %u vCPU(s), %llu MiB",
		  kap_boot_kind_name(in->img.kind), c->kernel, entry->rip, vm->ncpus,
		  (unsigned long long)(vm->mem.size >> 20));
	/* Loaded into guest RAM: the files are no longer needed. */
	unmap_file(&in->kernel);
	unmap_file(&in->initrd);
	return 0;
}

static int setup_vcpus(struct kap_vm *vm, const struct kap_boot_entry *entry,
		       struct kapsel_error **err)
{
	/* The irqchip is always in the kernel (create_vm), so x2APIC always works. */
	unsigned int caps = KAP_CPUID_CAP_X2APIC;
	if (ioctl(vm->kvm.fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0)
		caps |= KAP_CPUID_CAP_TSC_DEADLINE;
	static const struct {
		int kvm;
		unsigned int bit;
	} hv_caps[] = {
	    {KVM_CAP_HYPERV, KAP_CPUID_CAP_HYPERV},
	    {KVM_CAP_HYPERV_VAPIC, KAP_CPUID_CAP_HV_VAPIC},
	    {KVM_CAP_HYPERV_TIME, KAP_CPUID_CAP_HV_TIME},
	    {KVM_CAP_HYPERV_VP_INDEX, KAP_CPUID_CAP_HV_VP_INDEX},
	    {KVM_CAP_HYPERV_SYNIC2, KAP_CPUID_CAP_HV_SYNIC2},
	};
	for (size_t i = 0; i < sizeof(hv_caps) / sizeof(hv_caps[0]); i++)
		if (ioctl(vm->fd, KVM_CHECK_EXTENSION, hv_caps[i].kvm) > 0)
			caps |= hv_caps[i].bit;
	unsigned int hv;
	int r = kap_x86_hv_flags(vm->cfg->cpu_features, &hv, err);
	if (r < 0)
		return r;
	r = kap_x86_cpuid_build(vm->kvm.cpuid, vm->cfg->cpu_model, vm->cfg->cpu_features, vm->ncpus,
				caps, &vm->cpuid, err);
	if (r < 0)
		return r;
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		r = kap_vcpu_create(vm, i, err);
		if (r < 0)
			return r;
		r = kap_x86_cpuid_set(vm->vcpus[i].fd, vm->cpuid, i, vm->ncpus, err);
		if (r < 0)
			return r;
		/*
		 * SynIC is per vCPU (api.rst, KVM_CAP_HYPERV_SYNIC2: the message and event pages
		 * are not zeroed on enable, as Hyper-V does); its MSRs fault until it is on.
		 */
		struct kvm_enable_cap synic = {.cap = KVM_CAP_HYPERV_SYNIC2};
		if ((hv & KAP_HV_SYNIC) && ioctl(vm->vcpus[i].fd, KVM_ENABLE_CAP, &synic) < 0)
			return kap_error(err, errno,
					 "KVM_ENABLE_CAP KVM_CAP_HYPERV_SYNIC2 (vCPU %u)", i);
		/*
		 * A restore or an incoming migration sets every register from the state it loads
		 * (entry NULL). Firmware starts the BSP in KVM's reset state as well (real mode at
		 * 0xFFFFFFF0).
		 */
		r = !entry ? 0
			   : kap_x86_vcpu_init(vm->vcpus[i].fd, entry, i == 0 && !vm->cfg->firmware,
					       err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Everything up to the first KVM_RUN. */
static int vm_setup(struct kap_vm *vm, int sfd, struct kapsel_error **err)
{
	const struct kapsel_vm_config *c = vm->cfg;
	/* Zero for a restore or a migration: the soft vCPUs start from it, then load their state.
	 */
	struct kap_boot_entry entry = {0};
	unsigned int ncpus = c->cpus ? c->cpus : 1;
	/* The input first, KVM after: see check_inputs. */
	int r = check_inputs(c, vm->in, err);
	if (r < 0 || (r = open_accel(vm, err)) < 0)
		return r;
	if (!vm->soft && ncpus > (unsigned int)vm->kvm.max_vcpus)
		return kap_error_plain(err, EINVAL,
				       "--cpus %u: this host's KVM supports at most %d vCPUs",
				       ncpus, vm->kvm.max_vcpus);
	/* vm->ncpus bounds every loop over vm->vcpus: check_inputs checked it fits the array. */
	vm->ncpus = ncpus;
	/* A restore or an incoming migration loads the machine's state instead of booting. */
	bool loads = vm->snap || c->incoming;
	uint64_t mem = c->mem_size ? c->mem_size : KAPSEL_VM_DEFAULT_MEM;
	if ((r = vm->snap ? kap_mem_init_file(&vm->mem, mem, c->restore_mem, err)
			  : kap_mem_init(&vm->mem, mem, mem_flags(c), err)) < 0 ||
	    (!vm->soft && (r = kap_mem_register(&vm->mem, vm->fd, err)) < 0) ||
	    (vm->soft && (r = setup_soft_irqchip(vm, err)) < 0) ||
	    (r = create_virtio(vm, err)) < 0 || (!loads && (r = boot(vm, &entry, err)) < 0) ||
	    (r = vm->soft ? setup_soft_vcpus(vm, &entry, err)
			  : setup_vcpus(vm, loads ? NULL : &entry, err)) < 0 ||
	    (r = create_devices(vm, err)) < 0 ||
	    (vm->snap && (r = kap_snap_load(vm, vm->snap, err)) < 0) ||
	    (c->incoming && (r = kap_migrate_incoming(vm, sfd, err)) < 0) ||
	    (r = kap_loop_init(&vm->loop, err)) < 0 ||
	    (r = kap_loop_add(&vm->loop, sfd, EPOLLIN, on_signal, vm, err)) < 0 ||
	    (r = kap_vcpu_signals_init(err)) < 0 ||
	    (r = kap_console_open(&vm->console, c, err)) < 0)
		return r;
	vm->console.vm = vm;
	vm->console.input = kap_serial_input;
	vm->console.input_dev = vm->serial;
	/* After the UART's input: a virtio-console takes the console input over. */
	if ((r = attach_virtio_loop(vm, err)) < 0 ||
	    (r = kap_console_attach(&vm->console, &vm->loop, err)) < 0)
		return r;
	/* Last: the API answers only for a machine that is complete. */
	vm->started_ms = kap_vmm_now_ms();
	vm->started_wall_s = (int64_t)time(NULL);
	if ((r = kap_api_start(vm, err)) < 0 || !vm->jail)
		return r;
	/* Every host resource is open and no thread runs yet: close the jail, then start them. */
	if ((r = kap_jail_enter(vm->jail, vm, err)) < 0 ||
	    (vm->soft && (r = kap_soft_irqfds_start(vm->soft_irqfds, err)) < 0))
		return r;
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		if ((r = kap_virtio_start(&vm->virtio[i].dev, err)) < 0)
			return r;
	return kap_api_run(vm, err);
}

static void vm_teardown(struct kap_vm *vm)
{
	atomic_store(&vm->stop, true);
	/* The API first: it may be waiting for vCPUs to park, which it stops doing on stop. */
	kap_api_stop(vm);
	/* Then a migration, which may be waiting for them too (or for its destination). */
	kap_migrate_destroy(vm);
	kap_migrate_unlisten(vm);
	pthread_mutex_lock(&vm->pause_lock);
	pthread_cond_broadcast(&vm->pause_cond); /* parked vCPUs see stop */
	pthread_mutex_unlock(&vm->pause_lock);
	for (unsigned int i = 0; i < vm->ncpus; i++)
		kap_vcpu_kick(&vm->vcpus[i]);
	for (unsigned int i = 0; i < vm->ncpus; i++)
		kap_vcpu_join(&vm->vcpus[i]);
	/* Before the local APICs it delivers to and the devices' eventfds it waits on go. */
	kap_soft_irqfds_free(vm->soft_irqfds);
	vm->soft_irqfds = NULL;
	kap_console_close(&vm->console);
	for (unsigned int i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].vm)
			kap_vcpu_destroy(&vm->vcpus[i]);
	kap_loop_destroy(&vm->loop);
	free_devices(vm);
	kap_soft_pit_free(vm->soft_pit);
	kap_soft_pic_free(vm->soft_pic);
	kap_soft_ioapic_free(vm->soft_ioapic);
	free(vm->cpuid);
	kap_bus_destroy(&vm->pio);
	kap_bus_destroy(&vm->mmio);
	if (vm->fd >= 0)
		close(vm->fd);
	kap_mem_destroy(&vm->mem);
	kap_kvm_close(&vm->kvm);
	pthread_mutex_destroy(&vm->end_lock);
	pthread_mutex_destroy(&vm->route_lock);
	kap_vm_pause_destroy(vm);
}

static int vm_result(struct kap_vm *vm, struct kapsel_error **err)
{
	switch (vm->end) {
	case KAP_VM_POWEROFF:
	case KAP_VM_DEBUG_EXIT:
		return vm->status;
	case KAP_VM_RESET:
		kap_debug("vm: guest reset");
		return 0;
	case KAP_VM_QUIT:
		kap_info("vm: quit from the console (Ctrl-A x)");
		return 0;
	case KAP_VM_SIGNAL:
		kap_info("vm: stopped by signal %d", vm->status - 128);
		return vm->status;
	case KAP_VM_FAULT:
		return kap_error_plain(err, EIO, "%s", vm->fault);
	case KAP_VM_PANIC:
		return kap_error_plain(
		    err, EIO, "vm: the guest kernel panicked (pvpanic); its console says why");
	case KAP_VM_MIGRATED:
		return 0;
	case KAP_VM_RUNNING:
		break;
	}
	return kap_error_plain(err, EIO, "vm: event loop ended while the guest was running");
}

API int kapsel_vm_run(const struct kapsel_vm_config *c, struct kapsel_error **err)
{
	if (!c->kernel && !c->restore_state && !c->incoming && !c->firmware)
		return kap_error_plain(err, EINVAL, "--kernel is required (or --firmware)");
	if (c->incoming && c->restore_state)
		return kap_error_plain(err, EINVAL,
				       "vm run: --incoming and a restore exclude each other");
	/* As snapshots (snapshot.c): virtio-fs state (open host files) does not travel. */
	if (c->incoming && c->nfs)
		return kap_error_plain(err, EOPNOTSUPP,
				       "vm run --incoming: --fs %s: virtio-fs cannot be migrated",
				       c->fs[0].tag);
	if (c->firmware && (c->kernel || c->initrd || c->cmdline))
		return kap_error_plain(err, EINVAL,
				       "--firmware %s: cannot be combined with --%s (the firmware "
				       "boots the disk's own kernel)",
				       c->firmware,
				       c->kernel   ? "kernel"
				       : c->initrd ? "initrd"
						   : "cmdline");
	if (c->firmware && c->transport == KAPSEL_VM_TRANSPORT_MMIO)
		return kap_error_plain(err, EINVAL,
				       "--firmware %s: --transport mmio hides the disks from the "
				       "firmware, which looks for them on PCI",
				       c->firmware);
	if (c->firmware && (c->restore_state || c->incoming))
		return kap_error_plain(err, EINVAL, "--firmware %s: a %s boots no firmware",
				       c->firmware, c->incoming ? "migration" : "restore");
	if (!c->restore_state != !c->restore_mem)
		return kap_error_plain(err, EINVAL, "vm restore: needs both --mem and --state");
	/*
	 * A restore checks its files before anything exists (bad input leaves nothing behind)
	 * and takes the machine's shape from the state file.
	 */
	struct kap_snap *snap = NULL;
	struct kapsel_vm_config rc = *c;
	cleanup_free char *features = NULL;
	int r;
	if (c->restore_state && ((r = kap_snap_read(c->restore_state, &snap, err)) < 0 ||
				 (r = kap_snap_config(snap, c, &rc, &features, err)) < 0)) {
		kap_snap_free(snap);
		return r;
	}
	/*
	 * --jail: from here on this runs in the jailed child (jail.c), which hands its result
	 * to the caller and ends there; the caller returns that result.
	 */
	struct kap_jail *jail = NULL;
	if (c->jail && (r = kap_jail_spawn(c, &jail, err), !jail)) {
		kap_snap_free(snap);
		return r;
	}
	struct kap_vm_inputs in = {0};
	struct kap_vm *vm = calloc(1, sizeof(*vm));
	if (!vm) {
		kap_snap_free(snap);
		r = kap_error(err, ENOMEM, "vm");
		if (jail)
			kap_jail_child_exit(jail, r, err ? *err : NULL);
		return r;
	}
	vm->jail = jail;
	vm->cfg = &rc;
	vm->snap = snap;
	vm->in = &in;
	vm->fd = -EBADF;
	vm->kvm.fd = -EBADF;
	vm->mem.fd = -EBADF;
	vm->loop.epfd = vm->loop.wake_fd = -EBADF;
	vm->console.out_fd = vm->console.in_fd = -1;
	vm->incoming_fd = vm->incoming_conn = -EBADF;
	pthread_mutex_init(&vm->end_lock, NULL);
	pthread_mutex_init(&vm->route_lock, NULL);
	kap_vm_pause_init(vm);
	kap_bus_init(&vm->pio, "port");
	kap_bus_init(&vm->mmio, "mmio");

	/*
	 * SIGINT/SIGTERM arrive through a signalfd on the event thread; SIGPIPE is blocked so a
	 * closed console pipe is an EPIPE. Threads inherit this mask.
	 */
	sigset_t mask, old;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &mask, &old);
	sigset_t stop_sigs;
	sigemptyset(&stop_sigs);
	sigaddset(&stop_sigs, SIGINT);
	sigaddset(&stop_sigs, SIGTERM);
	int sfd = signalfd(-1, &stop_sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		r = kap_error(err, errno, "signalfd");
		goto out;
	}
	vm->signal_fd = sfd;
	/* The listener first, so the source can connect while the machine is being built. */
	if (c->incoming && (r = kap_migrate_listen(vm, c->incoming, err)) < 0)
		goto out;
	r = vm_setup(vm, sfd, err);
	/* The source ends on the acknowledgement: only once all but the vCPUs is up. */
	if (r < 0 || (c->incoming && (r = kap_migrate_ack(vm, err)) < 0))
		goto out;
	for (unsigned int i = 0; i < vm->ncpus && r >= 0; i++)
		r = kap_vcpu_start(&vm->vcpus[i], err);
	if (r < 0)
		goto out;
	/* The vCPU threads are started: this thread is the event loop from here on. */
	kap_jail_thread(KAP_JAIL_LOOP, 0);
	kap_loop_run(&vm->loop, &vm->stop);
	r = vm_result(vm, err);
out:
	/* A source still waiting hears why (and resumes its guest). */
	if (r < 0 && c->incoming)
		kap_migrate_nak(vm, err && *err ? (*err)->msg : "the destination failed");
	vm_teardown(vm);
	kap_snap_free(vm->snap);
	free(vm);
	inputs_free(&in);
	if (sfd >= 0)
		close(sfd);
	/* Consume what arrived while blocked so unblocking does not act on it. */
	struct timespec zero = {0};
	while (sigtimedwait(&mask, NULL, &zero) > 0)
		;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (jail)
		kap_jail_child_exit(jail, r, err ? *err : NULL);
	return r;
}
