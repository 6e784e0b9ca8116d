/* SPDX-License-Identifier: Apache-2.0 */
/* kapsel vm run: boot a kernel in a KVM micro-VM (docs/vm.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <kapsel/vm.h>

#include "commands.h"

static const char run_usage[] =
    "Usage: kapsel vm run --kernel FILE [options]\n"
    "       kapsel vm run --firmware BIOS --disk IMAGE [options]\n"
    "\n"
    "Boot FILE (a bzImage, a PVH ELF such as vmlinux, or a multiboot kernel) in a KVM\n"
    "micro-VM. Exit status: 0 when the guest powers off or resets, (C << 1) | 1 after it\n"
    "writes C to the debug-exit port 0xf4, the code of a power-off hypercall, 1 on an error\n"
    "or a guest fault, 128+N when signal N stopped the VM.\n"
    "\n"
    "Options:\n"
    "  --kernel FILE           the kernel to boot (required)\n"
    "  --initrd FILE           an initrd (the first multiboot module)\n"
    "  --cmdline STR           the kernel command line\n"
    "  --firmware FILE         boot a legacy BIOS image (64, 128 or 256 KiB, such as\n"
    "                          /usr/share/seabios/bios.bin) instead of a kernel: it boots\n"
    "                          the first disk's boot loader (docs/vm.md, Firmware boot)\n"
    "  --firmware-log FILE     write what the firmware prints on port 0x402 to FILE\n"
    "  --mem SIZE              guest RAM, with a K, M or G suffix (default 256M)\n"
    "  --mem-shared            guest RAM in a shareable memfd (default: anonymous memory\n"
    "                          on transparent huge pages)\n"
    "  --mem-hugepages         guest RAM on reserved 2 MiB huge pages (hugetlbfs memfd;\n"
    "                          needs --mem / 2 MiB free in HugePages_Free)\n"
    "  --mem-merge             let KSM merge identical guest pages (MADV_MERGEABLE)\n"
    "  --accel kvm|soft|auto   the CPU: KVM, kapsel's own x86 interpreter (no /dev/kvm\n"
    "                          needed; docs/vm.md says what it runs), or auto (default):\n"
    "                          KVM when it works, else soft\n"
    "  --cpus N                vCPUs (default 1)\n"
    "  --cpu-model NAME        a named CPUID feature set, applied before --cpu-features:\n"
    "                          host (default), max, x86-64-v1..v4, Skylake-Client, EPYC\n"
    "  --cpu-features LIST     CPUID features to mask or require: -xsave,-avx,+x2apic;\n"
    "                          Hyper-V: +hv-relaxed,+hv-vapic,+hv-time,+hv-vpindex,\n"
    "                          +hv-synic,+hv-stimer (docs/vm.md)\n"
    "  --console WHERE         stdio (default; Ctrl-A x quits), file:PATH or none\n"
    "  --no-debug-exit         remove the debug-exit port\n"
    "  --acpi reduced|full     hardware-reduced ACPI (default) or a full FADT with FACS,\n"
    "                          PM1a blocks and a PM timer at port 0x608\n"
    "  --no-pit                no i8254 PIT (Linux on kapsel's ACPI does not use it)\n"
    "  --disk PATH[,ro][,serial=S][,cache=none|writeback][,format=F][,id=ID]\n"
    "                          a virtio-blk disk; repeatable. format=raw (the default: a\n"
    "                          file or block device), qcow2, or auto (qcow2 if the file\n"
    "                          has its magic). Without format= a qcow2 image is read raw\n"
    "                          (with a warning): give format=qcow2 for images you made\n"
    "  --rng                   a virtio-rng device (entropy from getrandom)\n"
    "  --net tap=NAME[,mac=M][,id=ID] | bridge=BR[,mac=M][,id=ID]\n"
    "                          a virtio-net card on an existing tap, or on a tap kapsel\n"
    "                          creates on bridge BR and deletes at the end; repeatable\n"
    "  --fs tag=NAME,path=DIR[,ro]\n"
    "                          share host directory DIR over virtio-fs; the guest mounts\n"
    "                          it with mount -t virtiofs NAME; ro refuses writes;\n"
    "                          repeatable (docs/vm.md, virtio-fs)\n"
    "  --virtio-console        a virtio-console (hvc0); console input goes to it\n"
    "  --vsock cid=N,socket=PATH\n"
    "                          a virtio-vsock with guest CID N (>= 3); the host side is\n"
    "                          the unix socket PATH (docs/vm.md: CONNECT <port>)\n"
    "  --balloon [amount_mib=N,][deflate_on_oom=on,][stats_interval_s=N,]\n"
    "            [free_page_reporting=on]\n"
    "                          a virtio-balloon ('--balloon on': the defaults): the guest\n"
    "                          gives back amount_mib MiB (vm balloon NAME SIZE changes it),\n"
    "                          sends statistics every N s, reports free pages\n"
    "  --transport pci|mmio    how virtio devices attach: PCI functions (default) or\n"
    "                          virtio-mmio windows\n"
    "  --virtio-mmio-cmdline   also list the virtio-mmio devices on the kernel command line\n"
    "  --config FILE           settings from a vm.json; the flags above override it\n"
    "  --name NAME             name the VM: it serves the control API on\n"
    "                          <root>/vm/NAME/api.sock (vm ls, inspect, pause, resume, stop)\n"
    "  --api-sock PATH         serve the control API (HTTP/1.1 + JSON, docs/vm.md) on the\n"
    "                          unix socket PATH instead\n"
    "  --incoming ADDR         no --kernel: wait on unix:PATH or tcp:127.0.0.1:PORT for a\n"
    "                          'vm migrate' and run the guest it sends (the machine options\n"
    "                          must match the source's)\n"
    "  --jail                  run the VMM jailed (docs/vm.md, Jailer): own namespaces, an\n"
    "                          empty root, a cgroup, no capabilities, seccomp per thread\n"
    "  --jail-uid UID          the host uid the jailed VMM runs as (default 65534)\n"
    "  --jail-gid GID          the host gid the jailed VMM runs as (default 65534)\n"
    "  --help, -h              print this help\n";

enum {
	OPT_KERNEL = 0x100,
	OPT_INITRD,
	OPT_CMDLINE,
	OPT_MEM,
	OPT_CPUS,
	OPT_CPU_FEATURES,
	OPT_CPU_MODEL,
	OPT_ACPI,
	OPT_ACCEL,
	OPT_CONSOLE,
	OPT_NO_DEBUG_EXIT,
	OPT_NO_PIT,
	OPT_MEM_SHARED,
	OPT_MEM_HUGEPAGES,
	OPT_MEM_MERGE,
	OPT_DIFF,
	OPT_CONFIG,
	OPT_DISK,
	OPT_RNG,
	OPT_NET,
	OPT_VIRTIO_CONSOLE,
	OPT_VSOCK,
	OPT_BALLOON,
	OPT_STATS,
	OPT_STATS_INTERVAL,
	OPT_FS,
	OPT_VIRTIO_MMIO_CMDLINE,
	OPT_TRANSPORT,
	OPT_NAME,
	OPT_API_SOCK,
	OPT_FORMAT,
	OPT_FORCE,
	OPT_TIMEOUT,
	OPT_STATE,
	OPT_INCOMING,
	OPT_MAX_DOWNTIME,
	OPT_MAX_ITERATIONS,
	OPT_CANCEL,
	OPT_FIRMWARE,
	OPT_FIRMWARE_LOG,
	OPT_JAIL,
	OPT_JAIL_UID,
	OPT_JAIL_GID,
};

static const struct cli_command cmd_vm_run, cmd_vm_disk, cmd_vm_disk_create, cmd_vm_ls,
    cmd_vm_inspect, cmd_vm_pause, cmd_vm_resume, cmd_vm_stop, cmd_vm_snapshot, cmd_vm_restore;
static const struct cli_command cmd_vm_balloon;
static const struct cli_command cmd_vm_wake;
static const struct cli_command cmd_vm_migrate;

static int set_str(char **field, const char *v)
{
	free(*field);
	*field = strdup(v);
	return *field ? 0 : -1;
}

static const struct option run_options[] = {
    {"kernel", required_argument, NULL, OPT_KERNEL},
    {"initrd", required_argument, NULL, OPT_INITRD},
    {"cmdline", required_argument, NULL, OPT_CMDLINE},
    {"mem", required_argument, NULL, OPT_MEM},
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"cpu-features", required_argument, NULL, OPT_CPU_FEATURES},
    {"cpu-model", required_argument, NULL, OPT_CPU_MODEL},
    {"acpi", required_argument, NULL, OPT_ACPI},
    {"accel", required_argument, NULL, OPT_ACCEL},
    {"console", required_argument, NULL, OPT_CONSOLE},
    {"no-debug-exit", no_argument, NULL, OPT_NO_DEBUG_EXIT},
    {"no-pit", no_argument, NULL, OPT_NO_PIT},
    {"mem-shared", no_argument, NULL, OPT_MEM_SHARED},
    {"mem-hugepages", no_argument, NULL, OPT_MEM_HUGEPAGES},
    {"mem-merge", no_argument, NULL, OPT_MEM_MERGE},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"disk", required_argument, NULL, OPT_DISK},
    {"rng", no_argument, NULL, OPT_RNG},
    {"net", required_argument, NULL, OPT_NET},
    {"virtio-console", no_argument, NULL, OPT_VIRTIO_CONSOLE},
    {"vsock", required_argument, NULL, OPT_VSOCK},
    {"balloon", required_argument, NULL, OPT_BALLOON},
    {"fs", required_argument, NULL, OPT_FS},
    {"virtio-mmio-cmdline", no_argument, NULL, OPT_VIRTIO_MMIO_CMDLINE},
    {"transport", required_argument, NULL, OPT_TRANSPORT},
    {"name", required_argument, NULL, OPT_NAME},
    {"api-sock", required_argument, NULL, OPT_API_SOCK},
    {"incoming", required_argument, NULL, OPT_INCOMING},
    {"firmware", required_argument, NULL, OPT_FIRMWARE},
    {"firmware-log", required_argument, NULL, OPT_FIRMWARE_LOG},
    {"jail", no_argument, NULL, OPT_JAIL},
    {"jail-uid", required_argument, NULL, OPT_JAIL_UID},
    {"jail-gid", required_argument, NULL, OPT_JAIL_GID},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* --jail-uid/--jail-gid: a numeric host id, not 0 (root) and not (uid_t)-1. */
