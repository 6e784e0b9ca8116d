/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ACPI table builder (ACPI 6.4). Hardware-reduced (§4.1) by default: no PM1/GPE blocks and no
 * SCI, so the FADT names the sleep control/status registers for S5 and a reset register, and
 * the DSDT is plain AML with a \_S5 package. Full (--acpi full): a FACS and the fixed hardware
 * (PM1a event and control blocks, PM timer) instead of the sleep registers; the same DSDT. The MADT
 * lists one enabled LAPIC per vCPU (Linux counts CPUs from it), the IOAPIC, the ISA IRQ0 -> GSI2
 * override every PC has, and LINT1 as NMI.
 */
#include <errno.h>
#include <string.h>

#include "core/error.h"
#include "vmm/x86/acpi.h"

#define OEM_ID	     "KAPSEL"
#define OEM_TABLE_ID "KAPSELVM"

uint8_t kap_acpi_checksum(const void *buf, size_t len)
{
	uint8_t sum = 0;
	const uint8_t *p = buf;
	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)(0 - sum);
}

/* ---- a small AML writer (ACPI 6.4 §20) ---- */

struct aml {
	uint8_t *buf;
	size_t len, cap;
	bool overflow;
};

static void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (a->overflow || n > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

/* Opens a PkgLength-prefixed scope: reserves the maximum 4 length bytes. */
static size_t aml_pkg_begin(struct aml *a)
{
	size_t pos = a->len;
	aml_bytes(a, "\0\0\0\0", 4);
	return pos;
}

/* §20.2.4: PkgLength counts itself; 1 byte up to 63, else 2-4 bytes with the low nibble first. */
static void aml_pkg_end(struct aml *a, size_t pos)
{
	if (a->overflow)
		return;
	size_t body = a->len - pos - 4;
	size_t nbytes = body + 1 < 64 ? 1 : body + 2 < (1 << 12) ? 2 : body + 3 < (1 << 20) ? 3 : 4;
	size_t total = body + nbytes;
	uint8_t enc[4];
	if (nbytes == 1) {
		enc[0] = (uint8_t)total;
	} else {
		enc[0] = (uint8_t)(((nbytes - 1) << 6) | (total & 0xf));
		for (size_t i = 1; i < nbytes; i++)
			enc[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	memmove(a->buf + pos + nbytes, a->buf + pos + 4, body);
	memcpy(a->buf + pos, enc, nbytes);
	a->len = pos + nbytes + body;
}

static void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0) {
		aml_byte(a, 0x00); /* ZeroOp */
	} else if (v == 1) {
		aml_byte(a, 0x01); /* OneOp */
	} else if (v <= 0xff) {
		aml_byte(a, 0x0a); /* BytePrefix */
		aml_byte(a, (uint8_t)v);
	} else if (v <= 0xffff) {
		aml_byte(a, 0x0b); /* WordPrefix */
		aml_bytes(a, &(uint16_t){(uint16_t)v}, 2);
	} else if (v <= 0xffffffff) {
		aml_byte(a, 0x0c); /* DWordPrefix */
		aml_bytes(a, &(uint32_t){(uint32_t)v}, 4);
	} else {
		aml_byte(a, 0x0e); /* QWordPrefix */
		aml_bytes(a, &v, 8);
	}
}

static void aml_string(struct aml *a, const char *s)
{
	aml_byte(a, 0x0d); /* StringPrefix */
	aml_bytes(a, s, strlen(s) + 1);
}

/* Name(NAME, ...): the caller writes the value right after. */
static void aml_name(struct aml *a, const char *name4)
{
	aml_byte(a, 0x08); /* NameOp */
	aml_bytes(a, name4, 4);
}

/* "PNP0501" -> the 32-bit compressed EISA id (§6.1.5: three 5-bit letters, four hex digits). */
static uint32_t eisa_id(const char *id)
{
	uint32_t v = ((uint32_t)(id[0] - 0x40) << 26) | ((uint32_t)(id[1] - 0x40) << 21) |
		     ((uint32_t)(id[2] - 0x40) << 16);
	for (int i = 3; i < 7; i++) {
		char c = id[i];
		uint32_t d = (uint32_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
		v |= d << (4 * (6 - i));
	}
	/* Stored big-endian in the DWord. */
	return __builtin_bswap32(v);
}

static bool is_pnp_id(const char *id)
{
	return strlen(id) == 7 && id[0] >= 'A' && id[0] <= 'Z';
}

static void aml_device(struct aml *a, const struct kap_acpi_device *d)
{
	aml_byte(a, 0x5b);
	aml_byte(a, 0x82); /* DeviceOp */
	size_t dev = aml_pkg_begin(a);
	aml_bytes(a, d->name, 4);
	aml_name(a, "_HID");
	if (is_pnp_id(d->hid))
		aml_integer(a, eisa_id(d->hid));
	else
		aml_string(a, d->hid);
	aml_name(a, "_UID");
	aml_integer(a, d->uid);

	/* _CRS: a ResourceTemplate buffer (§6.4). */
	uint8_t rt[64];
	size_t n = 0;
	if (d->mmio) {
		/* Memory32Fixed, read/write (§6.4.3.4). */
		rt[n++] = 0x86;
		rt[n++] = 9;
		rt[n++] = 0;
		rt[n++] = 1;
		uint32_t base = (uint32_t)d->base;
		memcpy(rt + n, &base, 4);
		memcpy(rt + n + 4, &d->len, 4);
		n += 8;
		if (d->irq >= 0) {
			/* Extended Interrupt: consumer, level, active high, exclusive (§6.4.3.6).
			 */
			uint32_t gsi = (uint32_t)d->irq;
			rt[n++] = 0x89;
			rt[n++] = 6;
			rt[n++] = 0;
			rt[n++] = 0x01;
			rt[n++] = 1;
			memcpy(rt + n, &gsi, 4);
			n += 4;
		}
	} else {
		/* I/O port descriptor, 16-bit decode (§6.4.2.5). */
		uint16_t ranges[2][2] = {{(uint16_t)d->base, (uint16_t)d->len},
					 {d->io2_base, d->io2_len}};
		for (int i = 0; i < (d->io2_len ? 2 : 1); i++) {
			rt[n++] = 0x47;
			rt[n++] = 1;
			memcpy(rt + n, &ranges[i][0], 2);
			memcpy(rt + n + 2, &ranges[i][0], 2);
			rt[n + 4] = 1;
			rt[n + 5] = (uint8_t)ranges[i][1];
			n += 6;
		}
		if (d->irq >= 0) {
			/* IRQNoFlags: edge, active high (§6.4.2.1). */
			uint16_t mask = (uint16_t)(1u << d->irq);
			rt[n++] = 0x22;
			memcpy(rt + n, &mask, 2);
			n += 2;
		}
	}
	rt[n++] = 0x79; /* End tag; checksum 0 means "treat as correct" */
	rt[n++] = 0;
	aml_name(a, "_CRS");
	aml_byte(a, 0x11); /* BufferOp */
	size_t buf = aml_pkg_begin(a);
	aml_integer(a, n);
	aml_bytes(a, rt, n);
	aml_pkg_end(a, buf);
	aml_pkg_end(a, dev);
}

static void header(void *p, const char *sig, uint32_t len, uint8_t rev)
{
	struct kap_acpi_header *h = p;
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, OEM_ID, 6);
	memcpy(h->oem_table_id, OEM_TABLE_ID, 8);
	h->oem_revision = 1;
	memcpy(h->creator_id, "KAPS", 4);
	h->creator_revision = 1;
}

static void finish(void *p)
{
	struct kap_acpi_header *h = p;
	h->checksum = 0;
	h->checksum = kap_acpi_checksum(p, h->length);
}

/* Generic Address Structure (§5.2.3.2) for a byte-wide I/O port. */
static void gas_io8(uint8_t *p, uint16_t port)
{
	p[0] = 1; /* System I/O */
	p[1] = 8; /* bit width */
	p[2] = 0; /* bit offset */
	p[3] = 1; /* byte access */
	uint64_t addr = port;
	memcpy(p + 4, &addr, 8);
}

/*
 * \_SB.PCI0 (§6.1, PCI Firmware 3.2 §4.1): without it an ACPI kernel never scans bus 0, since
 * Linux only scans root bridges the DSDT names once ACPI routes PCI interrupts.
 */
static void aml_pci_root(struct aml *a, const struct kap_acpi_config *cfg)
{
	aml_byte(a, 0x5b);
	aml_byte(a, 0x82); /* DeviceOp */
	size_t dev = aml_pkg_begin(a);
	aml_bytes(a, "PCI0", 4);
	aml_name(a, "_HID");
	aml_integer(a, eisa_id("PNP0A03"));
	aml_name(a, "_UID");
	aml_integer(a, 0);
	aml_name(a, "_BBN");
	aml_integer(a, 0);

	uint8_t rt[64];
	size_t n = 0;
	/* WordBusNumber: producer, MinFixed, MaxFixed, bus 0 only (§6.4.3.5.3). */
	static const uint8_t bus[16] = {0x88, 13, 0, 2, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0};
	memcpy(rt + n, bus, sizeof(bus));
	n += sizeof(bus);
	/* IO(Decode16, 0xCF8, 0xCF8, 1, 8): the configuration ports (§6.4.2.5). */
	static const uint8_t io[8] = {0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8};
	memcpy(rt + n, io, sizeof(io));
	n += sizeof(io);
	/* DWordMemory: producer, fixed, non-cacheable, read/write: the BAR window (§6.4.3.5.2). */
	uint32_t mem[5] = {0, (uint32_t)cfg->pci_mmio_base,
			   (uint32_t)(cfg->pci_mmio_base + cfg->pci_mmio_len - 1), 0,
			   (uint32_t)cfg->pci_mmio_len};
	static const uint8_t memhdr[6] = {0x87, 23, 0, 0, 0x0c, 0x01};
	memcpy(rt + n, memhdr, sizeof(memhdr));
	memcpy(rt + n + sizeof(memhdr), mem, sizeof(mem));
	n += sizeof(memhdr) + sizeof(mem);
	rt[n++] = 0x79;
	rt[n++] = 0;
	aml_name(a, "_CRS");
	aml_byte(a, 0x11); /* BufferOp */
	size_t buf = aml_pkg_begin(a);
	aml_integer(a, n);
	aml_bytes(a, rt, n);
	aml_pkg_end(a, buf);

	/* _PRT (§6.2.13): {address 0xSSSSFFFF, pin 0 (INTA#), source 0, GSI} per slot. */
	aml_name(a, "_PRT");
	aml_byte(a, 0x12); /* PackageOp */
	size_t prt = aml_pkg_begin(a);
	unsigned int nslots = cfg->pci_slots > 1 ? cfg->pci_slots - 1 : 0;
	aml_byte(a, (uint8_t)nslots);
	for (unsigned int s = 1; s <= nslots; s++) {
		aml_byte(a, 0x12);
		size_t e = aml_pkg_begin(a);
		aml_byte(a, 4);
		aml_integer(a, (uint64_t)s << 16 | 0xffff);
		aml_integer(a, 0);
		aml_integer(a, 0);
		aml_integer(a, cfg->pci_intx_gsi + (s - 1) % 8);
		aml_pkg_end(a, e);
	}
	aml_pkg_end(a, prt);
	aml_pkg_end(a, dev);
}

/*
 * The power button, as QEMU's microvm and Cloud Hypervisor describe theirs: \_SB.PWRB, a
 * control-method power button (PNP0C0C, §4.8.2.2.1.2; the FADT's PWR_BUTTON flag says "no
 * fixed-feature button"), and \_SB.GED0, a Generic Event Device (ACPI0013, §5.6.9) whose one
 * edge-triggered interrupt runs _EVT, which notifies the button with 0x80 ("pressed",
 * §5.6.6). Works the same with and without hardware-reduced ACPI (Linux's GED driver is
 * built in; its button driver turns the notification into KEY_POWER).
 */
static void aml_power_button(struct aml *a, uint32_t gsi)
{
	aml_byte(a, 0x5b);
	aml_byte(a, 0x82); /* DeviceOp */
	size_t dev = aml_pkg_begin(a);
	aml_bytes(a, "PWRB", 4);
	aml_name(a, "_HID");
	aml_integer(a, eisa_id("PNP0C0C"));
	aml_name(a, "_UID");
	aml_integer(a, 0);
	aml_pkg_end(a, dev);

	aml_byte(a, 0x5b);
	aml_byte(a, 0x82); /* DeviceOp */
	dev = aml_pkg_begin(a);
	aml_bytes(a, "GED0", 4);
	aml_name(a, "_HID");
	aml_string(a, "ACPI0013");
	aml_name(a, "_UID");
	aml_integer(a, 0);
	/* Extended Interrupt: consumer, edge, active high, exclusive, one GSI (§6.4.3.6). */
	uint8_t rt[] = {0x89, 6, 0, 0x03, 1, 0, 0, 0, 0, 0x79, 0};
	memcpy(rt + 5, &gsi, 4);
	aml_name(a, "_CRS");
	aml_byte(a, 0x11); /* BufferOp */
	size_t buf = aml_pkg_begin(a);
	aml_integer(a, sizeof(rt));
	aml_bytes(a, rt, sizeof(rt));
	aml_pkg_end(a, buf);
	/* Method(_EVT, 1) { Notify(\_SB.PWRB, 0x80) } */
	aml_byte(a, 0x14); /* MethodOp */
	size_t m = aml_pkg_begin(a);
	aml_bytes(a, "_EVT", 4);
	aml_byte(a, 0x01);		    /* one argument, not serialized */
	aml_byte(a, 0x86);		    /* NotifyOp */
	aml_bytes(a, "\\\x2e_SB_PWRB", 10); /* RootChar, DualNamePrefix */
	aml_integer(a, 0x80);
	aml_pkg_end(a, m);
	aml_pkg_end(a, dev);
}

static size_t build_dsdt(uint8_t *p, size_t cap, const struct kap_acpi_config *cfg, bool *ovf)
{
	struct aml a = {.buf = p, .cap = cap};
	aml_bytes(&a, (uint8_t[36]){0}, 36);
	aml_byte(&a, 0x10); /* ScopeOp */
	size_t scope = aml_pkg_begin(&a);
	aml_bytes(&a, "\\_SB_", 5);
	for (size_t i = 0; i < cfg->ndevices; i++)
		aml_device(&a, &cfg->devices[i]);
	if (cfg->pci)
		aml_pci_root(&a, cfg);
	if (cfg->power_button_gsi)
		aml_power_button(&a, cfg->power_button_gsi);
	aml_pkg_end(&a, scope);
	/* \_S5: Package(4) {SLP_TYPa, SLP_TYPb, reserved, reserved} (§7.4.2). */
	aml_name(&a, "_S5_");
	aml_byte(&a, 0x12); /* PackageOp */
	size_t pkg = aml_pkg_begin(&a);
	aml_byte(&a, 4);
	aml_byte(&a, 0x0a);
	aml_byte(&a, cfg->s5_slp_typ);
	aml_byte(&a, 0x0a);
	aml_byte(&a, cfg->s5_slp_typ);
	aml_integer(&a, 0);
	aml_integer(&a, 0);
	aml_pkg_end(&a, pkg);
	/* \_S3 likewise, when suspend-to-RAM is offered (--acpi full; acpi-pm.c, pause.c). */
	if (cfg->s3_slp_typ) {
		aml_name(&a, "_S3_");
		aml_byte(&a, 0x12); /* PackageOp */
		pkg = aml_pkg_begin(&a);
		aml_byte(&a, 4);
		aml_byte(&a, 0x0a);
		aml_byte(&a, cfg->s3_slp_typ);
		aml_byte(&a, 0x0a);
		aml_byte(&a, cfg->s3_slp_typ);
		aml_integer(&a, 0);
		aml_integer(&a, 0);
		aml_pkg_end(&a, pkg);
	}
	*ovf = a.overflow;
	if (a.overflow)
		return 0;
	header(p, "DSDT", (uint32_t)a.len, 2);
	finish(p);
	return a.len;
}

static size_t build_madt(uint8_t *p, size_t cap, const struct kap_acpi_config *cfg)
{
	size_t len = 44 + cfg->ncpus * 8 + 12 + 10 + 6;
	if (len > cap)
		return 0;
	memset(p, 0, len);
	uint32_t lapic = (uint32_t)cfg->lapic_addr, flags = 1; /* PCAT_COMPAT: 8259s present */
	memcpy(p + 36, &lapic, 4);
	memcpy(p + 40, &flags, 4);
	uint8_t *e = p + 44;
	for (unsigned int i = 0; i < cfg->ncpus; i++) {
		/* Processor Local APIC (§5.2.12.2): UID, APIC id, enabled. */
		e[0] = 0;
		e[1] = 8;
		e[2] = (uint8_t)i;
		e[3] = (uint8_t)i;
		uint32_t en = 1;
		memcpy(e + 4, &en, 4);
		e += 8;
	}
	/* I/O APIC (§5.2.12.3): id = ncpus (after the LAPIC ids), GSI base 0. */
	e[0] = 1;
	e[1] = 12;
	e[2] = (uint8_t)cfg->ncpus;
	uint32_t ioapic = (uint32_t)cfg->ioapic_addr;
	memcpy(e + 4, &ioapic, 4);
	e += 12;
	/* Interrupt Source Override (§5.2.12.5): ISA IRQ 0 (PIT) on GSI 2, bus-conforming. */
	e[0] = 2;
	e[1] = 10;
	e[2] = 0;
	e[3] = 0;
	uint32_t gsi = 2;
	memcpy(e + 4, &gsi, 4);
	e += 10;
	/* Local APIC NMI (§5.2.12.7): all processors, LINT1. */
	e[0] = 4;
	e[1] = 6;
	e[2] = 0xff;
	e[5] = 1;
	header(p, "APIC", (uint32_t)len, 5);
	finish(p);
	return len;
}

/* A System I/O generic address of width bits at port (§5.2.3.2); access size by width. */
static void gas_io(uint8_t *p, uint16_t port, uint8_t width)
{
	gas_io8(p, port);
	p[1] = width;
	p[3] = width == 32 ? 3 : width == 16 ? 2 : 1;
}

/*
 * The fixed-hardware part of a full FADT (§5.2.9, table 5.9): PM1a event (status + enable,
 * 4 bytes), PM1a control (2 bytes) and the 32-bit PM timer (TMR_VAL_EXT), both as the 32-bit
 * block fields and the X_ generic addresses; SCI_INT; no C2/C3 (latencies above 100 and
 * 1000 us mean "not supported"); no SMI_CMD, so the OS finds the machine in ACPI mode.
 */
static void fadt_fixed_hw(uint8_t *p, const struct kap_acpi_config *cfg, uint64_t facs)
{
	uint32_t facs32 = (uint32_t)facs;
	memcpy(p + KAP_FADT_FIRMWARE_CTRL, &facs32, 4);
	memcpy(p + KAP_FADT_X_FIRMWARE_CTRL, &facs, 8);
	uint16_t sci = cfg->sci_irq;
	memcpy(p + KAP_FADT_SCI_INT, &sci, 2);
	uint32_t evt = cfg->pm1a_evt_port, cnt = cfg->pm1a_cnt_port, tmr = cfg->pm_tmr_port;
	memcpy(p + KAP_FADT_PM1A_EVT_BLK, &evt, 4);
	memcpy(p + KAP_FADT_PM1A_CNT_BLK, &cnt, 4);
	memcpy(p + KAP_FADT_PM_TMR_BLK, &tmr, 4);
	p[KAP_FADT_PM1_EVT_LEN] = 4;
	p[KAP_FADT_PM1_CNT_LEN] = 2;
	p[KAP_FADT_PM_TMR_LEN] = 4;
	uint16_t c2 = 101, c3 = 1001;
	memcpy(p + KAP_FADT_P_LVL2_LAT, &c2, 2);
	memcpy(p + KAP_FADT_P_LVL3_LAT, &c3, 2);
	gas_io(p + KAP_FADT_X_PM1A_EVT_BLK, cfg->pm1a_evt_port, 32);
	gas_io(p + KAP_FADT_X_PM1A_CNT_BLK, cfg->pm1a_cnt_port, 16);
	gas_io(p + KAP_FADT_X_PM_TMR_BLK, cfg->pm_tmr_port, 32);
}

/*
 * FACS (§5.2.10): no checksum; hardware signature 0 (the machine never changes under a
 * sleeping guest), no waking vector until the OS writes one, no global lock users.
 */
static void build_facs(uint8_t *p)
{
	memset(p, 0, KAP_FACS_LENGTH);
	memcpy(p, "FACS", 4);
	uint32_t len = KAP_FACS_LENGTH;
	memcpy(p + 4, &len, 4);
	p[32] = 2; /* version */
}

static size_t build_fadt(uint8_t *p, size_t cap, const struct kap_acpi_config *cfg, uint64_t dsdt,
			 uint64_t facs)
{
	if (cap < KAP_FADT_LENGTH)
		return 0;
	memset(p, 0, KAP_FADT_LENGTH);
	uint32_t dsdt32 = (uint32_t)dsdt;
	memcpy(p + KAP_FADT_DSDT, &dsdt32, 4);
	memcpy(p + KAP_FADT_X_DSDT, &dsdt, 8);
	p[KAP_FADT_CENTURY] = cfg->rtc_century_reg;
	/* IA-PC boot architecture: legacy devices, an 8042, no VGA (§5.2.9.3). */
	uint16_t boot_arch = (1u << 0) | (1u << 1) | (1u << 2);
	memcpy(p + KAP_FADT_IAPC_BOOT_ARCH, &boot_arch, 2);
	/* WBINVD works, power and sleep buttons are control methods (none), reset register. */
	uint32_t flags = (1u << 0) | (1u << 4) | (1u << 5) | KAP_FADT_RESET_REG_SUP |
			 (cfg->full ? KAP_FADT_TMR_VAL_EXT : KAP_FADT_HW_REDUCED);
	memcpy(p + KAP_FADT_FLAGS, &flags, 4);
	gas_io8(p + KAP_FADT_RESET_REG, cfg->reset_port);
	p[KAP_FADT_RESET_VALUE] = cfg->reset_value;
	p[KAP_FADT_MINOR] = 4;
	if (cfg->full) {
		fadt_fixed_hw(p, cfg, facs);
	} else {
		gas_io8(p + KAP_FADT_SLEEP_CONTROL, cfg->sleep_control_port);
		gas_io8(p + KAP_FADT_SLEEP_STATUS, cfg->sleep_status_port);
	}
	memcpy(p + KAP_FADT_HYPERVISOR_ID, "KAPSELVM", 8);
	header(p, "FACP", KAP_FADT_LENGTH, 6);
	finish(p);
	return KAP_FADT_LENGTH;
}

int kap_acpi_build(uint8_t *buf, size_t size, uint64_t gpa, const struct kap_acpi_config *cfg,
		   size_t *used, struct kapsel_error **err)
{
	/* Layout: RSDP, then XSDT, FADT, MADT, DSDT, each 16-byte aligned. */
	size_t off = 0;
#define ALIGN16(x) (((x) + 15) & ~(size_t)15)
	if (size < sizeof(struct kap_acpi_rsdp) + 36 + 16)
		return kap_error_plain(err, ENOSPC, "ACPI: no room for the tables");
	/*
	 * Only the bytes the tables use are cleared: buf is guest RAM, and every page written
	 * here is a page the VMM keeps resident.
	 */
	size_t rsdp_off = off;
	off = ALIGN16(off + sizeof(struct kap_acpi_rsdp));
	size_t xsdt_off = off, xsdt_len = 36 + 2 * 8;
	off = ALIGN16(off + xsdt_len);
	size_t fadt_off = off;
	off = ALIGN16(off + KAP_FADT_LENGTH);
	/* The FACS is 64-byte aligned (§5.2.10). */
	size_t facs_off = 0;
	if (cfg->full) {
		facs_off = (off + 63) & ~(size_t)63;
		off = facs_off + KAP_FACS_LENGTH;
	}
	if (off > size)
		return kap_error_plain(err, ENOSPC, "ACPI: no room for the tables");
	size_t madt_off = off;
	memset(buf, 0, madt_off);
	size_t madt_len = build_madt(buf + madt_off, size - madt_off, cfg);
	if (!madt_len)
		return kap_error_plain(err, ENOSPC, "ACPI: no room for the MADT");
	off = ALIGN16(off + madt_len);
	if (off > size)
		return kap_error_plain(err, ENOSPC, "ACPI: no room for the DSDT");
	size_t dsdt_off = off;
	memset(buf + madt_off + madt_len, 0, dsdt_off - (madt_off + madt_len));
	bool ovf;
	size_t dsdt_len = build_dsdt(buf + dsdt_off, size - dsdt_off, cfg, &ovf);
	if (ovf)
		return kap_error_plain(err, ENOSPC, "ACPI: no room for the DSDT");
	off += dsdt_len;
	if (cfg->full)
		build_facs(buf + facs_off);
	build_fadt(buf + fadt_off, KAP_FADT_LENGTH, cfg, gpa + dsdt_off,
		   cfg->full ? gpa + facs_off : 0);

	uint64_t ent[2] = {gpa + fadt_off, gpa + madt_off};
	memcpy(buf + xsdt_off + 36, ent, sizeof(ent));
	header(buf + xsdt_off, "XSDT", (uint32_t)xsdt_len, 1);
	finish(buf + xsdt_off);

	struct kap_acpi_rsdp *r = (struct kap_acpi_rsdp *)(buf + rsdp_off);
	memcpy(r->signature, "RSD PTR ", 8);
	memcpy(r->oem_id, OEM_ID, 6);
	r->revision = 2;
	r->length = sizeof(*r);
	r->xsdt_address = gpa + xsdt_off;
	r->checksum = kap_acpi_checksum(r, 20);
	r->extended_checksum = kap_acpi_checksum(r, sizeof(*r));
	*used = off;
	return 0;
#undef ALIGN16
}
