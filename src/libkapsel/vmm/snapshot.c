/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Snapshot and restore of a paused VM (PUT /snapshot/create, `kapsel vm restore`; the file
 * format is docs/vm.md, "Snapshot format"). Guest RAM goes to its own file, byte for byte
 * (zero pages left as holes), so a restore can map it MAP_PRIVATE and fault pages in lazily;
 * the machine state goes to a state file of sections behind a versioned header, with a CRC-32
 * over everything, written under a temporary name and renamed into place so a failed snapshot
 * leaves no file behind.
 *
 * virtio devices (format version 2) are saved quiesced: kap_virtio_quiesce waits until no
 * device thread is inside a request, and keeps them out until the memory file is written, so
 * the rings in RAM and the queue positions in the state file agree and no request is half
 * done. Their host backends (disk images, taps, vsock sockets) are not in the file: a restore
 * is given the same devices again, as the destination of a migration is (docs/vm.md), and a
 * device set that differs is refused before the guest runs. virtio-fs is refused: its node
 * table holds open host files.
 *
 * The restore order follows KVM's rules (api.rst): CPUID before anything else on the vCPU,
 * sregs before regs (sregs sets the mode regs are read in), the LAPIC after CPUID and the APIC
 * base (sregs), MSRs after the LAPIC (a TSC-deadline MSR write is dropped unless the LAPIC
 * timer is in TSC-deadline mode), vcpu_events and mp_state after, and KVM_SET_CLOCK last,
 * since it computes kvmclock from the TSC the MSRs set.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "vmm/devices/devices.h"
#include "vmm/soft/state.h"
#include "vmm/virtio/transport.h"
#include "vmm/vmm.h"

#define SNAP_MAGIC	 "KAPSELVM"
#define SNAP_VERSION	 2u
#define SNAP_HEADER_SIZE 72u
#define SNAP_MAX_MSRS	 1024u
#define MSR_IA32_TSC	 0x10

enum {
	SEC_CONFIG = 1,
	SEC_REGS = 16,
	SEC_SREGS,
	SEC_MSRS,
	SEC_XSAVE,
	SEC_FPU,
	SEC_XCRS,
	SEC_LAPIC,
	SEC_MP_STATE,
	SEC_VCPU_EVENTS,
	SEC_DEBUGREGS,
	SEC_IRQCHIP = 32, /* index: KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE, _IOAPIC */
	SEC_PIT2,
	SEC_CLOCK,
	SEC_SERIAL = 48,
	SEC_RTC,
	SEC_I8042,
	SEC_FW_CFG,
	SEC_PCI_HOST = 63, /* the host bridge's CONFIG_ADDRESS latch */
	SEC_VIRTIO = 64,   /* index: the device's position in the device list */
	SEC_VIRTIO_SET,	   /* the number of virtio devices and their transport */
};

/* SEC_VIRTIO: this, then struct kap_virtio_state, struct kap_vpci_state (pci), the device's. */
struct snap_virtio {
	char id[32];
	uint32_t transport; /* KAPSEL_VM_TRANSPORT_* */
	uint32_t dev_len;   /* bytes of device state at the end */
};
struct snap_virtio_set {
	uint32_t n, transport;
};

/* The header, little-endian, SNAP_HEADER_SIZE bytes. */
struct snap_header {
	char magic[8];
	uint32_t version;
	uint32_t header_size;
	uint64_t total_len; /* the whole file, the CRC's 4 bytes included */
	char kapsel_version[32];
	uint32_t config_crc; /* CRC-32 of the CONFIG section's text */
	uint32_t ncpus;
	uint64_t mem_size;
};
_Static_assert(sizeof(struct snap_header) == SNAP_HEADER_SIZE, "snapshot header layout");

struct snap_section {
	uint32_t type, index;
	uint64_t len;
};

/* CRC-32 (IEEE 802.3, reflected, zlib's), bitwise: the state file is a few hundred KiB. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1u));
	}
	return ~crc;
}

/* ---- writing ---- */

struct sbuf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