static bool parse_jail_id(const char *opt, const char *v, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (!*v || *end || errno || v[0] == '-' || v[0] == '+' || n == 0 || n >= 0xffffffffULL) {
		cli_fail("vm run: %s %s: expected a numeric host id from 1 to 4294967294", opt, v);
		return false;
	}
	*out = (uint32_t)n;
	return true;
}

static int vm_run(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_vm_config cfg = {0}, cli = {0};
	struct kapsel_error *err = NULL;
	const char *config = NULL, *mem = NULL, *cpus = NULL, *console = NULL, *transport = NULL,
		   *acpi = NULL, *balloon = NULL, *accel = NULL;
	bool no_debug_exit = false, no_pit = false, mem_shared = false, mem_hugepages = false,
	     mem_merge = false, jail = false;
	const char *jail_uid = NULL, *jail_gid = NULL;
	int c, rc = 1;
	/*
	 * Device flags, in order: parsed after the file's devices, so the default ids
	 * (disk0, net0, ...) continue the file's and duplicates are caught across both.
	 */
	enum { MAX_DEV_FLAGS = KAPSEL_VM_MAX_DISKS + KAPSEL_VM_MAX_NETS + KAPSEL_VM_MAX_FS + 1 };
	const char *devs[MAX_DEV_FLAGS];
	int dev_kind[MAX_DEV_FLAGS];
	size_t ndevs = 0;

	/* Flags override the file: collect them first, apply them after loading it. */
	while ((c = cli_getopt_cmd(&cmd_vm_run, argc, argv)) != -1) {
		int bad = 0;
		switch (c) {
		case OPT_KERNEL:
			bad = set_str(&cli.kernel, optarg);
			break;
		case OPT_INITRD:
			bad = set_str(&cli.initrd, optarg);
			break;
		case OPT_CMDLINE:
			bad = set_str(&cli.cmdline, optarg);
			break;
		case OPT_FIRMWARE:
			bad = set_str(&cli.firmware, optarg);
			break;
		case OPT_FIRMWARE_LOG:
			bad = set_str(&cli.firmware_log, optarg);
			break;
		case OPT_CPU_FEATURES:
			bad = set_str(&cli.cpu_features, optarg);
			break;
		case OPT_CPU_MODEL:
			bad = set_str(&cli.cpu_model, optarg);
			break;
		case OPT_MEM:
			mem = optarg;
			break;
		case OPT_CPUS:
			cpus = optarg;
			break;
		case OPT_CONSOLE:
			console = optarg;
			break;
		case OPT_NO_DEBUG_EXIT:
			no_debug_exit = true;
			break;
		case OPT_MEM_SHARED:
			mem_shared = true;
			break;
		case OPT_MEM_HUGEPAGES:
			mem_hugepages = true;
			break;
		case OPT_MEM_MERGE:
			mem_merge = true;
			break;
		case OPT_NO_PIT:
			no_pit = true;
			break;
		case OPT_CONFIG:
			config = optarg;
			break;
		case OPT_DISK:
		case OPT_NET:
		case OPT_VSOCK:
		case OPT_FS:
			if (ndevs == MAX_DEV_FLAGS) {
				kapsel_vm_config_clear(&cli);
				return cli_fail("vm run: --%s %s: at most %d disks, %d networks, "
						"%d shares and one vsock",
						c == OPT_DISK  ? "disk"
						: c == OPT_NET ? "net"
						: c == OPT_FS  ? "fs"
							       : "vsock",
						optarg, KAPSEL_VM_MAX_DISKS, KAPSEL_VM_MAX_NETS,
						KAPSEL_VM_MAX_FS);
			}
			dev_kind[ndevs] = c;
			devs[ndevs++] = optarg;
			break;
		case OPT_RNG:
			cli.rng = true;
			break;
		case OPT_BALLOON:
			balloon = optarg;
			break;
		case OPT_VIRTIO_CONSOLE:
			cli.virtio_console = true;
			break;
		case OPT_VIRTIO_MMIO_CMDLINE:
			cli.virtio_mmio_cmdline = true;
			break;
		case OPT_ACPI:
			acpi = optarg;
			break;
		case OPT_ACCEL:
			accel = optarg;
			break;
		case OPT_TRANSPORT:
			transport = optarg;
			break;
		case OPT_NAME:
			if (!kapsel_vm_name_valid(optarg)) {
				kapsel_vm_config_clear(&cli);
				return cli_fail("vm run: --name %s: expected "
						"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
						optarg);
			}
			bad = set_str(&cli.name, optarg);
			break;
		case OPT_INCOMING:
			bad = set_str(&cli.incoming, optarg);
			break;
		case OPT_API_SOCK: {
			/* Absolute: state.json records it for clients in other directories. */
			char cwd[4096];
			free(cli.api_sock);
			cli.api_sock = NULL;
			if (optarg[0] == '/')
				bad = set_str(&cli.api_sock, optarg);
			else if (!getcwd(cwd, sizeof(cwd)) ||
				 asprintf(&cli.api_sock, "%s/%s", cwd, optarg) < 0) {
				cli.api_sock = NULL;
				bad = 1;
			}
			break;
		}
		case OPT_JAIL:
			jail = true;
			break;
		case OPT_JAIL_UID:
			jail_uid = optarg;
			break;
		case OPT_JAIL_GID:
			jail_gid = optarg;
			break;
		default:
			kapsel_vm_config_clear(&cli);
			return cli_opt_status(c);
		}
		if (bad) {
			kapsel_vm_config_clear(&cli);
			return cli_fail("vm run: out of memory");
		}
	}
	if (!cli_nargs(&cmd_vm_run, argc - optind, 0, 0, "no arguments; see --help"))
		goto out;
	if (config && kapsel_vm_config_load(config, &cfg, &err) < 0) {
		rc = cli_fail_err(err);
		goto out;
	}
#define TAKE(f)                                                                                    \
	if (cli.f) {                                                                               \
		free(cfg.f);                                                                       \
		cfg.f = cli.f;                                                                     \
		cli.f = NULL;                                                                      \
	}
	TAKE(kernel);
	TAKE(initrd);
	TAKE(cmdline);
	TAKE(cpu_model);
	TAKE(cpu_features);
	TAKE(name);
	TAKE(api_sock);
	TAKE(incoming);
	TAKE(firmware);
	TAKE(firmware_log);
#undef TAKE
	if (cfg.name && set_str(&cfg.runtime_dir, g->root)) {
		rc = cli_fail("vm run: out of memory");
		goto out;
	}
	/* Devices from the flags join the file's; --vsock replaces the file's vsock. */
	bool file_vsock = cfg.vsock_path != NULL;
	for (size_t i = 0; i < ndevs; i++) {
		if (dev_kind[i] == OPT_VSOCK && file_vsock) {
			free(cfg.vsock_path);
			cfg.vsock_path = NULL;
			cfg.vsock_cid = 0;
			file_vsock = false;
		}
		int r = dev_kind[i] == OPT_DISK	 ? kapsel_vm_parse_disk(devs[i], &cfg, &err)
			: dev_kind[i] == OPT_NET ? kapsel_vm_parse_net(devs[i], &cfg, &err)
			: dev_kind[i] == OPT_FS	 ? kapsel_vm_parse_fs(devs[i], &cfg, &err)
						 : kapsel_vm_parse_vsock(devs[i], &cfg, &err);
		if (r < 0) {
			rc = cli_fail_err(err);
			goto out;
		}
	}
	cfg.rng |= cli.rng;
	/* --balloon replaces the file's balloon. */
	if (balloon && kapsel_vm_parse_balloon(balloon, &cfg, &err) < 0) {
		rc = cli_fail_err(err);
		goto out;
	}
	cfg.virtio_console |= cli.virtio_console;
	cfg.virtio_mmio_cmdline |= cli.virtio_mmio_cmdline;
	if (mem && kapsel_vm_parse_size(mem, &cfg.mem_size) < 0) {
		rc = cli_fail("vm run: --mem: invalid size \"%s\" (expected e.g. 256M or 1G)", mem);
		goto out;
	}
	if (cpus) {
		long long n;
		if (!cli_parse_int(&cmd_vm_run, "--cpus", cpus, 1, 1024, &n))
			goto out;
		cfg.cpus = (unsigned int)n;
	}
	if (console && kapsel_vm_parse_console(console, &cfg) < 0) {
		rc = cli_fail("vm run: --console: expected stdio, none or file:PATH, got \"%s\"",
			      console);
		goto out;
	}
	if (no_debug_exit)
		cfg.no_debug_exit = true;
	if (no_pit)
		cfg.no_pit = true;
	if (mem_shared)
		cfg.mem_shared = true;
	if (mem_hugepages)
		cfg.mem_hugepages = true;
	if (mem_merge)
		cfg.mem_merge = true;
	if (acpi && kapsel_vm_parse_acpi(acpi, &cfg) < 0) {
		rc = cli_fail("vm run: --acpi: expected reduced or full, got \"%s\"", acpi);
		goto out;
	}
	if (accel && kapsel_vm_parse_accel(accel, &cfg) < 0) {
		rc = cli_fail("vm run: --accel: expected kvm, soft or auto, got \"%s\"", accel);
		goto out;
	}
	if (transport && kapsel_vm_parse_transport(transport, &cfg) < 0) {
		rc = cli_fail("vm run: --transport: expected pci or mmio, got \"%s\"", transport);
		goto out;
	}
	if ((jail_uid || jail_gid) && !jail && !cfg.jail) {
		rc = cli_fail("vm run: --jail-uid and --jail-gid need --jail");
		goto out;
	}
	/* --jail: the ids the file gave, else the default; the flags override either. */
	if (jail && !cfg.jail) {
		cfg.jail = true;
		cfg.jail_uid = cfg.jail_gid = KAPSEL_VM_JAIL_DEFAULT_ID;
	}
	if (cfg.jail) {
		if ((jail_uid && !parse_jail_id("--jail-uid", jail_uid, &cfg.jail_uid)) ||
		    (jail_gid && !parse_jail_id("--jail-gid", jail_gid, &cfg.jail_gid)))
			goto out;
	}
	if (!cfg.kernel && !cfg.incoming && !cfg.firmware) {
		rc = cli_fail("vm run: --kernel is required (see 'kapsel vm run --help')");
		goto out;
	}
	int r = kapsel_vm_run(&cfg, &err);
	rc = r < 0 ? cli_fail_err(err) : r;
out:
	kapsel_vm_config_clear(&cfg);
	kapsel_vm_config_clear(&cli);
	return rc;
}

