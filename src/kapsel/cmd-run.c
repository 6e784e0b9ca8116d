/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `run` is two commands in one: runc's (a bundle and an id; containerd and podman always pass
 * --bundle) and podman's (an image and a command). The rule, also in --help: --bundle/-b, or
 * runc's exact shape (only runc's flags, one argument that names no image, ./config.json
 * present), means runc's form; anything else is an image.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/image.h>
#include <kapsel/oci-vm.h>
#include <kapsel/registry.h>
#include <kapsel/run.h>

#include "commands.h"

enum {
	OPT_RM = 0x100,
	OPT_NAME,
	OPT_ENTRYPOINT,
	OPT_CPUS,
	OPT_PIDS_LIMIT,
	OPT_READ_ONLY,
	OPT_HOSTNAME,
	OPT_NET,
	OPT_CAP_ADD,
	OPT_CAP_DROP,
	OPT_PRIVILEGED,
	OPT_SECURITY_OPT,
	OPT_IP,
	OPT_IP6,
	OPT_MAC,
	OPT_DNS,
	OPT_ADD_HOST,
	OPT_ALIAS,
	OPT_RESTART,
	OPT_ENV_FILE,
	OPT_ULIMIT,
	OPT_DEVICE,
	OPT_TMPFS,
	OPT_MOUNT,
	OPT_INIT,
	OPT_INIT_PATH,
	OPT_PULL,
	OPT_EXPOSE,
	OPT_VM,
	OPT_VM_KERNEL,
	OPT_VM_CPUS,
	OPT_VM_MEMORY,
};

static const struct option image_options[] = {
    {"rm", no_argument, NULL, OPT_RM},
    {"detach", no_argument, NULL, 'd'},
    {"interactive", no_argument, NULL, 'i'},
    {"tty", no_argument, NULL, 't'},
    {"name", required_argument, NULL, OPT_NAME},
    {"env", required_argument, NULL, 'e'},
    {"workdir", required_argument, NULL, 'w'},
    {"user", required_argument, NULL, 'u'},
    {"entrypoint", required_argument, NULL, OPT_ENTRYPOINT},
    {"memory", required_argument, NULL, 'm'},
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"pids-limit", required_argument, NULL, OPT_PIDS_LIMIT},
    {"read-only", no_argument, NULL, OPT_READ_ONLY},
    {"volume", required_argument, NULL, 'v'},
    {"hostname", required_argument, NULL, OPT_HOSTNAME},
    {"net", required_argument, NULL, OPT_NET},
    {"network", required_argument, NULL, OPT_NET},
    {"ip", required_argument, NULL, OPT_IP},
    {"ip6", required_argument, NULL, OPT_IP6},
    {"mac-address", required_argument, NULL, OPT_MAC},
    {"publish", required_argument, NULL, 'p'},
    {"publish-all", no_argument, NULL, 'P'},
    {"expose", required_argument, NULL, OPT_EXPOSE},
    {"dns", required_argument, NULL, OPT_DNS},
    {"add-host", required_argument, NULL, OPT_ADD_HOST},
    {"network-alias", required_argument, NULL, OPT_ALIAS},
    {"cap-add", required_argument, NULL, OPT_CAP_ADD},
    {"cap-drop", required_argument, NULL, OPT_CAP_DROP},
    {"privileged", no_argument, NULL, OPT_PRIVILEGED},
    {"security-opt", required_argument, NULL, OPT_SECURITY_OPT},
    {"restart", required_argument, NULL, OPT_RESTART},
    {"env-file", required_argument, NULL, OPT_ENV_FILE},
    {"ulimit", required_argument, NULL, OPT_ULIMIT},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"tmpfs", required_argument, NULL, OPT_TMPFS},
    {"mount", required_argument, NULL, OPT_MOUNT},
    {"init", no_argument, NULL, OPT_INIT},
    {"init-path", required_argument, NULL, OPT_INIT_PATH},
    {"pull", required_argument, NULL, OPT_PULL},
    {"vm", no_argument, NULL, OPT_VM},
    {"vm-kernel", required_argument, NULL, OPT_VM_KERNEL},
    {"vm-cpus", required_argument, NULL, OPT_VM_CPUS},
    {"vm-memory", required_argument, NULL, OPT_VM_MEMORY},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* Every flag of either form that takes a value (to find the positional arguments). */
