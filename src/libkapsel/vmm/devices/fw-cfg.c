/* SPDX-License-Identifier: Apache-2.0 */
/*
 * QEMU's firmware configuration interface (QEMU docs/specs/fw_cfg.rst), x86 port layout: a
 * 16-bit selector at 0x510, an 8-bit data port at 0x511, and the DMA address register at
 * 0x514 (high 32 bits) / 0x518 (low 32 bits, writing it starts the transfer), both big-endian.
 * Firmware (SeaBIOS, OVMF) and test kernels read it to learn the machine.
 *
 * Everything the guest sends is hostile: a selector names an item or nothing (reads of nothing,
 * and reads past the end of an item, return zeros, as QEMU does); a DMA descriptor is copied
 * out of guest RAM once, and every guest range it names is checked with kap_mem_ptr before a
 * byte moves (a range outside RAM sets the error bit, §"FW_CFG_DMA_CTL_ERROR"). Items are
 * read-only: the write channel and DMA writes are refused. The items are built once, before
 * any vCPU runs; only the cursor (selected item and offset) changes, under the device's lock.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "vmm/devices/devices.h"
#include "vmm/x86/acpi.h"
#include "vmm/x86/boot.h"

/* Selector keys (fw_cfg.rst, "Selector Register"; QEMU include/standard-headers/.../fw_cfg.h). */
enum {
	FW_CFG_SIGNATURE = 0x00,
	FW_CFG_ID = 0x01,
	FW_CFG_UUID = 0x02,
	FW_CFG_RAM_SIZE = 0x03,
	FW_CFG_NOGRAPHIC = 0x04,
	FW_CFG_NB_CPUS = 0x05,
	FW_CFG_KERNEL_SIZE = 0x08,
	FW_CFG_INITRD_SIZE = 0x0b,
	FW_CFG_MAX_CPUS = 0x0f,
	FW_CFG_KERNEL_DATA = 0x11,
	FW_CFG_INITRD_DATA = 0x12,
	FW_CFG_CMDLINE_SIZE = 0x14,
	FW_CFG_CMDLINE_DATA = 0x15,
	FW_CFG_FILE_DIR = 0x19,
	FW_CFG_FILE_FIRST = 0x20,
};
/* Named files, from FW_CFG_FILE_FIRST on; the directory lists those with data. */
enum { FILE_E820, FILE_SERCON, FILE_ACPI_RSDP, FILE_ACPI_TABLES, FILE_TABLE_LOADER, NFILES };
#define NITEMS (FW_CFG_FILE_FIRST + NFILES)

/* Selector bits: 0x4000 asked for writing (ignored: nothing is writable), 0x8000 arch-local. */
#define FW_CFG_WRITE_CHANNEL 0x4000
#define FW_CFG_ARCH_LOCAL    0x8000
/* FW_CFG_ID: the traditional interface and DMA. */
#define FW_CFG_VERSION	   0x01
#define FW_CFG_VERSION_DMA 0x02

/* FWCfgDmaAccess.control (fw_cfg.rst, "FW_CFG_DMA_CTL_*"). */
#define DMA_CTL_ERROR  0x01
#define DMA_CTL_READ   0x02
#define DMA_CTL_SKIP   0x04
#define DMA_CTL_SELECT 0x08
#define DMA_CTL_WRITE  0x10

static const char dma_signature[8] = "QEMU CFG";

struct dma_access {
	uint32_t control, length; /* big-endian */
	uint64_t address;	  /* big-endian */
} __attribute__((packed));

/* One directory entry: FWCfgFile, big-endian, name NUL-padded. */
struct file_entry {
	uint32_t size;
	uint16_t select, reserved;
	char name[56];
} __attribute__((packed));

struct item {
	const uint8_t *data;
	uint32_t len;
};

/*
 * QEMU's BIOS linker/loader script, etc/table-loader (QEMU hw/acpi/bios-linker-loader.c;
 * SeaBIOS src/fw/romfile_loader.c): 128-byte commands that make the firmware allocate a file
 * in a memory zone, add one file's address to a pointer in another, and fix a checksum.
 */