static const char disk_create_usage[] =
    "Usage: kapsel vm disk create [--backing BASE [--backing-format raw|qcow2]] FILE [SIZE]\n"
    "       kapsel vm disk create --format raw FILE SIZE\n"
    "\n"
    "Create FILE as a qcow2 (version 3) image of SIZE bytes, with a K, M, G or T suffix\n"
    "(64 KiB clusters, 16-bit refcounts). With --backing, FILE is an overlay over BASE (raw\n"
    "or qcow2, opened read-only when the VM runs) and SIZE defaults to BASE's size. BASE is\n"
    "a name relative to FILE's directory and beneath it (no \"..\", not absolute), recorded\n"
    "as given with its format; without --backing-format the format is what BASE's first\n"
    "bytes say. An existing FILE is not overwritten. Use the image with\n"
    "--disk FILE,format=qcow2 (without format= a disk is raw).\n"
    "\n"
    "--format raw makes a sparse raw file of SIZE bytes instead (no overlay).\n"
    "\n"
    "Options:\n"
    "  --format FMT            qcow2 (default) or raw\n"
    "  --backing BASE          the backing file\n"
    "  --backing-format FMT    BASE's format, raw or qcow2 (recorded in FILE)\n"
    "  --help, -h              print this help\n";

static const struct option disk_create_options[] = {
    {"backing", required_argument, NULL, 'b'},
    {"backing-format", required_argument, NULL, 'F'},
    {"format", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int vm_disk_create(const struct cli_globals *g, int argc, char **argv)
{
	const char *backing = NULL, *backing_format = NULL, *format = "qcow2";
	int c;
	while ((c = cli_getopt_cmd(&cmd_vm_disk_create, argc, argv)) != -1) {
		if (c == 'b')
			backing = optarg;
		else if (c == 'F')
			backing_format = optarg;
		else if (c == 'f')
			format = optarg;
		else
			return cli_opt_status(c);
	}
	bool raw = !strcmp(format, "raw");
	if (!raw && strcmp(format, "qcow2"))
		return cli_fail("vm disk create: --format: unknown format \"%s\" (qcow2 or raw)",
				format);
	if (raw && backing)
		return cli_fail("vm disk create: --backing needs --format qcow2");
	if (backing_format && !backing)
		return cli_fail("vm disk create: --backing-format needs --backing");
	if (!cli_nargs(&cmd_vm_disk_create, argc - optind, backing ? 1 : 2, 2,
		       backing ? "FILE [SIZE]" : "FILE SIZE"))
		return 1;
	uint64_t size = 0;
	if (argc - optind == 2 && kapsel_vm_parse_size(argv[optind + 1], &size) < 0)
		return cli_fail("vm disk create: invalid size \"%s\" (expected e.g. 10G)",
				argv[optind + 1]);
	struct kapsel_error *err = NULL;
	const char *file = argv[optind], *fmt = NULL;
	if (raw) {
		/* A raw disk is just its bytes: a sparse file (an existing one is kept). */
		int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			return cli_fail("vm disk create: %s: %m", file);
		if (ftruncate(fd, (off_t)size) < 0) {
			cli_fail("vm disk create: %s: truncate to %llu bytes: %m", file,
				 (unsigned long long)size);
			close(fd);
			unlink(file);
			return 1;
		}
		close(fd);
		printf("%s: raw image\nuse it with: --disk %s,format=raw\n", file, file);
		return 0;
	}
	if (kapsel_vm_disk_create(file, size, backing, backing_format, &fmt, &err) < 0)
		return cli_fail_err(err);
	/* What was made, and how to use it: a disk without format= is raw. */
	if (backing)
		printf("%s: qcow2 overlay over %s (%s)\n", file, backing, fmt);
	else
		printf("%s: qcow2 image\n", file);
	printf("use it with: --disk %s,format=qcow2\n", file);
	return 0;
}

/* ---- the commands that use a running VM's control API ---- */

static const struct option ls_options[] = {
    {"format", required_argument, NULL, OPT_FORMAT},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int vm_ls(const struct cli_globals *g, int argc, char **argv)
{
	bool json = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_vm_ls, argc, argv)) != -1) {
		if (c != OPT_FORMAT)
			return cli_opt_status(c);
		if (strcmp(optarg, "json") && strcmp(optarg, "table"))
			return cli_fail("vm ls: --format %s: expected json or table", optarg);
		json = !strcmp(optarg, "json");
	}
	if (!cli_nargs(&cmd_vm_ls, argc - optind, 0, 0, "no arguments"))
		return 1;
	struct kapsel_error *err = NULL;
	char **names;
	size_t n;
	if (kapsel_vm_list(g->root, &names, &n, &err) < 0)
		return cli_fail_err(err);
	if (json)
		printf("[");
	else
		printf("%-20s %-8s %-8s %-5s %-9s %s\n", "NAME", "STATE", "PID", "CPUS", "MEM",
		       "STARTED");
	bool first = true;
	for (size_t i = 0; i < n; i++) {
		struct kapsel_vm_info info = {0};
		char *body = NULL;
		/* A VM that ended since the listing is left out, not an error. */
		if (kapsel_vm_inspect(g->root, names[i], &info, &body, &err) < 0) {
			kapsel_error_free(err);
			err = NULL;
		} else if (json) {
			printf("%s%s", first ? "" : ",", body);
			first = false;
		} else {
			printf("%-20s %-8s %-8lld %-5lld %-6lluMiB %s\n", names[i], info.state,
			       (long long)info.pid, (long long)info.vcpus,
			       (unsigned long long)info.mem_mib, info.started);
		}
		free(body);
		kapsel_vm_info_clear(&info);
		free(names[i]);
	}
	free(names);
	if (json)
		printf("]\n");
	return 0;
}