static bool takes_value(const char *arg)
{
	static const char *const with_value[] = {
	    "b",
	    "bundle",
	    "pid-file",
	    "console-socket",
	    "preserve-fds",
	    "name",
	    "e",
	    "env",
	    "w",
	    "workdir",
	    "u",
	    "user",
	    "entrypoint",
	    "m",
	    "memory",
	    "cpus",
	    "pids-limit",
	    "v",
	    "volume",
	    "hostname",
	    "net",
	    "network",
	    "ip",
	    "ip6",
	    "mac-address",
	    "p",
	    "publish",
	    "expose",
	    "dns",
	    "add-host",
	    "network-alias",
	    "cap-add",
	    "cap-drop",
	    "security-opt",
	    "restart",
	    "env-file",
	    "ulimit",
	    "device",
	    "tmpfs",
	    "mount",
	    "init-path",
	    "pull",
	    "vm-kernel",
	    "vm-cpus",
	    "vm-memory",
	};
	const char *f = arg + 1 + (arg[1] == '-');
	if (strchr(f, '='))
		return false;
	for (size_t i = 0; i < sizeof(with_value) / sizeof(with_value[0]); i++)
		if (!strcmp(f, with_value[i]))
			return true;
	return false;
}

/* runc run's own flags: any of these, and no image flag, keep runc's shape possible. */
static bool runc_flag(const char *f)
{
	static const char *const runc[] = {
	    "d",	   "detach",	     "pid-file",     "console-socket",
	    "no-pivot",	   "no-new-keyring", "preserve-fds", "keep",
	    "no-subreaper"};
	size_t n = strcspn(f, "=");
	for (size_t i = 0; i < sizeof(runc) / sizeof(runc[0]); i++)
		if (strlen(runc[i]) == n && !strncmp(f, runc[i], n))
			return true;
	return false;
}

/*
 * Whether ref names the embedded default image (docker.io/library/busybox:latest) in one of
 * the short forms docker's reference normalisation expands to it (ParseNormalizedNamed).
 */
static bool names_default_image(const char *ref)
{
	static const char *const prefix[] = {"", "docker.io/", "docker.io/library/"};
	static const char *const suffix[] = {"", ":latest"};
	char full[512];
	for (size_t i = 0; i < 3; i++)
		for (size_t j = 0; j < 2; j++) {
			snprintf(full, sizeof(full), "%s%s%s", prefix[i], ref, suffix[j]);
			if (!strcmp(full, KAPSEL_DEFAULT_IMAGE))
				return true;
		}
	return false;
}

static bool names_image(const struct cli_globals *g, const char *ref)
{
	if (names_default_image(ref))
		return true;
	char *json = NULL;
	struct kapsel_error *err = NULL;
	int r = kapsel_image_inspect(g->store, ref, &json, &err);
	free(json);
	kapsel_error_free(err);
	return r == 0;
}

/*
 * The rule in the header comment: --bundle, or runc's exact shape (runc's flags only, one
 * argument, ./config.json) unless that argument names an image: `kapsel run busybox` in a
 * bundle directory is still an image run.
 */
static bool runc_form(const struct cli_globals *g, int argc, char **argv)
{
	int i = 1;
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		const char *f = a + 1 + (a[1] == '-');
		if (!strcmp(f, "bundle") || !strncmp(f, "bundle=", 7) || !strncmp(a, "-b", 2))
			return true;
		if (!runc_flag(f))
			return false;
		if (takes_value(a))
			i++;
	}
	return argc - i == 1 && access("config.json", F_OK) == 0 && !names_image(g, argv[i]);
}

static int run_bundle(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_create_options o = {0};
	struct kapsel_error *err = NULL;
	int r = cli_parse_create(&cmd_run, g, argc, argv, &o);
	if (r >= 0)
		return r;
	/* Without --detach the container's exit status is ours, like a shell's. */
	int vm = kapsel_oci_vm_bundle(o.bundle, &err);
	if (vm < 0)
		return cli_fail_err(err);
	r = vm ? kapsel_oci_vm_run(&o, g->store, &err) : kapsel_container_run(&o, &err);
	if (r < 0)
		return cli_fail_err(err);
	return r;
}