static void sbuf_add(struct sbuf *b, const void *data, size_t len)
{
	if (b->oom)
		return;
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		while (cap < b->len + len)
			cap *= 2;
		uint8_t *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

static void section(struct sbuf *b, uint32_t type, uint32_t index, const void *data, size_t len)
{
	struct snap_section s = {.type = type, .index = index, .len = len};
	sbuf_add(b, &s, sizeof(s));
	sbuf_add(b, data, len);
}

/* The machine's shape, which a restore must rebuild: "key=value\n" lines. */
static char *config_text(const struct kapsel_vm_config *c, unsigned int ncpus, uint64_t mem,
			 bool soft)
{
	char *s = NULL;
	if (asprintf(&s,
		     "mem_size=%" PRIu64 "\ncpus=%u\ncpu_features=%s\npit=%d\ndebug_exit=%d\n"
		     "kernel=%s\naccel=%s\n",
		     mem, ncpus, c->cpu_features ? c->cpu_features : "", !c->no_pit,
		     !c->no_debug_exit, c->kernel ? c->kernel : "", soft ? "soft" : "kvm") < 0)
		return NULL;
	return s;
}

/* The MSRs KVM reports (KVM_GET_MSR_INDEX_LIST) that this vCPU's KVM_GET_MSRS accepts. */
static int msr_list(struct kap_vm *vm, struct kvm_msrs **out, struct kapsel_error **err)
{
	struct kvm_msr_list probe = {.nmsrs = 0};
	if (ioctl(vm->kvm.fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return kap_error(err, errno, "KVM_GET_MSR_INDEX_LIST");
	uint32_t n = probe.nmsrs;
	cleanup_free struct kvm_msr_list *l = calloc(1, sizeof(*l) + n * sizeof(uint32_t));
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	if (!l || !m) {
		free(m);
		return kap_error(err, ENOMEM, "MSR list");
	}
	l->nmsrs = n;
	if (ioctl(vm->kvm.fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		free(m);
		return kap_error(err, errno, "KVM_GET_MSR_INDEX_LIST");
	}
	for (uint32_t i = 0; i < l->nmsrs && m->nmsrs < SNAP_MAX_MSRS; i++) {
		struct {
			struct kvm_msrs h;
			struct kvm_msr_entry e;
		} one = {.h.nmsrs = 1, .e.index = l->indices[i]};
		if (ioctl(vm->vcpus[0].fd, KVM_GET_MSRS, &one) == 1)
			m->entries[m->nmsrs++].index = l->indices[i];
	}
	*out = m;
	return 0;
}

static int save_vcpu(struct kap_vm *vm, unsigned int i, const struct kvm_msrs *list,
		     const uint64_t *tsc, struct sbuf *b, struct kapsel_error **err)
{
	int fd = vm->vcpus[i].fd;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dr;
	if (ioctl(fd, KVM_GET_REGS, &regs) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_GET_REGS", i);
	if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_GET_SREGS", i);
	section(b, SEC_SREGS, i, &sregs, sizeof(sregs));
	section(b, SEC_REGS, i, &regs, sizeof(regs));
	int xsize = ioctl(vm->kvm.fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (ioctl(vm->kvm.fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
		size_t len = xsize > (int)sizeof(struct kvm_xsave) ? (size_t)xsize
								   : sizeof(struct kvm_xsave);
		cleanup_free struct kvm_xsave *x = calloc(1, len);
		if (!x)
			return kap_error(err, ENOMEM, "vCPU %u: XSAVE area", i);
		unsigned long op = len > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
		if (ioctl(fd, op, x) < 0)
			return kap_error(err, errno, "vCPU %u: KVM_GET_XSAVE", i);
		section(b, SEC_XSAVE, i, x, len);
	} else {
		struct kvm_fpu fpu;
		if (ioctl(fd, KVM_GET_FPU, &fpu) < 0)
			return kap_error(err, errno, "vCPU %u: KVM_GET_FPU", i);
		section(b, SEC_FPU, i, &fpu, sizeof(fpu));
	}
	if (ioctl(vm->kvm.fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0) {
		if (ioctl(fd, KVM_GET_XCRS, &xcrs) < 0)
			return kap_error(err, errno, "vCPU %u: KVM_GET_XCRS", i);
		section(b, SEC_XCRS, i, &xcrs, sizeof(xcrs));
	}
	if (ioctl(fd, KVM_GET_LAPIC, &lapic) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_GET_LAPIC", i);
	section(b, SEC_LAPIC, i, &lapic, sizeof(lapic));
	size_t mlen = sizeof(struct kvm_msrs) + list->nmsrs * sizeof(struct kvm_msr_entry);
	cleanup_free struct kvm_msrs *m = malloc(mlen);
	if (!m)
		return kap_error(err, ENOMEM, "vCPU %u: MSRs", i);
	memcpy(m, list, mlen);
	int got = ioctl(fd, KVM_GET_MSRS, m);
	if (got < 0 || (uint32_t)got != list->nmsrs)
		return kap_error(err, got < 0 ? errno : EIO, "vCPU %u: KVM_GET_MSRS (%d of %u)", i,
				 got, list->nmsrs);
	/* The TSC as the pause stopped it (pause.c), so the saved guest does not see the pause. */
	for (uint32_t k = 0; tsc && k < m->nmsrs; k++)
		if (m->entries[k].index == MSR_IA32_TSC)
			m->entries[k].data = *tsc;
	section(b, SEC_MSRS, i, m, mlen);
	if (ioctl(fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_GET_VCPU_EVENTS", i);
	/* api.rst 4.32: these fields are only applied on SET when their flag says so. */
	ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
	section(b, SEC_VCPU_EVENTS, i, &ev, sizeof(ev));
	if (ioctl(fd, KVM_GET_MP_STATE, &mp) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_GET_MP_STATE", i);
	section(b, SEC_MP_STATE, i, &mp, sizeof(mp));
	if (ioctl(fd, KVM_GET_DEBUGREGS, &dr) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_GET_DEBUGREGS", i);
	section(b, SEC_DEBUGREGS, i, &dr, sizeof(dr));
	return 0;
}

static bool is_pci(const struct kap_vm *vm)
{
	return vm->cfg->transport != KAPSEL_VM_TRANSPORT_MMIO;
}

/* Every virtio device's section; the devices are quiesced (build_state). */
static int save_virtio(struct kap_vm *vm, struct sbuf *b, struct kapsel_error **err)
{
	struct snap_virtio_set set = {.n = vm->nvirtio, .transport = (uint32_t)vm->cfg->transport};
	section(b, SEC_VIRTIO_SET, 0, &set, sizeof(set));
	if (vm->pci) {
		pthread_mutex_lock(&vm->pci->lock);
		uint64_t ca = vm->pci->config_address;
		pthread_mutex_unlock(&vm->pci->lock);
		section(b, SEC_PCI_HOST, 0, &ca, sizeof(ca));
	}
	size_t max = sizeof(struct snap_virtio) + sizeof(struct kap_virtio_state) +
		     sizeof(struct kap_vpci_state) + KAP_VIRTIO_DEV_STATE_MAX;
	cleanup_free uint8_t *buf = malloc(max);
	if (!buf)
		return kap_error(err, ENOMEM, "snapshot: virtio state");
	for (unsigned int i = 0; i < vm->nvirtio; i++) {
		struct kap_virtio_slot *slot = &vm->virtio[i];
		struct kap_virtio_dev *d = &slot->dev;
		struct snap_virtio h = {.transport = (uint32_t)vm->cfg->transport};
		snprintf(h.id, sizeof(h.id), "%s", d->id);
		size_t off = sizeof(h);
		const char *why = "device state too large";
		pthread_mutex_lock(&d->lock);
		kap_virtio_save(d, (struct kap_virtio_state *)(buf + off));
		off += sizeof(struct kap_virtio_state);
		if (is_pci(vm)) {
			kap_virtio_pci_save(&slot->pci, (struct kap_vpci_state *)(buf + off));
			off += sizeof(struct kap_vpci_state);
		}
		int n =
		    d->ops->save ? d->ops->save(d, buf + off, KAP_VIRTIO_DEV_STATE_MAX, &why) : 0;
		pthread_mutex_unlock(&d->lock);
		if (n < 0)
			return kap_error_plain(err, EOPNOTSUPP, "snapshot: %s: %s", d->id, why);
		h.dev_len = (uint32_t)n;
		memcpy(buf, &h, sizeof(h));
		section(b, SEC_VIRTIO, i, buf, off + (size_t)n);
	}
	return 0;
}

static void quiesce_all(struct kap_vm *vm)
{
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		kap_virtio_quiesce(&vm->virtio[i].dev);
}

static void release_all(struct kap_vm *vm)
{
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		kap_virtio_release(&vm->virtio[i].dev);
}

void kap_snap_quiesce(struct kap_vm *vm, bool hold)
{
	if (hold)
		quiesce_all(vm);
	else
		release_all(vm);
}

/* The soft path's sections (soft/state.c) go through this. */
static void soft_put(void *ctx, uint32_t type, uint32_t index, const void *data, size_t len)
{
	section(ctx, type, index, data, len);
}

static int save_machine(struct kap_vm *vm, struct sbuf *b, struct kapsel_error **err)
{
	static const uint32_t chips[] = {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
					 KVM_IRQCHIP_IOAPIC};
	for (size_t k = 0; k < 3 && !vm->soft; k++) {
		struct kvm_irqchip chip = {.chip_id = chips[k]};
		if (ioctl(vm->fd, KVM_GET_IRQCHIP, &chip) < 0)
			return kap_error(err, errno, "KVM_GET_IRQCHIP %u", chips[k]);
		section(b, SEC_IRQCHIP, chips[k], &chip, sizeof(chip));
	}
	if (!vm->cfg->no_pit && !vm->soft) {
		struct kvm_pit_state2 pit;
		if (ioctl(vm->fd, KVM_GET_PIT2, &pit) < 0)
			return kap_error(err, errno, "KVM_GET_PIT2");
		section(b, SEC_PIT2, 0, &pit, sizeof(pit));
	}
	struct kap_serial_state ser;
	struct kap_rtc_state rtc;
	struct kap_i8042_state kbd;
	struct kap_fw_cfg_state fw;
	kap_serial_save(vm->serial, &ser);
	kap_rtc_save(vm->rtc, &rtc);
	kap_i8042_save(vm->i8042, &kbd);
	kap_fw_cfg_save(vm->fw_cfg, &fw);
	section(b, SEC_SERIAL, 0, &ser, sizeof(ser));
	section(b, SEC_RTC, 0, &rtc, sizeof(rtc));
	section(b, SEC_I8042, 0, &kbd, sizeof(kbd));
	section(b, SEC_FW_CFG, 0, &fw, sizeof(fw));
	return save_virtio(vm, b, err);
}

/*
 * The state file's bytes (header, sections, CRC) of a paused VM into b; the caller holds
 * pause_lock. Shared by snapshots and migration (migrate.c sends the same bytes as its STATE
 * frame, so the destination checks them with the same parser).
 */
static int build_state(struct kap_vm *vm, struct sbuf *b, struct kapsel_error **err)
{
	int r = 0;
	cleanup_free struct kvm_msrs *msrs = NULL;
	cleanup_free char *cfg = NULL;
	struct kvm_clock_data clock;
	uint64_t tsc;
	int have = vm->soft ? 0 : kap_vm_saved_clock(vm, &clock, &tsc);
	cfg = config_text(vm->cfg, vm->ncpus, vm->mem.size, vm->soft);
	if (!cfg || (!vm->soft && (r = msr_list(vm, &msrs, err)) < 0))
		return r < 0 ? r : kap_error(err, ENOMEM, "snapshot");
	struct snap_header h = {.magic = SNAP_MAGIC,
				.version = SNAP_VERSION,
				.header_size = SNAP_HEADER_SIZE,
				.config_crc = crc32_update(0, (const uint8_t *)cfg, strlen(cfg)),
				.ncpus = vm->ncpus,
				.mem_size = vm->mem.size};
	snprintf(h.kapsel_version, sizeof(h.kapsel_version), "%s", KAPSEL_VERSION);
	sbuf_add(b, &h, sizeof(h));
	section(b, SEC_CONFIG, 0, cfg, strlen(cfg));
	quiesce_all(vm);
	r = save_machine(vm, b, err);
	release_all(vm);
	if (r < 0)
		return r;
	if (vm->soft && (r = kap_soft_state_save(vm, soft_put, b, err)) < 0)
		return r;
	for (unsigned int i = 0; i < vm->ncpus && !vm->soft; i++)
		if ((r = save_vcpu(vm, i, msrs, (have & 2) ? &tsc : NULL, b, err)) < 0)
			return r;
	if (have & 1)
		section(b, SEC_CLOCK, 0, &clock, sizeof(clock));
	if (b->oom)
		return kap_error(err, ENOMEM, "snapshot state");
	uint64_t total = b->len + 4;
	memcpy(b->p + offsetof(struct snap_header, total_len), &total, 8);
	uint32_t crc = crc32_update(0, b->p, b->len);
	sbuf_add(b, &crc, 4);
	if (b->oom)
		return kap_error(err, ENOMEM, "snapshot state");
	return 0;
}

char *kap_snap_config_text(const struct kap_vm *vm)
{
	return config_text(vm->cfg, vm->ncpus, vm->mem.size, vm->soft);
}

int kap_snap_state(struct kap_vm *vm, uint8_t **buf, size_t *len, struct kapsel_error **err)
{
	pthread_mutex_lock(&vm->pause_lock);
	struct sbuf b = {0};
	int r = vm->paused ? build_state(vm, &b, err)
			   : kap_error_plain(err, EBUSY, "machine state: the VM is not paused");
	pthread_mutex_unlock(&vm->pause_lock);
	if (r < 0) {
		free(b.p);
		return r;
	}
	*buf = b.p;
	*len = b.len;
	return 0;
}

/* Writes all of buf to fd; zero pages of guest RAM become holes (ftruncate gives the size). */
static int write_all(int fd, const uint8_t *p, uint64_t len, bool sparse)
{
	static const uint8_t zero[4096];
	uint64_t off = 0;
	while (off < len) {
		uint64_t n = len - off < 4096 ? len - off : 4096;
		if (sparse && n == 4096 && !memcmp(p + off, zero, 4096)) {
			off += n;
			continue;
		}
		ssize_t w = pwrite(fd, p + off, (size_t)n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		off += (uint64_t)w;
	}
	return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

/*
 * A diff snapshot's memory: the pages set in dirty, each at its own offset, into a file of
 * len bytes that is a hole everywhere else. Dirty pages are written even when zero, so that
 * SEEK_DATA finds every page that must overwrite the base.
 */
static int write_dirty(int fd, const uint8_t *p, uint64_t len, const uint64_t *dirty)
{
	if (ftruncate(fd, (off_t)len) < 0)
		return -errno;
	uint64_t pages = len / 4096;
	for (uint64_t n = 0; n < pages;) {
		if (!(dirty[n / 64] & (1ULL << (n % 64)))) {
			n++;
			continue;
		}
		uint64_t run = n;
		while (run < pages && (dirty[run / 64] & (1ULL << (run % 64))))
			run++;
		uint64_t off = n * 4096, end = run * 4096;
		while (off < end) {
			ssize_t w = pwrite(fd, p + off, (size_t)(end - off), (off_t)off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return w < 0 ? -errno : -EIO;
			off += (uint64_t)w;
		}
		n = run;
	}
	return 0;
}

/*
 * Writes path's contents under path.partial, then renames; on failure nothing remains. With
 * dirty, only those pages (write_dirty).
 */
static int write_file(const char *what, const char *path, const uint8_t *p, uint64_t len,
		      bool sparse, const uint64_t *dirty, char *tmp, size_t tmplen,
		      struct kapsel_error **err)
{
	snprintf(tmp, tmplen, "%s.partial", path);
	cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return kap_error(err, errno, "%s %s", what, path);
	int r = dirty ? write_dirty(fd, p, len, dirty) : write_all(fd, p, len, sparse);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return kap_error(err, -r, "write %s %s", what, path);
	}
	return 0;
}

int kap_vm_snapshot(struct kap_vm *vm, const char *mem_path, const char *state_path, bool diff,
		    struct kapsel_error **err)
{
	/*
	 * Device threads stay out of the rings from the state's capture until the memory file is
	 * written, so the two agree (their writes to guest RAM bypass the dirty log too).
	 */
	quiesce_all(vm);
	pthread_mutex_lock(&vm->pause_lock);
	int r = 0;
	char mem_tmp[4096 + 16] = "", state_tmp[4096 + 16] = "";
	struct sbuf b = {0};
	cleanup_free uint64_t *dirty = NULL;
	/* Migration (migrate.c) reads and clears the dirty log a Diff snapshot relies on. */
	if (atomic_load(&vm->migrating)) {
		r = kap_error_plain(err, EBUSY, "snapshot: a migration of this VM is in progress");
		goto out;
	}
	if (!vm->paused) {
		r = kap_error_plain(err, EBUSY, "snapshot: the VM is not paused (pause it first)");
		goto out;
	}
	if (diff && !vm->mem.dirty_log) {
		r = kap_error_plain(err, EINVAL,
				    "snapshot: a Diff snapshot needs a Full snapshot of this VM "
				    "first (dirty pages are tracked from the last snapshot)");
		goto out;
	}
	if (strlen(mem_path) > 4096 || strlen(state_path) > 4096) {
		r = kap_error_plain(err, ENAMETOOLONG, "snapshot: path too long");
		goto out;
	}
	if ((r = build_state(vm, &b, err)) < 0)
		goto out;
	/*
	 * The dirty log restarts here whatever the type: a Full snapshot is the base of the next
	 * Diff, a Diff the base of the one after. A Full snapshot turns logging on (it starts
	 * empty); from then on every snapshot reads and clears it.
	 */
	if (vm->mem.dirty_log)
		r = kap_mem_dirty_log(&vm->mem, vm->fd, &dirty, err);
	else
		r = kap_mem_set_dirty_log(&vm->mem, vm->fd, true, err);
	if (r < 0)
		goto out;
	if ((r = write_file("memory file", mem_path, vm->mem.host, vm->mem.size, true,
			    diff ? dirty : NULL, mem_tmp, sizeof(mem_tmp), err)) < 0) {
		mem_tmp[0] = 0;
		goto out;
	}
	if ((r = write_file("state file", state_path, b.p, b.len, false, NULL, state_tmp,
			    sizeof(state_tmp), err)) < 0) {
		state_tmp[0] = 0;
		goto out;
	}
	if (rename(mem_tmp, mem_path) < 0) {
		r = kap_error(err, errno, "snapshot: rename to memory file %s", mem_path);
		goto out;
	}
	mem_tmp[0] = 0;
	if (rename(state_tmp, state_path) < 0) {
		r = kap_error(err, errno, "snapshot: rename to state file %s", state_path);
		unlink(mem_path);
		goto out;
	}
	state_tmp[0] = 0;
	kap_info("vm: %s snapshot of %" PRIu64 " MiB to %s and %s", diff ? "diff" : "full",
		 vm->mem.size >> 20, mem_path, state_path);
out:
	/*
	 * A failed snapshot may have cleared the log of pages its files never got: the next Diff
	 * would silently miss them, so logging stops and the next Diff is refused until a Full
	 * snapshot succeeds.
	 */
	if (r < 0 && vm->mem.dirty_log) {
		cleanup_error struct kapsel_error *e2 = NULL;
		kap_mem_set_dirty_log(&vm->mem, vm->fd, false, &e2);
		vm->mem.dirty_log = false;
	}
	if (mem_tmp[0])
		unlink(mem_tmp);
	if (state_tmp[0])
		unlink(state_tmp);
	free(b.p);
	pthread_mutex_unlock(&vm->pause_lock);
	release_all(vm);
	return r;
}

/* ---- reading ---- */

struct kap_snap {
	uint8_t *buf;
	size_t len;
	char *what; /* "state file PATH", or what migrate.c names its stream */
	const struct snap_header *h;
	char *config; /* NUL-terminated copy */
};

void kap_snap_free(struct kap_snap *s)
{
	if (!s)
		return;
	free(s->buf);
	free(s->config);
	free(s->what);
	free(s);
}

/* Finds section (type, index); NULL when absent. len must match unless want_len is 0. */
static const void *find(const struct kap_snap *s, uint32_t type, uint32_t index, uint64_t *len)
{
	size_t off = s->h->header_size, end = s->len - 4;
	while (off + sizeof(struct snap_section) <= end) {
		struct snap_section sec;
		memcpy(&sec, s->buf + off, sizeof(sec));
		off += sizeof(sec);
		if (sec.len > end - off)
			return NULL;
		if (sec.type == type && sec.index == index) {
			*len = sec.len;
			return s->buf + off;
		}
		off += sec.len;
	}
	return NULL;
}

int kap_snap_parse(uint8_t *buf, size_t len, const char *what, struct kap_snap **out,
		   struct kapsel_error **err)
{
	struct kap_snap *s = calloc(1, sizeof(*s));
	if (!s || !(s->what = strdup(what))) {
		free(s);
		free(buf);
		return kap_error(err, ENOMEM, "%s", what);
	}
	s->buf = buf;
	s->len = len;
	int r = 0;
	struct snap_header h;
	if (s->len < 8 || memcmp(s->buf, SNAP_MAGIC, 8)) {
		r = kap_error_plain(err, EINVAL, "%s: not a kapsel state file (bad magic)", what);
		goto fail;
	}
	if (s->len < sizeof(h) + 4) {
		r = kap_error_plain(err, EINVAL, "%s: truncated (%zu bytes)", what, s->len);
		goto fail;
	}
	memcpy(&h, s->buf, sizeof(h));
	if (h.version != SNAP_VERSION) {
		r = kap_error_plain(err, EINVAL,
				    "%s: format version %u, this kapsel reads version %u", what,
				    h.version, SNAP_VERSION);
		goto fail;
	}
	if (h.total_len != s->len) {
		r = kap_error_plain(err, EINVAL,
				    "%s: truncated or extended (%zu bytes, the header "
				    "says %" PRIu64 ")",
				    what, s->len, h.total_len);
		goto fail;
	}
	uint32_t crc;
	memcpy(&crc, s->buf + s->len - 4, 4);
	if (crc32_update(0, s->buf, s->len - 4) != crc) {
		r = kap_error_plain(err, EINVAL, "%s: checksum mismatch (corrupt or modified)",
				    what);
		goto fail;
	}
	h.kapsel_version[sizeof(h.kapsel_version) - 1] = 0;
	if (strcmp(h.kapsel_version, KAPSEL_VERSION)) {
		r = kap_error_plain(err, EINVAL, "%s: written by kapsel %s, this is kapsel %s",
				    what, h.kapsel_version, KAPSEL_VERSION);
		goto fail;
	}
	if (h.header_size != SNAP_HEADER_SIZE || h.ncpus == 0 || h.ncpus > KAP_MAX_VCPUS ||
	    h.mem_size == 0) {
		r = kap_error_plain(err, EINVAL, "%s: header out of range", what);
		goto fail;
	}
	s->h = (const struct snap_header *)s->buf;
	uint64_t clen;
	const char *cfg = find(s, SEC_CONFIG, 0, &clen);
	if (!cfg || !(s->config = strndup(cfg, clen)) || strlen(s->config) != clen ||
	    crc32_update(0, (const uint8_t *)cfg, clen) != h.config_crc) {
		r = kap_error_plain(err, EINVAL, "%s: bad configuration section", what);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	kap_snap_free(s);
	return r;
}

int kap_snap_read(const char *path, struct kap_snap **out, struct kapsel_error **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "state file %s", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kap_error(err, errno, "state file %s", path);
	if (!S_ISREG(st.st_mode) || st.st_size > (64 << 20))
		return kap_error_plain(err, EINVAL, "state file %s: not a kapsel state file", path);
	size_t len = (size_t)st.st_size;
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return kap_error(err, ENOMEM, "state file %s", path);
	for (size_t off = 0; off < len;) {
		ssize_t n = read(fd, buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return kap_error(err, n < 0 ? errno : EIO, "read state file %s", path);
		}
		off += (size_t)n;
	}
	cleanup_free char *what = NULL;
	if (asprintf(&what, "state file %s", path) < 0) {
		free(buf);
		return kap_error(err, ENOMEM, "state file %s", path);
	}
	return kap_snap_parse(buf, len, what, out, err);
}

/* The value of key in the CONFIG section, copied into out; false when absent. */
static bool config_get(const struct kap_snap *s, const char *key, char *out, size_t len)
{
	size_t kl = strlen(key);
	for (const char *l = s->config; *l;) {
		const char *nl = strchr(l, '\n');
		size_t ll = nl ? (size_t)(nl - l) : strlen(l);
		if (ll > kl && !strncmp(l, key, kl) && l[kl] == '=') {
			snprintf(out, len, "%.*s", (int)(ll - kl - 1), l + kl + 1);
			return true;
		}
		l += ll + (nl ? 1 : 0);
	}
	return false;
}

static const char *transport_name(uint32_t t)
{
	return t == KAPSEL_VM_TRANSPORT_MMIO ? "mmio" : t == KAPSEL_VM_TRANSPORT_PCI ? "pci" : "?";
}

int kap_snap_check_devices(const struct kap_snap *s, const struct kapsel_vm_config *c,
			   const char *who, struct kapsel_error **err)
{
	unsigned int n = c->ndisks + (c->rng ? 1 : 0) + c->nnets + (c->virtio_console ? 1 : 0) +
			 (c->vsock_path ? 1 : 0) + c->nfs + (c->balloon.enabled ? 1 : 0);
	if (c->nfs)
		return kap_error_plain(err, EOPNOTSUPP,
				       "%s: --fs %s: virtio-fs cannot be saved or restored (its "
				       "node table holds open host files)",
				       who, c->fs[0].tag);
	uint64_t len;
	const struct snap_virtio_set *p = find(s, SEC_VIRTIO_SET, 0, &len);
	struct snap_virtio_set set;
	if (!p || len != sizeof(set))
		return kap_error_plain(err, EINVAL, "%s: bad virtio device section", s->what);
	memcpy(&set, p, sizeof(set));
	if (set.n != n)
		return kap_error_plain(err, EINVAL,
				       "%s: the snapshot has %u virtio devices, this VM would have "
				       "%u (give the same --disk, --net, --rng, --virtio-console, "
				       "--vsock and --balloon)",
				       who, set.n, n);
	if (n && set.transport != (uint32_t)c->transport)
		return kap_error_plain(
		    err, EINVAL, "%s: --transport %s differs from the snapshot's %s", who,
		    transport_name((uint32_t)c->transport), transport_name(set.transport));
	return 0;
}

int kap_snap_config(const struct kap_snap *s, const struct kapsel_vm_config *given,
		    struct kapsel_vm_config *c, char **features, struct kapsel_error **err)
{
	char v[1024];
	int r = kap_snap_check_devices(s, given, "vm restore", err);
	if (r < 0)
		return r;
	if (given->cpus && given->cpus != s->h->ncpus)
		return kap_error_plain(err, EINVAL,
				       "vm restore: --cpus %u differs from the snapshot's %u vCPUs "
				       "(the configuration must not change)",
				       given->cpus, s->h->ncpus);
	if (given->mem_size && given->mem_size != s->h->mem_size)
		return kap_error_plain(err, EINVAL,
				       "vm restore: --mem-size %" PRIu64
				       " differs from the snapshot's "
				       "%" PRIu64 " bytes",
				       given->mem_size, s->h->mem_size);
	/* The accelerator the state is for: soft state cannot be loaded into KVM or back. */
	bool soft = config_get(s, "accel", v, sizeof(v)) && !strcmp(v, "soft");
	if (given->accel != KAPSEL_VM_ACCEL_AUTO && (given->accel == KAPSEL_VM_ACCEL_SOFT) != soft)
		return kap_error_plain(err, EINVAL,
				       "vm restore: --accel %s, but the snapshot holds %s state "
				       "(the soft CPU's and KVM's are not converted): restore "
				       "with --accel %s",
				       soft ? "kvm" : "soft", soft ? "soft CPU" : "KVM",
				       soft ? "soft" : "kvm");
	c->accel = soft ? KAPSEL_VM_ACCEL_SOFT : KAPSEL_VM_ACCEL_KVM;
	c->cpus = s->h->ncpus;
	c->mem_size = s->h->mem_size;
	c->mem_shared = false;
	if (!config_get(s, "cpu_features", v, sizeof(v)))
		v[0] = 0;
	if (given->cpu_features && strcmp(given->cpu_features, v))
		return kap_error_plain(err, EINVAL,
				       "vm restore: --cpu-features %s differs from the snapshot's "
				       "\"%s\"",
				       given->cpu_features, v);
	*features = v[0] ? strdup(v) : NULL;
	c->cpu_features = *features;
	c->no_pit = config_get(s, "pit", v, sizeof(v)) && !strcmp(v, "0");
	c->no_debug_exit = config_get(s, "debug_exit", v, sizeof(v)) && !strcmp(v, "0");
	return 0;
}

#define NEED(type, index, var)                                                                     \
	do {                                                                                       \
		uint64_t l_;                                                                       \
		const void *p_ = find(s, type, index, &l_);                                        \
		if (!p_ || l_ != sizeof(var))                                                      \
			return kap_error_plain(err, EINVAL,                                        \
					       "%s: section %s of vCPU/chip %u missing "           \
					       "or of the wrong size",                             \
					       s->what, #type, (unsigned)(index));                 \
		memcpy(&(var), p_, sizeof(var));                                                   \
	} while (0)

static int load_vcpu(struct kap_vm *vm, const struct kap_snap *s, unsigned int i,
		     struct kapsel_error **err)
{
	int fd = vm->vcpus[i].fd;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dr;
	NEED(SEC_SREGS, i, sregs);
	NEED(SEC_REGS, i, regs);
	NEED(SEC_LAPIC, i, lapic);
	NEED(SEC_MP_STATE, i, mp);
	NEED(SEC_VCPU_EVENTS, i, ev);
	NEED(SEC_DEBUGREGS, i, dr);
	if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_SET_SREGS", i);
	if (ioctl(fd, KVM_SET_REGS, &regs) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_SET_REGS", i);
	uint64_t len;
	const void *x = find(s, SEC_XSAVE, i, &len);
	if (x) {
		if (len < sizeof(struct kvm_xsave) || len > (1u << 20))
			return kap_error_plain(err, EINVAL, "%s: vCPU %u: bad XSAVE size", s->what,
					       i);
		cleanup_free void *xs = malloc(len);
		if (!xs)
			return kap_error(err, ENOMEM, "vCPU %u: XSAVE", i);
		memcpy(xs, x, len);
		/* KVM_SET_XSAVE takes the larger KVM_GET_XSAVE2 area as well (api.rst 4.42). */
		if (ioctl(fd, KVM_SET_XSAVE, xs) < 0)
			return kap_error(err, errno, "vCPU %u: KVM_SET_XSAVE", i);
	} else {
		struct kvm_fpu fpu;
		NEED(SEC_FPU, i, fpu);
		if (ioctl(fd, KVM_SET_FPU, &fpu) < 0)
			return kap_error(err, errno, "vCPU %u: KVM_SET_FPU", i);
	}
	struct kvm_xcrs xcrs;
	if (find(s, SEC_XCRS, i, &len)) {
		NEED(SEC_XCRS, i, xcrs);
		if (ioctl(fd, KVM_SET_XCRS, &xcrs) < 0)
			return kap_error(err, errno, "vCPU %u: KVM_SET_XCRS", i);
	}
	if (ioctl(fd, KVM_SET_LAPIC, &lapic) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_SET_LAPIC", i);
	const struct kvm_msrs *m = find(s, SEC_MSRS, i, &len);
	uint32_t n;
	if (!m || len < sizeof(*m) || (memcpy(&n, m, 4), n > SNAP_MAX_MSRS) ||
	    len != sizeof(*m) + n * sizeof(struct kvm_msr_entry))
		return kap_error_plain(err, EINVAL, "%s: vCPU %u: bad MSR section", s->what, i);
	cleanup_free struct kvm_msrs *mc = malloc(len);
	if (!mc)
		return kap_error(err, ENOMEM, "vCPU %u: MSRs", i);
	memcpy(mc, m, len);
	int set = ioctl(fd, KVM_SET_MSRS, mc);
	if (set < 0 || (uint32_t)set != n)
		return kap_error_plain(err, EINVAL, "vCPU %u: KVM_SET_MSRS refused MSR 0x%x", i,
				       set >= 0 && (uint32_t)set < n ? mc->entries[set].index : 0);
	if (ioctl(fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_SET_VCPU_EVENTS", i);
	if (ioctl(fd, KVM_SET_MP_STATE, &mp) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_SET_MP_STATE", i);
	if (ioctl(fd, KVM_SET_DEBUGREGS, &dr) < 0)
		return kap_error(err, errno, "vCPU %u: KVM_SET_DEBUGREGS", i);
	return 0;
}

/*
 * Every device's section into the devices vm.c just created (not running: no vCPU has run,
 * the event loop has not started), checked against them first: the same number, the same
 * type and name at each position, the same transport, the same offered features and the
 * device's own identity (a disk's size). Runs before any other state is applied.
 */
static int load_virtio(struct kap_vm *vm, const struct kap_snap *s, struct kapsel_error **err)
{
	int r = kap_snap_check_devices(s, vm->cfg, s->what, err);
	if (r < 0)
		return r;
	uint64_t len;
	if (find(s, SEC_VIRTIO, vm->nvirtio, &len))
		return kap_error_plain(err, EINVAL, "%s: more virtio device sections than devices",
				       s->what);
	for (unsigned int i = 0; i < vm->nvirtio; i++) {
		struct kap_virtio_slot *slot = &vm->virtio[i];
		struct kap_virtio_dev *d = &slot->dev;
		const uint8_t *p = find(s, SEC_VIRTIO, i, &len);
		struct snap_virtio h;
		struct kap_virtio_state st;
		struct kap_vpci_state ps;
		size_t fixed = sizeof(h) + sizeof(st) + (is_pci(vm) ? sizeof(ps) : 0);
		if (!p || len < fixed)
			return kap_error_plain(err, EINVAL,
					       "%s: virtio device %u (%s): section missing or "
					       "truncated",
					       s->what, i, d->id);
		memcpy(&h, p, sizeof(h));
		memcpy(&st, p + sizeof(h), sizeof(st));
		h.id[sizeof(h.id) - 1] = 0;
		if (h.dev_len != len - fixed || h.dev_len > KAP_VIRTIO_DEV_STATE_MAX)
			return kap_error_plain(err, EINVAL,
					       "%s: virtio device %u (%s): section length "
					       "inconsistent",
					       s->what, i, d->id);
		if (strcmp(h.id, d->id) || st.device_id != d->ops->device_id)
			return kap_error_plain(
			    err, EINVAL,
			    "%s: virtio device %u is %s (type %u) in the snapshot, "
			    "%s (%s) here",
			    s->what, i, h.id, st.device_id, d->id, d->ops->name);
		if (h.transport != (uint32_t)vm->cfg->transport)
			return kap_error_plain(err, EINVAL, "%s: %s: transport %s, this VM's is %s",
					       s->what, d->id, transport_name(h.transport),
					       transport_name((uint32_t)vm->cfg->transport));
		const char *why = "bad state";
		pthread_mutex_lock(&d->lock);
		r = kap_virtio_load(d, &st, &why);
		if (r == 0 && is_pci(vm)) {
			memcpy(&ps, p + sizeof(h) + sizeof(st), sizeof(ps));
			r = kap_virtio_pci_load(&slot->pci, &ps, &why);
		}
		if (r == 0 && d->ops->load)
			r = d->ops->load(d, p + fixed, h.dev_len, &why);
		else if (r == 0 && h.dev_len)
			r = -1, why = "device state where this device keeps none";
		pthread_mutex_unlock(&d->lock);
		if (r < 0)
			return kap_error_plain(err, EINVAL, "%s: %s (%s): %s", s->what, d->id,
					       d->ops->name, why);
	}
	if (vm->pci) {
		uint64_t ca;
		NEED(SEC_PCI_HOST, 0, ca);
		pthread_mutex_lock(&vm->pci->lock);
		vm->pci->config_address = (uint32_t)ca;
		pthread_mutex_unlock(&vm->pci->lock);
	}
	return 0;
}

static const void *soft_get(const void *ctx, uint32_t type, uint32_t index, uint64_t *len)
{
	return find(ctx, type, index, len);
}

int kap_snap_load(struct kap_vm *vm, const struct kap_snap *s, struct kapsel_error **err)
{
	static const uint32_t chips[] = {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
					 KVM_IRQCHIP_IOAPIC};
	char accel[16];
	bool soft = config_get(s, "accel", accel, sizeof(accel)) && !strcmp(accel, "soft");
	if (soft != vm->soft)
		return kap_error_plain(err, EINVAL,
				       "%s: the state is %s, this VM runs on %s (the two are not "
				       "converted)",
				       s->what, soft ? "the soft CPU's" : "KVM's",
				       vm->soft ? "the soft CPU" : "KVM");
	int r = load_virtio(vm, s, err);
	if (r < 0)
		return r;
	for (size_t k = 0; k < 3 && !vm->soft; k++) {
		struct kvm_irqchip chip;
		NEED(SEC_IRQCHIP, chips[k], chip);
		if (chip.chip_id != chips[k])
			return kap_error_plain(err, EINVAL, "%s: irqchip %u mislabelled", s->what,
					       chips[k]);
		if (ioctl(vm->fd, KVM_SET_IRQCHIP, &chip) < 0)
			return kap_error(err, errno, "KVM_SET_IRQCHIP %u", chips[k]);
	}
	if (!vm->cfg->no_pit && !vm->soft) {
		struct kvm_pit_state2 pit;
		NEED(SEC_PIT2, 0, pit);
		if (ioctl(vm->fd, KVM_SET_PIT2, &pit) < 0)
			return kap_error(err, errno, "KVM_SET_PIT2");
	}
	struct kap_serial_state ser;
	struct kap_rtc_state rtc;
	struct kap_i8042_state kbd;
	struct kap_fw_cfg_state fw;
	NEED(SEC_SERIAL, 0, ser);
	NEED(SEC_RTC, 0, rtc);
	NEED(SEC_I8042, 0, kbd);
	NEED(SEC_FW_CFG, 0, fw);
	const char *why = NULL;
	if (kap_serial_load(vm->serial, &ser, &why) < 0 || kap_rtc_load(vm->rtc, &rtc, &why) < 0 ||
	    kap_fw_cfg_load(vm->fw_cfg, &fw, &why) < 0 || kap_i8042_load(vm->i8042, &kbd, &why) < 0)
		return kap_error_plain(err, EINVAL, "%s: %s", s->what, why);
	if (vm->soft && (r = kap_soft_state_load(vm, soft_get, s, s->what, err)) < 0)
		return r;
	for (unsigned int i = 0; i < vm->ncpus && !vm->soft; i++)
		if ((r = load_vcpu(vm, s, i, err)) < 0)
			return r;
	uint64_t len;
	if (!vm->soft && find(s, SEC_CLOCK, 0, &len)) {
		struct kvm_clock_data clock;
		NEED(SEC_CLOCK, 0, clock);
		struct kvm_clock_data d = {.clock = clock.clock};
		if (ioctl(vm->fd, KVM_SET_CLOCK, &d) < 0)
			return kap_error(err, errno, "KVM_SET_CLOCK");
	}
	/* Last: the irqchips are back, so a re-raised line or a kicked queue lands in them. */
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		kap_virtio_resume_loaded(&vm->virtio[i].dev);
	return 0;
}

uint64_t kap_snap_mem_size(const struct kap_snap *s)
{
	return s->h->mem_size;
}