static int vm_inspect(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_vm_inspect, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_vm_inspect, argc - optind, 1, 1, "NAME"))
		return 1;
	struct kapsel_error *err = NULL;
	char *body = NULL;
	if (kapsel_vm_inspect(g->root, argv[optind], NULL, &body, &err) < 0)
		return cli_fail_err(err);
	printf("%s\n", body);
	free(body);
	return 0;
}

/* The string value of {"fault_message": "..."} (quotes and escapes undone) in place. */
static const char *fault_message(char *body)
{
	char *m = strstr(body, "\"fault_message\":");
	if (!m)
		return body;
	m += 16;
	while (*m == ' ')
		m++;
	if (*m != '"')
		return body;
	char *o = ++m, *start = m;
	for (; *m && *m != '"'; m++) {
		if (*m == '\\' && m[1])
			m++;
		*o++ = *m;
	}
	*o = 0;
	return start;
}

/* One API request to VM name; 0 on a 2xx answer, else the fault message and 1. */
static int vm_request(const struct cli_globals *g, const char *cmd, const char *name,
		      const char *method, const char *target, const char *json)
{
	struct kapsel_error *err = NULL;
	char *path = NULL, *body = NULL;
	if (kapsel_vm_api_path(g->root, name, &path, &err) < 0)
		return cli_fail_err(err);
	int r = kapsel_vm_api_call(path, method, target, json, &body, &err);
	free(path);
	if (r < 0)
		return cli_fail_err(err);
	int rc = 0;
	if (r / 100 != 2) {
		rc = cli_fail("vm %s %s: %s", cmd, name, fault_message(body));
	}
	free(body);
	return rc;
}

static int vm_pause_resume(const struct cli_command *cmd, const struct cli_globals *g, int argc,
			   char **argv, bool pause)
{
	int c;
	while ((c = cli_getopt_cmd(cmd, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(cmd, argc - optind, 1, 1, "NAME"))
		return 1;
	return vm_request(g, pause ? "pause" : "resume", argv[optind], "PATCH", "/vm",
			  pause ? "{\"state\":\"Paused\"}" : "{\"state\":\"Resumed\"}");
}

static int vm_pause(const struct cli_globals *g, int argc, char **argv)
{
	return vm_pause_resume(&cmd_vm_pause, g, argc, argv, true);
}

static int vm_resume(const struct cli_globals *g, int argc, char **argv)
{
	return vm_pause_resume(&cmd_vm_resume, g, argc, argv, false);
}

/* ACPI S3: the guest suspended itself; PUT /actions Wakeup (QEMU's system_wakeup). */
static int vm_wake(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_vm_wake, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_vm_wake, argc - optind, 1, 1, "NAME"))
		return 1;
	return vm_request(g, "wake", argv[optind], "PUT", "/actions",
			  "{\"action_type\":\"Wakeup\"}");
}

/* s as a JSON string, quotes included (RFC 8259 §7). */
static char *json_quote(const char *s)
{
	size_t n = strlen(s);
	char *o = malloc(n * 6 + 3), *p = o;
	if (!o)
		return NULL;
	*p++ = '"';
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			*p++ = '\\';
			*p++ = (char)ch;
		} else if (ch < 0x20) {
			p += sprintf(p, "\\u%04x", ch);
		} else {
			*p++ = (char)ch;
		}
	}
	*p++ = '"';
	*p = 0;
	return o;
}