/* The repeatable flags for what surrounds the process (--env-file ... --mount): at most argc
 * values each, NULL-terminated, wired into the options once. */
struct surround {
	char **env_files, **ulimits, **devices, **tmpfs, **mounts;
	size_t n_env_files, n_ulimits, n_devices, n_tmpfs, n_mounts;
};

static bool surround_init(struct surround *s, int argc, struct kapsel_run_options *o)
{
	size_t n = (size_t)argc + 1;
	*s = (struct surround){0};
	o->env_files = s->env_files = calloc(n, sizeof(char *));
	o->ulimits = s->ulimits = calloc(n, sizeof(char *));
	o->devices = s->devices = calloc(n, sizeof(char *));
	o->tmpfs = s->tmpfs = calloc(n, sizeof(char *));
	o->mounts = s->mounts = calloc(n, sizeof(char *));
	return s->env_files && s->ulimits && s->devices && s->tmpfs && s->mounts;
}

static void surround_free(struct surround *s)
{
	free(s->env_files);
	free(s->ulimits);
	free(s->devices);
	free(s->tmpfs);
	free(s->mounts);
}

/* One of the flags above (or --init, --init-path); false when c is none of them. */
static bool surround_flag(struct surround *s, int c, char *arg, struct kapsel_run_options *o)
{
	switch (c) {
	case OPT_ENV_FILE:
		s->env_files[s->n_env_files++] = arg;
		return true;
	case OPT_ULIMIT:
		s->ulimits[s->n_ulimits++] = arg;
		return true;
	case OPT_DEVICE:
		s->devices[s->n_devices++] = arg;
		return true;
	case OPT_TMPFS:
		s->tmpfs[s->n_tmpfs++] = arg;
		return true;
	case OPT_MOUNT:
		s->mounts[s->n_mounts++] = arg;
		return true;
	case OPT_INIT:
		o->init = true;
		return true;
	case OPT_INIT_PATH:
		o->init_path = arg;
		return true;
	default:
		return false;
	}
}