#define LOADER_FILESZ 56
enum { LOADER_ALLOCATE = 1, LOADER_ADD_POINTER = 2, LOADER_ADD_CHECKSUM = 3 };
enum { LOADER_ZONE_HIGH = 1, LOADER_ZONE_FSEG = 2 };
struct loader_entry {
	uint32_t command;
	union {
		struct {
			char file[LOADER_FILESZ];
			uint32_t align;
			uint8_t zone;
		} __attribute__((packed)) alloc;
		struct {
			char dest[LOADER_FILESZ];
			char src[LOADER_FILESZ];
			uint32_t offset;
			uint8_t size;
		} __attribute__((packed)) pointer;
		struct {
			char file[LOADER_FILESZ];
			uint32_t offset, start, length;
		} __attribute__((packed)) cksum;
		uint8_t pad[124];
	};
} __attribute__((packed));
_Static_assert(sizeof(struct loader_entry) == 128, "loader command size");
/* Two allocations, the RSDP's pointer and two checksums, the XSDT's, and the FADT's. */
#define LOADER_MAX 32
#define RSDP_LEN   36
static const char rsdp_file[] = "etc/acpi/rsdp", tables_file[] = "etc/acpi/tables";

struct kap_fw_cfg {
	struct kap_vm *vm;
	pthread_mutex_t lock;
	struct item items[NITEMS];
	unsigned int cur; /* selected key; NITEMS when none */
	uint32_t off;	  /* read offset in it */
	uint32_t dma_hi;  /* the high half of the DMA address, written first */
	/* Backing store of the small items. */
	uint8_t signature[4], id[4], uuid[16], ram_size[8], nographic[2], nb_cpus[2], max_cpus[2];
	uint8_t kernel_size[4], initrd_size[4], cmdline_size[4];
	struct {
		uint32_t count;
		struct file_entry e[NFILES];
	} __attribute__((packed)) dir;
	struct kap_e820_entry e820[KAP_E820_MAX];
	uint8_t sercon[2];
	/* --firmware: ACPI for the firmware to place (fw_cfg_acpi). */
	uint8_t rsdp[RSDP_LEN];
	uint8_t *acpi_tables;
	struct loader_entry loader[LOADER_MAX];
	unsigned int nloader;
	/* The kernel and initrd files, mapped read-only; the command line as given. */
	void *kernel, *initrd;
	size_t kernel_len, initrd_len;
	char *cmdline;
};

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

/* A whole regular file, mapped read-only, for the KERNEL_DATA/INITRD_DATA items. */
static int map_whole(const char *what, const char *path, void **p, size_t *len,
		     struct kapsel_error **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		return kap_error(err, errno, "fw_cfg: %s %s", what, path);
	if (fstat(fd, &st) < 0)
		return kap_error(err, errno, "fw_cfg: stat %s %s", what, path);
	/* The item sizes are 32-bit (FW_CFG_KERNEL_SIZE is a le32). */
	if (!S_ISREG(st.st_mode) || st.st_size == 0 || (uint64_t)st.st_size > UINT32_MAX)
		return kap_error_plain(err, EINVAL,
				       "fw_cfg: %s %s: not a regular file of 1 byte to 4 GiB", what,
				       path);
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return kap_error(err, errno, "fw_cfg: map %s %s", what, path);
	*p = m;
	*len = (size_t)st.st_size;
	return 0;
}

static void set(struct kap_fw_cfg *f, unsigned int key, const void *data, size_t len)
{
	f->items[key] = (struct item){data, (uint32_t)len};
}