/* path made absolute against our working directory: the VMM's may differ. */
static char *absolute(const char *path)
{
	char *s = NULL, cwd[4096];
	if (path[0] == '/')
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)) || asprintf(&s, "%s/%s", cwd, path) < 0)
		return NULL;
	return s;
}

static const struct option snapshot_options[] = {
    {"mem", required_argument, NULL, OPT_MEM},
    {"state", required_argument, NULL, OPT_STATE},
    {"diff", no_argument, NULL, OPT_DIFF},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int vm_snapshot(const struct cli_globals *g, int argc, char **argv)
{
	const char *mem = NULL, *state = NULL;
	bool diff = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_vm_snapshot, argc, argv)) != -1) {
		if (c == OPT_DIFF)
			diff = true;
		else if (c == OPT_MEM)
			mem = optarg;
		else if (c == OPT_STATE)
			state = optarg;
		else
			return cli_opt_status(c);
	}
	if (!cli_nargs(&cmd_vm_snapshot, argc - optind, 1, 1, "NAME"))
		return 1;
	if (!mem || !state)
		return cli_fail("vm snapshot: --mem FILE and --state FILE are required");
	char *m = absolute(mem), *st = absolute(state);
	char *qm = m ? json_quote(m) : NULL, *qs = st ? json_quote(st) : NULL;
	char *body = NULL;
	int rc;
	if (!qm || !qs ||
	    asprintf(&body, "{\"mem_file_path\":%s,\"snapshot_path\":%s,\"snapshot_type\":\"%s\"}",
		     qm, qs, diff ? "Diff" : "Full") < 0)
		rc = cli_fail("vm snapshot: out of memory");
	else
		rc = vm_request(g, "snapshot", argv[optind], "PUT", "/snapshot/create", body);
	free(m);
	free(st);
	free(qm);
	free(qs);
	free(body);
	return rc;
}

static const struct option restore_options[] = {
    {"mem", required_argument, NULL, OPT_MEM},
    {"state", required_argument, NULL, OPT_STATE},
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"cpu-features", required_argument, NULL, OPT_CPU_FEATURES},
    {"accel", required_argument, NULL, OPT_ACCEL},
    {"console", required_argument, NULL, OPT_CONSOLE},
    {"name", required_argument, NULL, OPT_NAME},
    {"api-sock", required_argument, NULL, OPT_API_SOCK},
    {"disk", required_argument, NULL, OPT_DISK},
    {"rng", no_argument, NULL, OPT_RNG},
    {"net", required_argument, NULL, OPT_NET},
    {"virtio-console", no_argument, NULL, OPT_VIRTIO_CONSOLE},
    {"vsock", required_argument, NULL, OPT_VSOCK},
    {"balloon", required_argument, NULL, OPT_BALLOON},
    {"fs", required_argument, NULL, OPT_FS},
    {"transport", required_argument, NULL, OPT_TRANSPORT},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int vm_restore(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_vm_config cfg = {0};
	struct kapsel_error *err = NULL;
	int c, rc = 1, bad = 0;
	long long n;
	while ((c = cli_getopt_cmd(&cmd_vm_restore, argc, argv)) != -1) {
		switch (c) {
		case OPT_MEM:
			bad = set_str(&cfg.restore_mem, optarg);
			break;
		case OPT_STATE:
			bad = set_str(&cfg.restore_state, optarg);
			break;
		case OPT_CPUS:
			if (!cli_parse_int(&cmd_vm_restore, "--cpus", optarg, 1, 1024, &n))
				goto out;
			cfg.cpus = (unsigned int)n;
			break;
		case OPT_CPU_FEATURES:
			bad = set_str(&cfg.cpu_features, optarg);
			break;
		case OPT_ACCEL:
			if (kapsel_vm_parse_accel(optarg, &cfg) < 0) {
				rc =
				    cli_fail("vm restore: --accel: expected kvm, soft or auto, got "
					     "\"%s\"",
					     optarg);
				goto out;
			}
			break;
		case OPT_CONSOLE:
			if (kapsel_vm_parse_console(optarg, &cfg) < 0) {
				rc = cli_fail("vm restore: --console: expected stdio, none or "
					      "file:PATH, got \"%s\"",
					      optarg);
				goto out;
			}
			break;
		case OPT_NAME:
			bad = set_str(&cfg.name, optarg);
			break;
		case OPT_API_SOCK:
			bad = set_str(&cfg.api_sock, optarg);
			break;
		/* The snapshot's devices, given again as to 'vm run' (docs/vm.md). */
		case OPT_DISK:
		case OPT_NET:
		case OPT_VSOCK:
		case OPT_FS:
		case OPT_BALLOON:
			if ((c == OPT_DISK    ? kapsel_vm_parse_disk(optarg, &cfg, &err)
			     : c == OPT_NET   ? kapsel_vm_parse_net(optarg, &cfg, &err)
			     : c == OPT_VSOCK ? kapsel_vm_parse_vsock(optarg, &cfg, &err)
			     : c == OPT_FS    ? kapsel_vm_parse_fs(optarg, &cfg, &err)
					      : kapsel_vm_parse_balloon(optarg, &cfg, &err)) < 0) {
				rc = cli_fail_err(err);
				goto out;
			}
			break;
		case OPT_RNG:
			cfg.rng = true;
			break;
		case OPT_VIRTIO_CONSOLE:
			cfg.virtio_console = true;
			break;
		case OPT_TRANSPORT:
			if (kapsel_vm_parse_transport(optarg, &cfg) < 0) {
				rc = cli_fail("vm restore: --transport: expected pci or mmio, got "
					      "\"%s\"",
					      optarg);
				goto out;
			}
			break;
		default:
			rc = cli_opt_status(c);
			goto out;
		}
		if (bad) {
			rc = cli_fail("vm restore: out of memory");
			goto out;
		}
	}
	if (!cli_nargs(&cmd_vm_restore, argc - optind, 0, 0, "no arguments; see --help"))
		goto out;
	if (!cfg.restore_mem || !cfg.restore_state) {
		rc = cli_fail("vm restore: --mem FILE and --state FILE are required");
		goto out;
	}
	if (cfg.name && set_str(&cfg.runtime_dir, g->root)) {
		rc = cli_fail("vm restore: out of memory");
		goto out;
	}
	int r = kapsel_vm_run(&cfg, &err);
	rc = r < 0 ? cli_fail_err(err) : r;
out:
	kapsel_vm_config_clear(&cfg);
	return rc;
}

static const struct option migrate_options[] = {
    {"max-downtime", required_argument, NULL, OPT_MAX_DOWNTIME},
    {"max-iterations", required_argument, NULL, OPT_MAX_ITERATIONS},
    {"cancel", no_argument, NULL, OPT_CANCEL},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* The value of "key": in a flat JSON object: a number or a string (escapes undone), in out. */
static bool json_field(const char *body, const char *key, char *out, size_t len)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *m = strstr(body, pat);
	if (!m || !len)
		return false;
	m += strlen(pat);
	while (*m == ' ')
		m++;
	size_t o = 0;
	if (*m == '"') {
		for (m++; *m && *m != '"' && o + 1 < len; m++) {
			if (*m == '\\' && m[1])
				m++;
			out[o++] = *m;
		}
	} else {
		while (*m && *m != ',' && *m != '}' && o + 1 < len)
			out[o++] = *m++;
	}
	out[o] = 0;
	return true;
}

