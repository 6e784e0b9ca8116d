/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kapsel's VM engine: a KVM micro-VM monitor. One call runs a guest to its end; docs/vm.md
 * describes the machine the guest sees.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include <kapsel/error.h>

enum kapsel_vm_console {
	KAPSEL_VM_CONSOLE_STDIO, /* stdout; stdin is the UART's input (raw mode on a tty) */
	KAPSEL_VM_CONSOLE_FILE,	 /* output appended to console_path; no input */
	KAPSEL_VM_CONSOLE_NONE,
};

#define KAPSEL_VM_DEFAULT_MEM (256ULL << 20)

enum kapsel_vm_cache {
	KAPSEL_VM_CACHE_WRITEBACK, /* the host page cache; flush is fdatasync */
	KAPSEL_VM_CACHE_NONE,	   /* O_DIRECT */
};

/* A virtio-blk disk: --disk PATH[,ro][,serial=S][,cache=none|writeback][,id=ID]. */
struct kapsel_vm_disk {
	char *id; /* "disk0", "disk1"... unless given */
	char *path;
	char *serial; /* at most 20 bytes (VIRTIO_BLK_ID_BYTES) */
	bool ro;
	enum kapsel_vm_cache cache;
};

#define KAPSEL_VM_MAX_DISKS 6

struct kapsel_vm_config {
	char *kernel;	    /* required */
	char *initrd;	    /* optional */
	char *cmdline;	    /* optional */
	uint64_t mem_size;  /* bytes; KAPSEL_VM_DEFAULT_MEM when 0 */
	unsigned int cpus;  /* 1 when 0 */
	char *cpu_features; /* "-xsave,-avx,+x2apic": CPUID bits to mask or keep */
	enum kapsel_vm_console console;
	char *console_path;
	bool no_debug_exit;
	struct kapsel_vm_disk disks[KAPSEL_VM_MAX_DISKS];
	unsigned int ndisks;
	bool rng; /* a virtio-rng device */
	/* Also name the virtio-mmio devices on the command line (virtio_mmio.device=...). */
	bool virtio_mmio_cmdline;
};

/* Frees the strings of c (not c itself) and zeroes it. */
void kapsel_vm_config_clear(struct kapsel_vm_config *c);

/*
 * Reads a vm.json ({"kernel", "initrd", "cmdline", "mem": "256M" or bytes, "cpus",
 * "cpu_features", "console": "stdio|file:PATH|none", "debug_exit": bool}) into c, replacing
 * the fields it names. Errors name the JSON path.
 */
int kapsel_vm_config_load(const char *path, struct kapsel_vm_config *c, struct kapsel_error **err);

/* "256M", "1G", "65536K", "1048576": bytes. -EINVAL when malformed or zero. */
int kapsel_vm_parse_size(const char *s, uint64_t *out);
/*
 * Appends the disk described by s ("PATH[,ro][,serial=S][,cache=none|writeback][,id=ID]") to
 * c->disks. Errors name the bad option; duplicate ids are refused.
 */
int kapsel_vm_parse_disk(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err);
/* "stdio", "none", "file:PATH" into c->console / c->console_path. -EINVAL when unknown. */
int kapsel_vm_parse_console(const char *s, struct kapsel_vm_config *c);

/*
 * Boots the guest and runs it until it ends. Returns the exit status the CLI should use
 * (0 on power-off or reset, (C << 1) | 1 after a debug-exit write of C, the code of a
 * power-off hypercall), or -errno with *err set when the VM cannot start or the guest faults
 * (triple fault, KVM internal error, failed entry), or when SIGINT/SIGTERM stopped it.
 */
int kapsel_vm_run(const struct kapsel_vm_config *c, struct kapsel_error **err);