static int run_image(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_run_options o = {.store = g->store, .root = g->root};
	/* Repeatable flags: at most argc values each. */
	char **env = calloc((size_t)argc + 1, sizeof(char *));
	char **vols = calloc((size_t)argc + 1, sizeof(char *));
	char **add = calloc((size_t)argc + 1, sizeof(char *));
	char **drop = calloc((size_t)argc + 1, sizeof(char *));
	char **sec = calloc((size_t)argc + 1, sizeof(char *));
	char **ports = calloc((size_t)argc + 1, sizeof(char *));
	char **dns = calloc((size_t)argc + 1, sizeof(char *));
	char **hosts = calloc((size_t)argc + 1, sizeof(char *));
	char **aliases = calloc((size_t)argc + 1, sizeof(char *));
	char **expose = calloc((size_t)argc + 1, sizeof(char *));
	size_t ne = 0, nv = 0, na = 0, nd = 0, ns = 0, np = 0, nn = 0, nh = 0, nal = 0, nx = 0;
	struct surround sur;
	bool sur_ok = surround_init(&sur, argc, &o);
	/* podman's exit status for its own errors, usage errors included (podman-run(1)). */
	int status = EXIT_ENGINE, c;
	long long n;
	enum kapsel_pull_policy pull = KAPSEL_PULL_MISSING;
	struct kapsel_pull_options po = {0};
	char *image = NULL;
	if (!env || !vols || !add || !drop || !sec || !ports || !dns || !hosts || !aliases ||
	    !expose || !sur_ok) {
		cli_fail("run: out of memory");
		goto out;
	}
	o.env = env;
	o.volumes = vols;
	o.cap_add = add;
	o.cap_drop = drop;
	o.security_opts = sec;
	o.ports = ports;
	o.dns = dns;
	o.add_hosts = hosts;
	o.aliases = aliases;
	o.expose = expose;
	while ((c = cli_getopt_cmd(&cmd_run, argc, argv)) != -1) {
		switch (c) {
		case OPT_RM:
			o.rm = true;
			break;
		case 'd':
			o.detach = true;
			break;
		case 'i':
			o.interactive = true;
			break;
		case 't':
			o.tty = true;
			break;
		case OPT_NAME:
			o.name = optarg;
			break;
		case 'e':
			env[ne++] = optarg;
			break;
		case 'w':
			o.workdir = optarg;
			break;
		case 'u':
			o.user = optarg;
			break;
		case OPT_ENTRYPOINT:
			o.entrypoint = optarg;
			break;
		case 'm':
			o.memory = optarg;
			break;
		case OPT_CPUS:
			o.cpus = optarg;
			break;
		case OPT_PIDS_LIMIT:
			if (!cli_parse_int(&cmd_run, "--pids-limit", optarg, -1, INT64_MAX, &n))
				goto out;
			o.has_pids_limit = true;
			o.pids_limit = n;
			break;
		case OPT_READ_ONLY:
			o.read_only = true;
			break;
		case 'v':
			vols[nv++] = optarg;
			break;
		case OPT_HOSTNAME:
			o.hostname = optarg;
			break;
		case OPT_NET:
			o.net = optarg;
			break;
		case OPT_IP:
			o.ip = optarg;
			break;
		case OPT_IP6:
			o.ip6 = optarg;
			break;
		case OPT_MAC:
			o.mac = optarg;
			break;
		case 'p':
			ports[np++] = optarg;
			break;
		case 'P':
			o.publish_all = true;
			break;
		case OPT_EXPOSE:
			expose[nx++] = optarg;
			break;
		case OPT_DNS:
			dns[nn++] = optarg;
			break;
		case OPT_ADD_HOST:
			hosts[nh++] = optarg;
			break;
		case OPT_ALIAS:
			aliases[nal++] = optarg;
			break;
		case OPT_CAP_ADD:
			add[na++] = optarg;
			break;
		case OPT_CAP_DROP:
			drop[nd++] = optarg;
			break;
		case OPT_PRIVILEGED:
			o.privileged = true;
			break;
		case OPT_SECURITY_OPT:
			sec[ns++] = optarg;
			break;
		case OPT_RESTART:
			o.restart = optarg;
			break;
		case OPT_VM:
			o.vm = true;
			break;
		case OPT_VM_KERNEL:
			o.vm_kernel = optarg;
			break;
		case OPT_VM_CPUS:
			o.vm_cpus = optarg;
			break;
		case OPT_VM_MEMORY:
			o.vm_memory = optarg;
			break;
		case OPT_PULL: {
			struct kapsel_error *perr = NULL;
			if (kapsel_pull_policy_parse(optarg, &pull, &perr) < 0) {
				cli_fail_err(perr);
				goto out;
			}
			break;
		}
		case 'q':
			po.quiet = true;
			break;
		default:
			if (surround_flag(&sur, c, optarg, &o))
				break;
			status = c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
			goto out;
		}
	}
	if (!cli_nargs(&cmd_run, argc - optind, 1, -1, "IMAGE [COMMAND [ARG...]]"))
		goto out;
	o.image = argv[optind];
	o.cmd = argv + optind + 1;
	if (o.tty && o.interactive && !o.detach && !isatty(STDIN_FILENO)) {
		/* docker's and podman's words; without the check the relay would wait forever. */
		cli_fail("run: the input device is not a TTY");
		goto out;
	}
	if (cli_check_systemd_cgroup(&cmd_run, g))
		goto out;

	struct kapsel_error *err = NULL;
	char *name = NULL;
	/* Pulled first when --pull says so (progress on stderr); a pulled image runs under the
	 * name it was pulled as, a stored one under the name given (what ps shows). */
	/* --vm's refusals before the image is pulled: a refused run leaves the store as it was. */
	if (o.vm && kapsel_image_run_vm_check(&o, &err) < 0) {
		status = cli_fail_podman(err);
		goto out;
	}
	int r = kapsel_image_ensure(g->store, o.image, pull, &po, &image, &err);
	if (r < 0) {
		status = cli_fail_podman(err);
		goto out;
	}
	if (r == 1)
		o.image = image;
	r = kapsel_image_run(&o, o.detach ? &name : NULL, &err);
	if (r < 0) {
		status = cli_fail_podman(err);
		goto out;
	}
	if (o.detach)
		puts(name);
	free(name);
	status = r;
out:
	free(image);
	free(env);
	free(vols);
	free(add);
	free(drop);
	free(sec);
	free(ports);
	free(dns);
	free(hosts);
	free(aliases);
	free(expose);
	surround_free(&sur);
	return status;
}