static int vm_migrate(const struct cli_globals *g, int argc, char **argv)
{
	long long downtime = 0, iterations = 0;
	bool cancel = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_vm_migrate, argc, argv)) != -1) {
		if (c == OPT_CANCEL)
			cancel = true;
		else if (c == OPT_MAX_DOWNTIME) {
			if (!cli_parse_int(&cmd_vm_migrate, "--max-downtime", optarg, 1, 3600000,
					   &downtime))
				return 1;
		} else if (c == OPT_MAX_ITERATIONS) {
			if (!cli_parse_int(&cmd_vm_migrate, "--max-iterations", optarg, 1, 1000,
					   &iterations))
				return 1;
		} else
			return cli_opt_status(c);
	}
	if (cancel) {
		if (!cli_nargs(&cmd_vm_migrate, argc - optind, 1, 1, "NAME"))
			return 1;
		return vm_request(g, "migrate --cancel", argv[optind], "DELETE", "/migrate", NULL);
	}
	if (!cli_nargs(&cmd_vm_migrate, argc - optind, 2, 2, "NAME DESTINATION"))
		return 1;
	const char *name = argv[optind], *dest = argv[optind + 1];
	struct kapsel_error *err = NULL;
	char *path = NULL, *body = NULL, *req = NULL, *q = NULL, *abs_dest = NULL;
	int rc = 1;
	if (kapsel_vm_api_path(g->root, name, &path, &err) < 0)
		return cli_fail_err(err);
	/* The VMM's working directory may differ from ours. */
	if (!strncmp(dest, "unix:", 5) && dest[5] && dest[5] != '/') {
		char *a = absolute(dest + 5);
		if (!a || asprintf(&abs_dest, "unix:%s", a) < 0)
			abs_dest = NULL;
		free(a);
		if (!abs_dest) {
			rc = cli_fail("vm migrate: out of memory");
			goto out;
		}
		dest = abs_dest;
	}
	char extra[96] = "";
	if (downtime)
		snprintf(extra, sizeof(extra), ",\"max_downtime_ms\":%lld", downtime);
	if (iterations)
		snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
			 ",\"max_iterations\":%lld", iterations);
	if (!(q = json_quote(dest)) || asprintf(&req, "{\"destination\":%s%s}", q, extra) < 0) {
		req = NULL;
		rc = cli_fail("vm migrate: out of memory");
		goto out;
	}
	int r = kapsel_vm_api_migrate(path, req, dest, &body, &err);
	if (r < 0) {
		rc = cli_fail_err(err);
		goto out;
	}
	if (r / 100 != 2) {
		rc = cli_fail("vm migrate %s: %s", name, fault_message(body));
		goto out;
	}
	/* The migration runs in the VMM: follow it until it ends. */
	for (;;) {
		free(body);
		body = NULL;
		usleep(50000);
		r = kapsel_vm_api_call(path, "GET", "/migrate", NULL, &body, &err);
		if (r < 0) {
			rc = cli_fail("vm migrate %s: the VMM stopped answering: %s", name,
				      err->msg);
			kapsel_error_free(err);
			goto out;
		}
		char state[32] = "", v[512] = "";
		json_field(body, "state", state, sizeof(state));
		if (!strcmp(state, "Active"))
			continue;
		if (strcmp(state, "Completed")) {
			json_field(body, "error", v, sizeof(v));
			rc = cli_fail("vm migrate %s: %s", name, v[0] ? v : state);
			goto out;
		}
		char rounds[32] = "?", down[32] = "?", total[32] = "?", bytes[32] = "0";
		json_field(body, "rounds", rounds, sizeof(rounds));
		json_field(body, "downtime_ms", down, sizeof(down));
		json_field(body, "total_ms", total, sizeof(total));
		json_field(body, "transferred_bytes", bytes, sizeof(bytes));
		printf("migrated %s to %s: rounds %s, downtime %s ms, total %s ms, sent %llu MiB\n",
		       name, dest, rounds, down, total, strtoull(bytes, NULL, 10) >> 20);
		fflush(stdout);
		break;
	}
	/* The source ends once it handed the guest over: wait for it, as vm stop does. */
	for (int i = 0; i < 100; i++) {
		char *p = NULL;
		if (kapsel_vm_api_path(g->root, name, &p, &err) < 0) {
			kapsel_error_free(err);
			err = NULL;
			break;
		}
		free(p);
		usleep(100000);
	}
	rc = 0;
out:
	free(path);
	free(body);
	free(req);
	free(q);
	free(abs_dest);
	return rc;
}