void kap_fw_cfg_free(struct kap_fw_cfg *f)
{
	if (!f)
		return;
	if (f->kernel)
		munmap(f->kernel, f->kernel_len);
	if (f->initrd)
		munmap(f->initrd, f->initrd_len);
	free(f->cmdline);
	free(f->acpi_tables);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static struct loader_entry *loader_add(struct kap_fw_cfg *f, uint32_t command)
{
	if (f->nloader == LOADER_MAX)
		return NULL;
	struct loader_entry *e = &f->loader[f->nloader++];
	e->command = htole32(command);
	return e;
}

static bool loader_pointer(struct kap_fw_cfg *f, const char *dest, uint32_t offset, uint8_t size)
{
	struct loader_entry *e = loader_add(f, LOADER_ADD_POINTER);
	if (!e)
		return false;
	strncpy(e->pointer.dest, dest, LOADER_FILESZ - 1);
	strncpy(e->pointer.src, tables_file, LOADER_FILESZ - 1);
	e->pointer.offset = htole32(offset);
	e->pointer.size = size;
	return true;
}

static bool loader_checksum(struct kap_fw_cfg *f, const char *file, uint32_t offset, uint32_t start,
			    uint32_t length)
{
	struct loader_entry *e = loader_add(f, LOADER_ADD_CHECKSUM);
	if (!e)
		return false;
	strncpy(e->cksum.file, file, LOADER_FILESZ - 1);
	e->cksum.offset = htole32(offset);
	e->cksum.start = htole32(start);
	e->cksum.length = htole32(length);
	return true;
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

/*
 * The tables x86/acpi.c built at address 0 (vm->fw_acpi), as QEMU offers its own: the RSDP
 * in etc/acpi/rsdp, for the F segment where an OS looks for it (ACPI 6.4 §5.2.5.1), and
 * everything else in etc/acpi/tables, allocated high, 64-byte aligned (the FACS needs it).
 * Built at 0, every pointer already holds its target's offset in the tables file (which
 * keeps the RSDP's bytes, zeroed, so the offsets stay as built): the loader adds the file's
 * address to each — the XSDT's entries, the FADT's DSDT and FACS — and fixes the checksums.
 */
static int fw_cfg_acpi(struct kap_fw_cfg *f, struct kapsel_error **err)
{
	const uint8_t *b = f->vm->fw_acpi;
	size_t n = f->vm->fw_acpi_len;
	if (!b || n < RSDP_LEN || n > UINT32_MAX)
		return kap_error_plain(err, EINVAL, "fw_cfg: no ACPI tables for the firmware");
	f->acpi_tables = malloc(n);
	if (!f->acpi_tables)
		return kap_error(err, ENOMEM, "fw_cfg: ACPI tables");
	memcpy(f->acpi_tables, b, n);
	memset(f->acpi_tables, 0, RSDP_LEN);
	memcpy(f->rsdp, b, RSDP_LEN);
	struct loader_entry *a = loader_add(f, LOADER_ALLOCATE),
			    *t = loader_add(f, LOADER_ALLOCATE);
	strncpy(a->alloc.file, rsdp_file, LOADER_FILESZ - 1);
	a->alloc.align = htole32(16);
	a->alloc.zone = LOADER_ZONE_FSEG;
	strncpy(t->alloc.file, tables_file, LOADER_FILESZ - 1);
	t->alloc.align = htole32(64);
	t->alloc.zone = LOADER_ZONE_HIGH;
	/* RSDP: XsdtAddress at 24 (the RsdtAddress is 0), checksums at 8 (20 bytes), 32 (36). */
	bool ok = loader_pointer(f, rsdp_file, 24, 8) && loader_checksum(f, rsdp_file, 8, 0, 20) &&
		  loader_checksum(f, rsdp_file, 32, 0, RSDP_LEN);
	uint64_t xsdt = get_le64(b + 24);
	if (!ok || xsdt + 36 > n || get_le32(b + xsdt + 4) > n - xsdt)
		return kap_error_plain(err, EINVAL, "fw_cfg: ACPI: bad XSDT");
	uint32_t xlen = get_le32(b + xsdt + 4);
	for (uint32_t o = 36; ok && o + 8 <= xlen; o += 8) {
		uint64_t tab = get_le64(b + xsdt + o);
		if (tab + 36 > n || get_le32(b + tab + 4) > n - tab)
			return kap_error_plain(err, EINVAL, "fw_cfg: ACPI: bad XSDT entry");
		ok = loader_pointer(f, tables_file, (uint32_t)(xsdt + o), 8);
		if (!ok || memcmp(b + tab, "FACP", 4))
			continue;
		/* The FADT's DSDT and FACS pointers, 32- and 64-bit (ACPI 6.4 table 5.9). */
		ok = loader_pointer(f, tables_file, (uint32_t)tab + KAP_FADT_DSDT, 4) &&
		     loader_pointer(f, tables_file, (uint32_t)tab + KAP_FADT_X_DSDT, 8);
		if (ok && get_le64(b + tab + KAP_FADT_X_FIRMWARE_CTRL))
			ok = loader_pointer(f, tables_file, (uint32_t)tab + KAP_FADT_FIRMWARE_CTRL,
					    4) &&
			     loader_pointer(f, tables_file,
					    (uint32_t)tab + KAP_FADT_X_FIRMWARE_CTRL, 8);
		ok = ok && loader_checksum(f, tables_file, (uint32_t)tab + 9, (uint32_t)tab,
					   get_le32(b + tab + 4));
	}
	ok = ok && loader_checksum(f, tables_file, (uint32_t)xsdt + 9, (uint32_t)xsdt, xlen);
	if (!ok)
		return kap_error_plain(err, E2BIG, "fw_cfg: ACPI: more than %d loader commands",
				       LOADER_MAX);
	set(f, FW_CFG_FILE_FIRST + FILE_ACPI_RSDP, f->rsdp, RSDP_LEN);
	set(f, FW_CFG_FILE_FIRST + FILE_ACPI_TABLES, f->acpi_tables, n);
	set(f, FW_CFG_FILE_FIRST + FILE_TABLE_LOADER, f->loader, f->nloader * sizeof(f->loader[0]));
	return 0;
}

static int fw_cfg_build(struct kap_fw_cfg *f, struct kapsel_error **err)
{
	struct kap_vm *vm = f->vm;
	const struct kapsel_vm_config *c = vm->cfg;
	int r;
	memcpy(f->signature, "QEMU", 4);
	put_le32(f->id, FW_CFG_VERSION | FW_CFG_VERSION_DMA);
	uint64_t ram = htole64(vm->mem.size);
	memcpy(f->ram_size, &ram, 8);
	uint16_t one = htole16(1), n = htole16((uint16_t)vm->ncpus);
	memcpy(f->nographic, &one, 2);
	memcpy(f->nb_cpus, &n, 2);
	memcpy(f->max_cpus, &n, 2);
	set(f, FW_CFG_SIGNATURE, f->signature, 4);
	set(f, FW_CFG_ID, f->id, 4);
	set(f, FW_CFG_UUID, f->uuid, 16);
	set(f, FW_CFG_RAM_SIZE, f->ram_size, 8);
	set(f, FW_CFG_NOGRAPHIC, f->nographic, 2);
	set(f, FW_CFG_NB_CPUS, f->nb_cpus, 2);
	set(f, FW_CFG_MAX_CPUS, f->max_cpus, 2);

	if (c->kernel && (r = map_whole("kernel", c->kernel, &f->kernel, &f->kernel_len, err)) < 0)
		return r;
	if (c->initrd && (r = map_whole("initrd", c->initrd, &f->initrd, &f->initrd_len, err)) < 0)
		return r;
	put_le32(f->kernel_size, (uint32_t)f->kernel_len);
	put_le32(f->initrd_size, (uint32_t)f->initrd_len);
	set(f, FW_CFG_KERNEL_SIZE, f->kernel_size, 4);
	set(f, FW_CFG_KERNEL_DATA, f->kernel, f->kernel_len);
	set(f, FW_CFG_INITRD_SIZE, f->initrd_size, 4);
	set(f, FW_CFG_INITRD_DATA, f->initrd, f->initrd_len);
	/* As QEMU: the size counts the terminating NUL, and the data includes it. */
	f->cmdline = strdup(c->cmdline ? c->cmdline : "");
	if (!f->cmdline)
		return kap_error(err, ENOMEM, "fw_cfg: command line");
	size_t clen = strlen(f->cmdline) + 1;
	if (clen > UINT32_MAX)
		return kap_error_plain(err, E2BIG, "fw_cfg: command line longer than 4 GiB");
	put_le32(f->cmdline_size, (uint32_t)clen);
	set(f, FW_CFG_CMDLINE_SIZE, f->cmdline_size, 4);
	set(f, FW_CFG_CMDLINE_DATA, f->cmdline, clen);

	/* etc/e820: QEMU's struct e820_entry (le64 address, le64 length, le32 type), packed. */
	size_t ne = kap_e820_build(vm->mem.low_size, vm->mem.size - vm->mem.low_size, f->e820,
				   KAP_E820_MAX);
	for (size_t i = 0; i < ne; i++) {
		f->e820[i].addr = htole64(f->e820[i].addr);
		f->e820[i].size = htole64(f->e820[i].size);
		f->e820[i].type = htole32(f->e820[i].type);
	}
	set(f, FW_CFG_FILE_FIRST + FILE_E820, f->e820, ne * sizeof(f->e820[0]));

	/*
	 * etc/sercon-port (firmware boot only): SeaBIOS's serial console (src/sercon.c) on COM1,
	 * so a VGA-less machine shows what the firmware and a boot loader print through int 10h.
	 */
	if (c->firmware) {
		uint16_t port = htole16(KAP_SERIAL_PORT);
		memcpy(f->sercon, &port, 2);
		set(f, FW_CFG_FILE_FIRST + FILE_SERCON, f->sercon, 2);
		if ((r = fw_cfg_acpi(f, err)) < 0)
			return r;
	}

	static const char *const names[NFILES] = {
	    [FILE_E820] = "etc/e820",
	    [FILE_SERCON] = "etc/sercon-port",
	    [FILE_ACPI_RSDP] = rsdp_file,
	    [FILE_ACPI_TABLES] = tables_file,
	    [FILE_TABLE_LOADER] = "etc/table-loader",
	};
	uint32_t nfiles = 0;
	for (unsigned int i = 0; i < NFILES; i++) {
		if (!f->items[FW_CFG_FILE_FIRST + i].len)
			continue;
		struct file_entry *e = &f->dir.e[nfiles++];
		e->size = htobe32(f->items[FW_CFG_FILE_FIRST + i].len);
		e->select = htobe16((uint16_t)(FW_CFG_FILE_FIRST + i));
		strncpy(e->name, names[i], sizeof(e->name) - 1);
	}
	f->dir.count = htobe32(nfiles);
	set(f, FW_CFG_FILE_DIR, &f->dir, sizeof(f->dir.count) + nfiles * sizeof(f->dir.e[0]));
	return 0;
}

/* Selects key (a selector value): an unknown key, or any arch-local one, selects nothing. */
static void select_key(struct kap_fw_cfg *f, uint16_t selector)
{
	unsigned int key = selector & ~(unsigned int)(FW_CFG_WRITE_CHANNEL | FW_CFG_ARCH_LOCAL);
	f->cur =
	    (selector & FW_CFG_ARCH_LOCAL) || key >= NITEMS || !f->items[key].len ? NITEMS : key;
	f->off = 0;
}

/* Copies up to len bytes of the selected item to out, zeros past its end; advances. */
static void read_data(struct kap_fw_cfg *f, uint8_t *out, uint64_t len)
{
	uint64_t avail = 0;
	if (f->cur < NITEMS && f->off < f->items[f->cur].len)
		avail = f->items[f->cur].len - f->off;
	uint64_t n = len < avail ? len : avail;
	if (n)
		memcpy(out, f->items[f->cur].data + f->off, n);
	memset(out + n, 0, len - n);
	/* The offset stops at the end: later reads are zeros, and it cannot wrap. */
	f->off += (uint32_t)n;
}

/* One DMA transfer (fw_cfg.rst, "FWCfgDmaAccess"): control is written back last. */
static void dma_run(struct kap_fw_cfg *f, uint64_t gpa)
{
	const struct kap_guest_mem *mem = &f->vm->mem;
	struct dma_access d;
	/* A descriptor outside RAM cannot even carry the error bit back: it is ignored. */
	if (kap_mem_read(mem, gpa, &d, sizeof(d)) < 0)
		return;
	uint32_t control = be32toh(d.control), len = be32toh(d.length);
	uint64_t addr = be64toh(d.address);
	uint32_t status = 0;
	if (control & DMA_CTL_SELECT)
		select_key(f, (uint16_t)(control >> 16));
	if (control & DMA_CTL_WRITE) {
		status = DMA_CTL_ERROR; /* nothing here is writable */
	} else if (control & DMA_CTL_READ) {
		uint8_t *p = len ? kap_mem_ptr(mem, addr, len) : NULL;
		if (len && !p)
			status = DMA_CTL_ERROR;
		else if (len) {
			read_data(f, p, len);
			kap_mem_mark_dirty(mem, addr, len); /* for diff snapshots */
		}
	} else if (control & DMA_CTL_SKIP) {
		uint32_t avail = f->cur < NITEMS ? f->items[f->cur].len - f->off : 0;
		f->off += len < avail ? len : avail;
	}
	uint32_t out = htobe32(status);
	kap_mem_write(mem, gpa + offsetof(struct dma_access, control), &out, sizeof(out));
}

/* Registered at KAP_FW_CFG_PORT, 2 ports: the selector (offset 0) and the data port (1). */
static void fw_cfg_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_fw_cfg *f = dev;
	if (off != 1) {
		memset(data, 0, len); /* the selector is write-only */
		return;
	}
	pthread_mutex_lock(&f->lock);
	read_data(f, data, len);
	pthread_mutex_unlock(&f->lock);
}

static void fw_cfg_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_fw_cfg *f = dev;
	uint16_t sel = 0;
	/* Writes to the data port are ignored, as QEMU has since 2.4. */
	if (off != 0)
		return;
	memcpy(&sel, data, len < 2 ? len : 2);
	pthread_mutex_lock(&f->lock);
	select_key(f, le16toh(sel));
	pthread_mutex_unlock(&f->lock);
}