static int run(const struct cli_globals *g, int argc, char **argv)
{
	return runc_form(g, argc, argv) ? run_bundle(g, argc, argv) : run_image(g, argc, argv);
}

const struct cli_command cmd_run = {
    .name = "run",
    .operands = CLI_OPERAND_IMAGE,
    .shortopts = "dite:w:u:m:v:p:Pqh",
    .options = image_options,
    .more_options = cli_run_runc_options,
    .summary = "run a container from an image, or from a bundle (runc)",
    .run = run,
    .argv_after = 1,
    .usage =
	"Usage: kapsel run [options] IMAGE [COMMAND [ARG...]]\n"
	"       kapsel run [--bundle DIR] [runtime options] <container-id>\n"
	"\n"
	"Which form: --bundle (-b) given, or only runtime flags, exactly one argument that\n"
	"names no image, and a config.json in the current directory, means the runtime form\n"
	"(runc's run); anything else runs an image. Options go before IMAGE; what follows it\n"
	"is the command. \"--\" ends the options.\n"
	"\n"
	"Image form: like podman run. The rootfs is an overlay of the image's layers; the\n"
	"container's name is its runtime id (kapsel exec/kill/state NAME work on it). An image\n"
	"the store lacks is pulled (the embedded busybox is loaded); a short name resolves\n"
	"through registries.conf: alias, localhost/NAME, then unqualified-search-registries.\n"
	"Exit status: the container's; 125 when kapsel fails (usage errors included), 126\n"
	"when the command cannot be invoked, 127 when it is not found (as podman).\n"
	"  --rm                    remove the container when it exits\n"
	"  --detach, -d            run in the background; print the name; output to 'kapsel logs'\n"
	"  --interactive, -i       keep stdin attached (default: /dev/null)\n"
	"  --tty, -t               allocate a pseudo-terminal (not with -d)\n"
	"  --name NAME             container name (default kapsel-<12 hex>)\n"
	"  --env, -e K=V|K         set an environment variable (K alone: from this environment)\n"
	"  --workdir, -w DIR       working directory (created when missing)\n"
	"  --user, -u U[:G]        user and group, names from the image's /etc/passwd, /etc/group\n"
	"  --entrypoint E          override the entrypoint (a JSON array, or \"\" to clear it)\n"
	"  --memory, -m SIZE       memory limit (b, k, m, g; at least 6m)\n"
	"  --cpus N                CPU quota in CPUs (0.5 = half of one)\n"
	"  --pids-limit N          maximum number of processes (default 2048; 0 or -1: none)\n"
	"  --read-only             read-only root filesystem (tmpfs on /tmp, /var/tmp, /run)\n"
	"  --volume, -v H:C[:ro]   bind-mount host path H (must exist) at C; H a name\n"
	"                          ([a-zA-Z0-9][a-zA-Z0-9_.-]*): the named volume (made when\n"
	"                          missing, filled from the image; options ro, rw, nocopy)\n"
	"  --vm                    run it in a micro-VM with its own kernel (docs/vm.md, run "
	"--vm)\n"
	"  --vm-kernel FILE        the guest kernel (else $KAPSEL_VM_KERNEL, else the one\n"
	"                          scripts/setup.sh put in /usr/local/lib/kapsel/vm-kernel)\n"
	"  --vm-cpus N             the VM's vCPUs (else --cpus rounded up, else 1)\n"
	"  --vm-memory SIZE        the VM's memory (else --memory, else 512M)\n"
	"  --mount type=bind|tmpfs|volume,src=S,dst=D[,ro][,...]\n"
	"                          a mount as podman's --mount: bind-propagation=P,\n"
	"                          bind-nonrecursive (bind); tmpfs-size=N, tmpfs-mode=M\n"
	"                          (tmpfs); src=NAME, volume-nocopy (volume)\n"
	"  --tmpfs PATH[:OPTS]     a tmpfs at PATH (rw,noexec,nosuid,nodev, then OPTS:\n"
	"                          size=, mode=, uid=, gid=, exec, ...)\n"
	"  --env-file FILE         KEY=VALUE lines (KEY alone: from this environment;\n"
	"                          # comments), before --env\n"
	"  --ulimit NAME=SOFT[:HARD]\n"
	"                          a resource limit (nofile, nproc, core, memlock, stack, ...;\n"
	"                          -1 or unlimited)\n"
	"  --device H[:C][:rwm]    the host device node H at C (default H), allowed rwm\n"
	"  --init                  run kapsel-init as PID 1: it reaps orphans, forwards\n"
	"                          signals and exits with the command's status\n"
	"  --init-path PATH        another init for --init\n"
	"  --hostname NAME         host name (default: the container name)\n"
	"  --net none|host|NETWORK own network namespace with lo only (default), the host's, or\n"
	"                          one on a network (kapsel network ls; the default is kapsel)\n"
	"  --net container:NAME    the network namespace of running container NAME\n"
	"  --net ns:PATH           the network namespace bound at PATH\n"
	"  --net pasta             a user-mode stack (passt's pasta); rootless -p's default\n"
	"  --ip IP                 the container's address on the network\n"
	"  --ip6 IP6               its IPv6 address on a dual-stack network (default: derived\n"
	"                          from its IPv4 address)\n"
	"  --mac-address MAC       its MAC address (xx:xx:xx:xx:xx:xx)\n"
	"  --publish, -p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]\n"
	"                          forward a host port to the container (with --net NETWORK)\n"
	"  --publish-all, -P       publish every exposed port (the image's and --expose) to a\n"
	"                          free host port (kapsel port NAME shows them)\n"
	"  --expose PORT[/PROTO]   one more exposed port, for -P\n"
	"  --dns IP                nameserver for /etc/resolv.conf\n"
	"  --add-host NAME:IP      a line for /etc/hosts\n"
	"  --network-alias NAME    another name the network's responder gives out for it\n"
	"  --cap-add CAP           add a capability (ALL: every one)\n"
	"  --cap-drop CAP          drop a capability (ALL: every one)\n"
	"  --privileged            all capabilities and devices, no seccomp, no masked paths\n"
	"  --security-opt OPT      seccomp=unconfined|FILE, no-new-privileges, apparmor=P,\n"
	"                          label=disable\n"
	"  --restart POLICY        no (default), on-failure[:N] (a non-zero exit, at most N\n"
	"                          times), always or unless-stopped (until 'kapsel stop');\n"
	"                          kept by the container's monitor; not with --rm\n"
	"  --pull POLICY           missing (default: pull when the store lacks the image),\n"
	"                          always, never (fail instead), newer (pull when the registry's\n"
	"                          digest differs; keep the stored image if it cannot be asked)\n"
	"  --quiet, -q             no pull progress on stderr\n"
	"\n"
	"Runtime form: create and start the container from the bundle's config.json; without\n"
	"--detach wait for it, delete it, and exit with its status.\n"
	"  --bundle, -b DIR        bundle directory (default: current directory)\n"
	"  --detach, -d            return once the container has started\n"
	"  --pid-file FILE         write the container process's pid to FILE\n"
	"  --console-socket PATH   send the pseudo-terminal's master fd to this socket\n"
	"  --no-pivot              do not use pivot_root (for a ramdisk root)\n"
	"  --no-new-keyring        keep the caller's session keyring\n"
	"  --preserve-fds N        pass N more file descriptors (3 .. 3+N-1)\n"
	"  --keep                  accepted for compatibility; the container is still deleted\n"
	"  --no-subreaper          accepted for compatibility; ignored\n"
	"\n"
	"  --help, -h              print this help\n",
};