static const struct option stop_options[] = {
    {"force", no_argument, NULL, OPT_FORCE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* Waits up to tenths * 100 ms for the VMM to remove its directory (it does as it exits). */
static bool vm_gone_within(const struct cli_globals *g, const char *name, long long tenths)
{
	for (long long i = 0;; i++) {
		struct kapsel_error *err = NULL;
		char *p = NULL;
		if (kapsel_vm_api_path(g->root, name, &p, &err) < 0) {
			kapsel_error_free(err);
			return true;
		}
		free(p);
		if (i >= tenths)
			return false;
		usleep(100000);
	}
}

/*
 * Without --force: presses the ACPI power button (QEMU's system_powerdown) unless the guest is
 * paused or suspended and cannot answer, waits --timeout seconds for the guest to power off,
 * then ends the VMM as SIGTERM does (PUT /actions Stop), and kills it if even that fails.
 */
static int vm_stop(const struct cli_globals *g, int argc, char **argv)
{
	bool force = false;
	long long timeout = 10;
	int c;
	while ((c = cli_getopt_cmd(&cmd_vm_stop, argc, argv)) != -1) {
		if (c == OPT_FORCE)
			force = true;
		else if (c == OPT_TIMEOUT) {
			if (!cli_parse_int(&cmd_vm_stop, "--timeout", optarg, 0, 3600, &timeout))
				return 1;
		} else
			return cli_opt_status(c);
	}
	if (!cli_nargs(&cmd_vm_stop, argc - optind, 1, 1, "NAME"))
		return 1;
	const char *name = argv[optind];
	struct kapsel_error *err = NULL;
	struct kapsel_vm_info info = {0};
	if (kapsel_vm_inspect(g->root, name, &info, NULL, &err) < 0)
		return cli_fail_err(err);
	pid_t pid = (pid_t)info.pid;
	bool running = info.state && !strcmp(info.state, "Running");
	kapsel_vm_info_clear(&info);
	if (!force) {
		if (running) {
			int rc = vm_request(g, "stop", name, "PUT", "/actions",
					    "{\"action_type\":\"PowerButton\"}");
			if (rc)
				return vm_gone_within(g, name, 0) ? 0 : rc;
			if (vm_gone_within(g, name, timeout * 10))
				return 0;
			fprintf(stderr,
				"kapsel: vm stop %s: the guest did not power off within %llds: "
				"stopping the VMM\n",
				name, timeout);
		}
		int rc =
		    vm_request(g, "stop", name, "PUT", "/actions", "{\"action_type\":\"Stop\"}");
		if (rc)
			return vm_gone_within(g, name, 0) ? 0 : rc;
		if (vm_gone_within(g, name, 100))
			return 0;
		fprintf(stderr,
			"kapsel: vm stop %s: the VMM still runs 10 s after Stop: killing it\n",
			name);
	}
	if (kill(pid, SIGKILL) < 0 && errno != ESRCH)
		return cli_fail("vm stop %s: kill %d: %s", name, (int)pid, strerror(errno));
	/* A killed VMM cannot remove its directory; the lookup of a dead socket does. */
	for (int i = 0; i < 50 && kill(pid, 0) == 0; i++)
		usleep(100000);
	char *p = NULL;
	if (kapsel_vm_api_path(g->root, name, &p, &err) < 0)
		kapsel_error_free(err);
	free(p);
	return 0;
}

/* SIZE of `vm balloon`: MiB as a plain number (Firecracker's amount_mib), or with M or G. */
static bool parse_balloon_mib(const char *s, unsigned long long *mib)
{
	char *end;
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned long long mul = !*end					  ? 1
				 : !strcmp(end, "M") || !strcmp(end, "m") ? 1
				 : !strcmp(end, "G") || !strcmp(end, "g") ? 1024
									  : 0;
	if (errno || !mul || v > (0xffffffffULL >> 8) / mul)
		return false;
	*mib = v * mul;
	return true;
}

static const struct option balloon_options[] = {
    {"stats", no_argument, NULL, OPT_STATS},
    {"stats-interval", required_argument, NULL, OPT_STATS_INTERVAL},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int vm_balloon(const struct cli_globals *g, int argc, char **argv)
{
	bool stats = false;
	const char *interval = NULL;
	int c;
	while ((c = cli_getopt_cmd(&cmd_vm_balloon, argc, argv)) != -1) {
		if (c == OPT_STATS)
			stats = true;
		else if (c == OPT_STATS_INTERVAL)
			interval = optarg;
		else
			return cli_opt_status(c);
	}
	if (!cli_nargs(&cmd_vm_balloon, argc - optind, 1, 2, "NAME [SIZE]"))
		return 1;
	const char *name = argv[optind], *size = argc - optind == 2 ? argv[optind + 1] : NULL;
	char json[96];
	if (interval) {
		long long n;
		if (!cli_parse_int(&cmd_vm_balloon, "--stats-interval", interval, 0, 86400, &n))
			return 1;
		snprintf(json, sizeof(json), "{\"stats_polling_interval_s\":%lld}", n);
		int rc = vm_request(g, "balloon", name, "PATCH", "/balloon/statistics", json);
		if (rc || (!size && !stats))
			return rc;
	}
	if (size) {
		unsigned long long mib;
		if (!parse_balloon_mib(size, &mib))
			return cli_fail(
			    "vm balloon %s: SIZE: expected MiB (a number, or with an M or "
			    "G suffix), got \"%s\"",
			    name, size);
		snprintf(json, sizeof(json), "{\"amount_mib\":%llu}", mib);
		int rc = vm_request(g, "balloon", name, "PATCH", "/balloon", json);
		if (rc || !stats)
			return rc;
	}
	struct kapsel_error *err = NULL;
	char *path = NULL, *body = NULL;
	if (kapsel_vm_api_path(g->root, name, &path, &err) < 0)
		return cli_fail_err(err);
	int r = kapsel_vm_api_call(path, "GET", stats ? "/balloon/statistics" : "/balloon", NULL,
				   &body, &err);
	free(path);
	if (r < 0)
		return cli_fail_err(err);
	int rc = 0;
	if (r / 100 != 2)
		rc = cli_fail("vm balloon %s: %s", name, fault_message(body));
	else
		printf("%s\n", body);
	free(body);
	return rc;
}

static const char vm_usage[] =
    "Usage: kapsel vm <command> [options]\n"
    "\n"
    "Commands:\n"
    "  run                     boot a kernel in a micro-VM\n"
    "  disk create             create a qcow2 disk image\n"
    "  ls                      list the named VMs that are running\n"
    "  inspect NAME            describe a running VM (its API's GET /)\n"
    "  pause NAME              pause a VM's vCPUs (its clock stops too)\n"
    "  resume NAME             resume a paused VM\n"
    "  wake NAME               wake a VM whose guest suspended to RAM (ACPI S3)\n"
    "  stop [--force] NAME     stop a VM (--force: kill its VMM)\n"
    "  balloon NAME [SIZE]     show or set how much RAM the VM's balloon takes back\n"
    "  migrate NAME DEST       live-migrate a VM to a 'vm run --incoming DEST'\n"
    "\n"
    "Run 'kapsel vm <command> --help' for its options.\n";

static int vm_disk(const struct cli_globals *g, int argc, char **argv)
{
	return cli_dispatch(&cmd_vm_disk, g, argc, argv);
}

static int vm_cmd(const struct cli_globals *g, int argc, char **argv)
{
	return cli_dispatch(&cmd_vm, g, argc, argv);
}

static const struct cli_command cmd_vm_run = {
    .name = "vm run",
    .summary = "boot a kernel in a micro-VM",
    .run = vm_run,
    .usage = run_usage,
    .shortopts = "h",
    .options = run_options,
};
static const struct cli_command cmd_vm_disk_create = {
    .name = "vm disk create",
    .operands = CLI_OPERAND_FILE,
    .summary = "create a qcow2 disk image",
    .run = vm_disk_create,
    .usage = disk_create_usage,
    .shortopts = "h",
    .options = disk_create_options,
};
static const struct cli_command cmd_vm_disk = {
    .name = "vm disk",
    .summary = "make disk images",
    .run = vm_disk,
    .usage = "Usage: kapsel vm disk create [options] FILE [SIZE]\n"
	     "\n"
	     "Run 'kapsel vm disk create --help' for its options.\n",
    .subcommands =
	(const struct cli_subcommand[]){
	    {"create", &cmd_vm_disk_create},
	    {0},
	},
};

static const struct cli_command cmd_vm_ls = {
    .name = "vm ls",
    .summary = "list the running named VMs",
    .run = vm_ls,
    .usage = "Usage: kapsel vm ls [--format json|table]\n"
	     "\n"
	     "List the VMs started with --name that are running (under --root).\n"
	     "\n"
	     "Options:\n"
	     "  --format FMT            json (GET / of each VM, as an array) or table\n"
	     "  --help, -h              print this help\n",
    .shortopts = "h",
    .options = ls_options,
};
static const struct option name_only_options[] = {
    {"help", no_argument, NULL, 'h'},
    {0},
};
static const struct cli_command cmd_vm_inspect = {
    .name = "vm inspect",
    .summary = "describe a running VM",
    .run = vm_inspect,
    .usage = "Usage: kapsel vm inspect NAME\n"
	     "\n"
	     "Print the VM's description as JSON (its API's GET /): id, state, vcpus, mem_mib,\n"
	     "kernel, started, pid, api_socket.\n",
    .shortopts = "h",
    .options = name_only_options,
};
static const struct cli_command cmd_vm_pause = {
    .name = "vm pause",
    .summary = "pause a VM",
    .run = vm_pause,
    .usage = "Usage: kapsel vm pause NAME\n"
	     "\n"
	     "Stop the VM's vCPUs; its clocks (kvmclock, TSC) stop with them.\n",
    .shortopts = "h",
    .options = name_only_options,
};
static const struct cli_command cmd_vm_resume = {
    .name = "vm resume",
    .summary = "resume a paused VM",
    .run = vm_resume,
    .usage = "Usage: kapsel vm resume NAME\n",
    .shortopts = "h",
    .options = name_only_options,
};
static const struct cli_command cmd_vm_wake = {
    .name = "vm wake",
    .summary = "wake a VM whose guest suspended to RAM",
    .run = vm_wake,
    .usage = "Usage: kapsel vm wake NAME\n"
	     "\n"
	     "Wake VM NAME from ACPI S3 (the guest suspended itself; needs --acpi full): its\n"
	     "vCPUs start again at the waking vector the guest left in the FACS.\n",
    .shortopts = "h",
    .options = name_only_options,
};
static const struct cli_command cmd_vm_snapshot = {
    .name = "vm snapshot",
    .summary = "save a paused VM to files",
    .run = vm_snapshot,
    .usage = "Usage: kapsel vm snapshot NAME --mem FILE --state FILE [--diff]\n"
	     "\n"
	     "Write the paused VM's RAM to the memory file and its machine state (vCPUs, irqchip,\n"
	     "PIT, clock, devices) to the state file (docs/vm.md, Snapshot format). VMs with\n"
	     "virtio devices are saved quiesced (virtio-fs is refused). Continue it with\n"
	     "'kapsel vm restore'.\n"
	     "\n"
	     "Options:\n"
	     "  --mem FILE              where to write guest RAM\n"
	     "  --state FILE            where to write the machine state\n"
	     "  --diff                  write only the pages dirtied since the VM's last snapshot\n"
	     "                          (a sparse memory file: copy its data onto the previous\n"
	     "                          memory file to restore; docs/vm.md, Diff snapshots)\n",
    .shortopts = "h",
    .options = snapshot_options,
};
static const struct cli_command cmd_vm_restore = {
    .name = "vm restore",
    .summary = "continue a VM from a snapshot",
    .run = vm_restore,
    .usage = "Usage: kapsel vm restore --mem FILE --state FILE [--name NAME] [OPTIONS]\n"
	     "\n"
	     "Create a VM of the snapshot's shape, map the memory file copy-on-write (pages load\n"
	     "when the guest touches them), load the machine state and run the guest on from\n"
	     "where it was saved. --cpus and --cpu-features, when given, must match the\n"
	     "snapshot's. The snapshot's virtio devices are given again, as to 'vm run' (the\n"
	     "same disks, networks, rng, consoles, vsock, balloon and --transport, in the same\n"
	     "order); a different set is refused.\n"
	     "\n"
	     "Options:\n"
	     "  --mem FILE              the memory file of 'vm snapshot'\n"
	     "  --state FILE            the state file of 'vm snapshot'\n"
	     "  --console MODE          stdio (default), none or file:PATH\n"
	     "  --name NAME             serve the control API as 'vm run --name' does\n"
	     "  --api-sock PATH         serve the control API on PATH\n"
	     "  --cpus N                refuse unless the snapshot has N vCPUs\n"
	     "  --cpu-features LIST     refuse unless the snapshot's features are LIST\n"
	     "  --accel kvm|soft|auto   refuse unless the snapshot is of that accelerator\n"
	     "                          (default auto: the snapshot's)\n"
	     "  --disk SPEC             a disk of the snapshot, as 'vm run --disk' takes it\n"
	     "  --net SPEC              a network card of the snapshot, as 'vm run --net'\n"
	     "  --rng                   the snapshot's virtio-rng\n"
	     "  --virtio-console        the snapshot's virtio console\n"
	     "  --vsock cid=N,socket=PATH\n"
	     "                          the snapshot's vsock (its connections are reset)\n"
	     "  --balloon SPEC          the snapshot's balloon, as 'vm run --balloon'\n"
	     "  --fs SPEC               refused: virtio-fs state cannot be saved\n"
	     "  --transport pci|mmio    the snapshot's transport (default pci)\n",
    .shortopts = "h",
    .options = restore_options,
};
static const struct cli_command cmd_vm_stop = {
    .name = "vm stop",
    .summary = "stop a VM",
    .run = vm_stop,
    .usage = "Usage: kapsel vm stop [--force] [--timeout SECONDS] NAME\n"
	     "\n"
	     "Press the VM's ACPI power button (as QEMU's system_powerdown does) and wait up to\n"
	     "--timeout seconds (default 10) for the guest to power off; then end the VMM as\n"
	     "SIGTERM does, and kill it if it still runs 10 s later. A paused or suspended\n"
	     "guest cannot answer the button: its VMM is ended at once. --force kills the VMM\n"
	     "at once.\n"
	     "\n"
	     "Options:\n"
	     "  --force                 kill the VMM (SIGKILL) without asking\n"
	     "  --timeout SECONDS       how long the guest has to power off (default 10)\n",
    .shortopts = "h",
    .options = stop_options,
};

static const struct cli_command cmd_vm_balloon = {
    .name = "vm balloon",
    .summary = "show or set a VM's memory balloon",
    .run = vm_balloon,
    .usage =
	"Usage: kapsel vm balloon NAME [SIZE] [--stats] [--stats-interval SECONDS]\n"
	"\n"
	"With SIZE, ask the guest of VM NAME (started with --balloon) to give SIZE of its RAM\n"
	"back to the host (0 deflates the balloon completely); the balloon's driver inflates\n"
	"or deflates to it. SIZE is MiB, as a number or with an M or G suffix. Without SIZE,\n"
	"print the balloon's settings (the API's GET /balloon) as JSON.\n"
	"\n"
	"Options:\n"
	"  --stats                 print the statistics the guest last sent (GET\n"
	"                          /balloon/statistics; needs stats_interval_s)\n"
	"  --stats-interval SECONDS\n"
	"                          how often the guest is asked for statistics\n",
    .shortopts = "h",
    .options = balloon_options,
};

static const struct cli_command cmd_vm_migrate = {
    .name = "vm migrate",
    .summary = "move a running VM to another kapsel on this machine",
    .run = vm_migrate,
    .usage = "Usage: kapsel vm migrate [--max-downtime MS] [--max-iterations N] NAME DEST\n"
	     "       kapsel vm migrate --cancel NAME\n"
	     "\n"
	     "Live-migrate VM NAME to a 'kapsel vm run --incoming DEST' on this machine; DEST is\n"
	     "unix:PATH or tcp:127.0.0.1:PORT. RAM is copied while the guest runs, then the pages\n"
	     "it dirtied, round after round, until the rest fits in --max-downtime at the\n"
	     "measured bandwidth (or after --max-iterations rounds); then the guest is paused,\n"
	     "the rest and the machine state go across, the destination resumes it and the\n"
	     "source exits. Prints the rounds, the downtime and the total time. On any failure\n"
	     "or --cancel the guest runs on at the source.\n"
	     "\n"
	     "Options:\n"
	     "  --max-downtime MS       the pause to aim for (default 300)\n"
	     "  --max-iterations N      pre-copy rounds at most (default 30)\n"
	     "  --cancel                stop NAME's migration in progress\n",
    .shortopts = "h",
    .options = migrate_options,
};

const struct cli_command cmd_vm = {
    .name = "vm",
    .summary = "run a kernel in a KVM micro-VM (vm run)",
    .run = vm_cmd,
    .usage = vm_usage,
    .subcommands =
	(const struct cli_subcommand[]){
	    {"run", &cmd_vm_run},
	    {"disk", &cmd_vm_disk},
	    {"ls", &cmd_vm_ls},
	    {"inspect", &cmd_vm_inspect},
	    {"pause", &cmd_vm_pause},
	    {"resume", &cmd_vm_resume},
	    {"wake", &cmd_vm_wake},
	    {"stop", &cmd_vm_stop},
	    {"balloon", &cmd_vm_balloon},
	    {"snapshot", &cmd_vm_snapshot},
	    {"restore", &cmd_vm_restore},
	    {"migrate", &cmd_vm_migrate},
	    {0},
	},
};
