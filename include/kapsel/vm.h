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

/*
 * The image format of a disk. Without format= a disk is raw, whatever it holds: a guest owns
 * its raw disk's bytes and could write a qcow2 header naming a host file as its backing file
 * (docs/security.md, issue 10). Only an explicit format=auto looks at the magic.
 */
enum kapsel_vm_disk_format {
	KAPSEL_VM_DISK_DEFAULT, /* no format=: raw; a qcow2 magic gets a warning */
	KAPSEL_VM_DISK_RAW,
	KAPSEL_VM_DISK_QCOW2,
	KAPSEL_VM_DISK_AUTO, /* format=auto: qcow2 when the file starts with its magic */
};

/*
 * A virtio-blk disk:
 * --disk PATH[,ro][,serial=S][,cache=none|writeback][,format=raw|qcow2|auto][,id=ID].
 */
struct kapsel_vm_disk {
	char *id; /* "disk0", "disk1"... unless given */
	char *path;
	char *serial; /* at most 20 bytes (VIRTIO_BLK_ID_BYTES) */
	bool ro;
	enum kapsel_vm_cache cache;
	enum kapsel_vm_disk_format format; /* format=raw|qcow2|auto; raw when not given */
};

#define KAPSEL_VM_MAX_DISKS 6

/*
 * A virtio-net card: --net tap=NAME[,mac=M][,id=ID] (an existing tap) or
 * --net bridge=BR[,mac=M][,id=ID] (kapsel creates a tap on BR for the VM's lifetime).
 */
struct kapsel_vm_net {
	char *id;  /* "net0", "net1"... unless given */
	char *tap; /* exactly one of tap and bridge */
	char *bridge;
	uint8_t mac[6];
	bool has_mac; /* else a random locally administered unicast address */
};

#define KAPSEL_VM_MAX_NETS 4

/*
 * A virtio-balloon (docs/vm.md, Memory balloon):
 * --balloon [amount_mib=N,][deflate_on_oom=on,][stats_interval_s=N,][free_page_reporting=on].
 */
struct kapsel_vm_balloon {
	bool enabled;
	uint64_t amount_mib;	       /* the initial target: MiB the guest should give back */
	bool deflate_on_oom;	       /* VIRTIO_BALLOON_F_DEFLATE_ON_OOM */
	unsigned int stats_interval_s; /* 0: no statistics queue */
	bool free_page_reporting;      /* VIRTIO_BALLOON_F_REPORTING */
};

/*
 * A virtio-fs share: --fs tag=NAME,path=DIR[,ro]. The guest mounts it with
 * `mount -t virtiofs NAME /mnt` (docs/vm.md, virtio-fs).
 */
struct kapsel_vm_fs {
	char *tag; /* 1-36 bytes of letters, digits, '.', '-', '_' (virtio 1.2 §5.11.4) */
	char *path;
	bool ro; /* every change answers EROFS */
};

#define KAPSEL_VM_MAX_FS 4

/* How virtio devices reach the guest: --transport pci|mmio. */
enum kapsel_vm_transport {
	KAPSEL_VM_TRANSPORT_PCI, /* the default: modern virtio-pci behind a host bridge */
	KAPSEL_VM_TRANSPORT_MMIO,
};

/*
 * Which CPU runs the guest: --accel kvm|soft|auto (docs/vm.md, Accelerators). auto (the
 * default) is KVM when /dev/kvm opens and KVM_CREATE_VM works, else the soft CPU.
 */
enum kapsel_vm_accel {
	KAPSEL_VM_ACCEL_AUTO,
	KAPSEL_VM_ACCEL_KVM,
	KAPSEL_VM_ACCEL_SOFT, /* kapsel's own x86 interpreter (vmm/soft/) */
};