const struct kap_dev_ops kap_fw_cfg_ops = {
    .name = "fw_cfg",
    .read = fw_cfg_read,
    .write = fw_cfg_write,
};

/* Registered at KAP_FW_CFG_DMA_PORT, 8 ports: reads give "QEMU CFG", writes the address. */
static void fw_cfg_dma_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	(void)dev;
	memset(data, 0, len);
	if (off < sizeof(dma_signature))
		memcpy(data, dma_signature + off,
		       len < sizeof(dma_signature) - off ? len : sizeof(dma_signature) - off);
}

static void fw_cfg_dma_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_fw_cfg *f = dev;
	uint32_t v[2] = {0, 0};
	/* The register is big-endian: the bytes the guest wrote, read as a big-endian number. */
	if (off == 0 && len == 8) {
		memcpy(v, data, 8);
		pthread_mutex_lock(&f->lock);
		dma_run(f, ((uint64_t)be32toh(v[0]) << 32) | be32toh(v[1]));
		pthread_mutex_unlock(&f->lock);
		return;
	}
	if (len != 4 || (off != 0 && off != 4))
		return; /* partial writes of the register mean nothing */
	memcpy(v, data, 4);
	pthread_mutex_lock(&f->lock);
	if (off == 0) {
		f->dma_hi = be32toh(v[0]);
	} else {
		dma_run(f, ((uint64_t)f->dma_hi << 32) | be32toh(v[0]));
		f->dma_hi = 0;
	}
	pthread_mutex_unlock(&f->lock);
}

const struct kap_dev_ops kap_fw_cfg_dma_ops = {
    .name = "fw_cfg-dma",
    .read = fw_cfg_dma_read,
    .write = fw_cfg_dma_write,
};

int kap_fw_cfg_attach(struct kap_vm *vm, struct kap_fw_cfg **out, struct kapsel_error **err)
{
	struct kap_fw_cfg *f = calloc(1, sizeof(*f));
	if (!f)
		return kap_error(err, ENOMEM, "fw_cfg");
	f->vm = vm;
	f->cur = NITEMS;
	pthread_mutex_init(&f->lock, NULL);
	int r = fw_cfg_build(f, err);
	if (r >= 0)
		r = kap_bus_register(&vm->pio, KAP_FW_CFG_PORT, 2, &kap_fw_cfg_ops, f, err);
	if (r >= 0)
		r = kap_bus_register(&vm->pio, KAP_FW_CFG_DMA_PORT, 8, &kap_fw_cfg_dma_ops, f, err);
	/* Even on an error: the bus may hold it already, and it is freed with the VM's devices. */
	*out = f;
	return r < 0 ? r : 0;
}

void kap_fw_cfg_save(struct kap_fw_cfg *f, struct kap_fw_cfg_state *st)
{
	pthread_mutex_lock(&f->lock);
	*st = (struct kap_fw_cfg_state){.cur = f->cur, .off = f->off, .dma_hi = f->dma_hi};
	pthread_mutex_unlock(&f->lock);
}

int kap_fw_cfg_load(struct kap_fw_cfg *f, const struct kap_fw_cfg_state *st, const char **why)
{
	pthread_mutex_lock(&f->lock);
	/* The reads subtract off from the item's length: it must not pass the end. */
	bool ok = st->cur <= NITEMS && (st->cur == NITEMS || st->off <= f->items[st->cur].len);
	if (ok) {
		f->cur = st->cur;
		f->off = st->off;
		f->dma_hi = st->dma_hi;
	}
	pthread_mutex_unlock(&f->lock);
	if (!ok)
		*why = "fw_cfg: selected item or offset out of range";
	return ok ? 0 : -EINVAL;
}