struct kapsel_vm_config {
	char *kernel;	   /* required */
	char *initrd;	   /* optional */
	char *cmdline;	   /* optional */
	uint64_t mem_size; /* bytes; KAPSEL_VM_DEFAULT_MEM when 0 */
	/*
	 * Guest RAM in a shareable memfd rather than anonymous memory advised for transparent
	 * huge pages (the default): for snapshots and device processes, at the price of THP.
	 */
	bool mem_shared;
	/* --mem-hugepages: guest RAM on reserved 2 MiB hugetlbfs pages (a memfd, MFD_HUGETLB) */
	bool mem_hugepages;
	/* --mem-merge: guest RAM advised MADV_MERGEABLE, so KSM may merge identical pages */
	bool mem_merge;
	enum kapsel_vm_accel accel;
	unsigned int cpus;  /* 1 when 0 */
	char *cpu_model;    /* "host" (NULL), "max", "x86-64-v2", ...: a named feature set */
	char *cpu_features; /* "-xsave,-avx,+x2apic": CPUID bits to mask or keep */
	enum kapsel_vm_console console;
	char *console_path;
	bool no_debug_exit;
	/* --acpi full: a full FADT with FACS, PM1a blocks and a PM timer (docs/vm.md, ACPI) */
	bool acpi_full;
	/*
	 * No in-kernel i8254 PIT (QEMU microvm's pit=off). Linux on kapsel's hardware-reduced
	 * ACPI never uses it; its teardown is the largest part of a short VM's exit time.
	 */
	bool no_pit;
	struct kapsel_vm_disk disks[KAPSEL_VM_MAX_DISKS];
	unsigned int ndisks;
	bool rng; /* a virtio-rng device */
	struct kapsel_vm_net nets[KAPSEL_VM_MAX_NETS];
	unsigned int nnets;
	bool virtio_console; /* hvc0: console input goes to it instead of the UART */
	struct kapsel_vm_fs fs[KAPSEL_VM_MAX_FS];
	unsigned int nfs;
	/* virtio-vsock: guest CID (>= 3) and the host's unix socket; vsock_path NULL: none. */
	uint32_t vsock_cid;
	char *vsock_path;
	enum kapsel_vm_transport transport;
	struct kapsel_vm_balloon balloon;
	/* Also name the virtio-mmio devices on the command line (virtio_mmio.device=...). */
	bool virtio_mmio_cmdline;
	/*
	 * The control API (docs/vm.md, Control API). name: the VM's name, which gives it the
	 * directory <runtime_dir>/vm/<name> (state.json and, unless api_sock says otherwise,
	 * api.sock); api_sock: where to serve the API. Neither: no API.
	 */
	char *name;
	char *api_sock;
	char *runtime_dir; /* kapsel's --root */
	/*
	 * Restore (docs/vm.md, Snapshot format): instead of booting kernel, continue the VM saved
	 * in these files. The machine's shape comes from the state file; cpus, mem_size and
	 * cpu_features, when set, must match it.
	 */
	char *restore_mem;
	char *restore_state;
	/*
	 * Live migration's destination (docs/vm.md, Live migration): instead of booting kernel,
	 * wait on "unix:PATH" or "tcp:127.0.0.1:PORT" for a source's stream; the machine options
	 * must match the source's.
	 */
	char *incoming;
	/*
	 * Firmware boot (docs/vm.md, Firmware boot): a BIOS image (SeaBIOS's bios.bin) that boots
	 * the first disk instead of a kernel kapsel loads; its debug port 0x402 log goes to
	 * firmware_log (NULL: dropped). Excludes kernel, initrd and cmdline.
	 */
	char *firmware;
	char *firmware_log;
	/*
	 * --jail (docs/vm.md, Jailer): the VMM runs in its own namespaces, root and cgroup, as
	 * jail_uid/jail_gid on the host (never 0; KAPSEL_VM_JAIL_DEFAULT_ID unless given), without
	 * capabilities, each thread under its own seccomp filter.
	 */
	bool jail;
	uint32_t jail_uid, jail_gid;
};

/* The host uid and gid of a jailed VMM when --jail-uid/--jail-gid are not given. */
#define KAPSEL_VM_JAIL_DEFAULT_ID 65534u

/* Frees the strings of c (not c itself) and zeroes it. */
void kapsel_vm_config_clear(struct kapsel_vm_config *c);

/*
 * Reads a vm.json ({"kernel", "initrd", "cmdline", "mem": "256M" or bytes, "cpus",
 * "cpu_model", "cpu_features", "acpi": "reduced|full", "console": "stdio|file:PATH|none",
 * "debug_exit": bool, "pit": bool, "transport": "pci|mmio", "disks": ["--disk syntax", ...],
 * "nets": ["--net syntax", ...], "fs": ["--fs syntax", ...], "vsock": "--vsock syntax",
 * "rng", "virtio_console", "virtio_mmio_cmdline": bool, "balloon": {"amount_mib": N,
 * "deflate_on_oom": bool, "stats_interval_s": N, "free_page_reporting": bool}, "firmware",
 * "firmware_log"}) into c, replacing the fields it names and adding its devices. Errors name
 * the JSON path.
 */
int kapsel_vm_config_load(const char *path, struct kapsel_vm_config *c, struct kapsel_error **err);

/* "256M", "1G", "65536K", "1048576": bytes. -EINVAL when malformed or zero. */
int kapsel_vm_parse_size(const char *s, uint64_t *out);
/*
 * Appends the disk described by s
 * ("PATH[,ro][,serial=S][,cache=none|writeback][,format=raw|qcow2|auto][,id=ID]") to c->disks.
 * Errors name the bad option; duplicate ids are refused.
 */
int kapsel_vm_parse_disk(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err);
/*
 * Appends the card described by s ("tap=NAME[,mac=M][,id=ID]" or "bridge=BR[,mac=M][,id=ID]")
 * to c->nets. Errors name the bad option; duplicate ids are refused.
 */
int kapsel_vm_parse_net(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err);
/*
 * Appends the share described by s ("tag=NAME,path=DIR[,ro]") to c->fs. DIR must be a
 * directory; errors name the bad option; duplicate tags are refused.
 */
int kapsel_vm_parse_fs(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err);
/* "cid=N,socket=PATH" (N >= 3) into c->vsock_cid / c->vsock_path; one vsock per VM. */
int kapsel_vm_parse_vsock(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err);
/*
 * "" or "amount_mib=N,deflate_on_oom=on|off,stats_interval_s=N,free_page_reporting=on|off"
 * (any subset) into c->balloon, enabling it. Errors name the bad option.
 */
int kapsel_vm_parse_balloon(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err);
/* "reduced" or "full" into c->acpi_full. -EINVAL when unknown. */
int kapsel_vm_parse_acpi(const char *s, struct kapsel_vm_config *c);
/* "kvm", "soft" or "auto" into c->accel. -EINVAL when unknown. */
int kapsel_vm_parse_accel(const char *s, struct kapsel_vm_config *c);
/* "pci" or "mmio" into c->transport. -EINVAL when unknown. */
int kapsel_vm_parse_transport(const char *s, struct kapsel_vm_config *c);
/* "stdio", "none", "file:PATH" into c->console / c->console_path. -EINVAL when unknown. */
int kapsel_vm_parse_console(const char *s, struct kapsel_vm_config *c);

/*
 * Creates path as a qcow2 v3 image (64 KiB clusters, 16-bit refcounts) of size bytes, rounded up
 * to 512. With backing the image is an overlay over it, and size 0 means the backing file's
 * size. backing is a name relative to path's directory and beneath it (no "..", not absolute:
 * the rule every backing file must meet when the image is opened); it is recorded as given,
 * with its format in the backing-format header extension: backing_format ("raw" or "qcow2"),
 * or, when NULL, what the backing file's magic says. An existing path is not overwritten
 * (-EEXIST). *format_out, when not NULL, gets the backing format recorded (static string).
 */
int kapsel_vm_disk_create(const char *path, uint64_t size, const char *backing,
			  const char *backing_format, const char **format_out,
			  struct kapsel_error **err);

/*
 * Boots the guest and runs it until it ends. Returns the exit status the CLI should use
 * (0 on power-off or reset, (C << 1) | 1 after a debug-exit write of C, the code of a
 * power-off hypercall), or -errno with *err set when the VM cannot start or the guest faults
 * (triple fault, KVM internal error, failed entry), or when SIGINT/SIGTERM stopped it.
 */
int kapsel_vm_run(const struct kapsel_vm_config *c, struct kapsel_error **err);

/* ---- the control API's client side (docs/vm.md, Control API) ---- */

/* A VM name: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}. */
bool kapsel_vm_name_valid(const char *name);

/*
 * The API socket of VM name under runtime_dir (from its state.json), into *path (malloc'd).
 * -ENOENT with "vm NAME: no such VM" when there is none or it is no longer running (a stale
 * directory left by a killed VMM is removed).
 */
int kapsel_vm_api_path(const char *runtime_dir, const char *name, char **path,
		       struct kapsel_error **err);

/*
 * One request to the API socket at path: method, target, an optional JSON body. Returns the
 * HTTP status with the response body in *body (malloc'd, NUL-terminated), or -errno.
 */
int kapsel_vm_api_call(const char *path, const char *method, const char *target, const char *json,
		       char **body, struct kapsel_error **err);
/*
 * PUT /migrate with body json to the VMM at path; a jailed VMM gets the connection to dest,
 * dialled here, with it (docs/vm.md, Live migration). As kapsel_vm_api_call.
 */
int kapsel_vm_api_migrate(const char *path, const char *json, const char *dest, char **body,
			  struct kapsel_error **err);

/* What GET / of a VM's API says. */
struct kapsel_vm_info {
	char *id, *state, *kernel, *started, *api_socket;
	int64_t pid, vcpus;
	uint64_t mem_mib;
};

void kapsel_vm_info_clear(struct kapsel_vm_info *i);

/*
 * GET / of VM name under runtime_dir: into *info when not NULL, and the response's JSON
 * into *json (malloc'd) when not NULL. -ENOENT "vm NAME: no such VM" when it is not running.
 */
int kapsel_vm_inspect(const char *runtime_dir, const char *name, struct kapsel_vm_info *info,
		      char **json, struct kapsel_error **err);

/* The names of the VMs running under runtime_dir, sorted; stale directories are removed. */
int kapsel_vm_list(const char *runtime_dir, char ***names, size_t *n, struct kapsel_error **err);
