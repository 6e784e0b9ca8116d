/* SPDX-License-Identifier: Apache-2.0 */
#include <limits.h>
#include <stdio.h>

#include <kapsel/container.h>
#include <kapsel/log.h>
#include <kapsel/oci-vm.h>

#include "commands.h"

enum {
	OPT_PID_FILE = 0x100,
	OPT_CONSOLE_SOCKET,
	OPT_NO_PIVOT,
	OPT_NO_NEW_KEYRING,
	OPT_PRESERVE_FDS,
	OPT_NO_SUBREAPER,
	OPT_KEEP,
};

/* runc 1.1 create.go / run.go flag names. */
#define CREATE_OPTIONS                                                                             \
	{"bundle", required_argument, NULL, 'b'},                                                  \
	    {"pid-file", required_argument, NULL, OPT_PID_FILE},                                   \
	    {"console-socket", required_argument, NULL, OPT_CONSOLE_SOCKET},                       \
	    {"no-pivot", no_argument, NULL, OPT_NO_PIVOT},                                         \
	    {"no-new-keyring", no_argument, NULL, OPT_NO_NEW_KEYRING},                             \
	    {"preserve-fds", required_argument, NULL, OPT_PRESERVE_FDS},                           \
	    {"no-subreaper", no_argument, NULL, OPT_NO_SUBREAPER},                                 \
	{                                                                                          \
		"help", no_argument, NULL, 'h'                                                     \
	}

static const struct option create_options[] = {CREATE_OPTIONS, {0}};
const struct option cli_run_runc_options[] = {
    CREATE_OPTIONS,
    {"detach", no_argument, NULL, 'd'},
    {"keep", no_argument, NULL, OPT_KEEP},
    {0},
};

int cli_parse_create(const struct cli_command *cmd, const struct cli_globals *g, int argc,
		     char **argv, struct kapsel_create_options *o)
{
	bool run = cmd == &cmd_run;
	long long n;
	int c;

	o->root = g->root;
	o->systemd_cgroup = g->systemd_cgroup;
	/* run's own table is its image form's; this is runc's. */
	while ((c = run ? cli_getopt(cmd, argc, argv, "b:dh", cli_run_runc_options)
			: cli_getopt_cmd(cmd, argc, argv)) != -1) {
		switch (c) {
		case 'b':
			o->bundle = optarg;
			break;
		case 'd':
			o->detach = true;
			break;
		case OPT_PID_FILE:
			o->pid_file = optarg;
			break;
		case OPT_CONSOLE_SOCKET:
			o->console_socket = optarg;
			break;
		case OPT_NO_PIVOT:
			o->no_pivot = true;
			break;
		case OPT_NO_NEW_KEYRING:
			o->no_new_keyring = true;
			break;
		case OPT_PRESERVE_FDS:
			if (!cli_parse_int(cmd, "--preserve-fds", optarg, 0, INT_MAX - 3, &n))
				return 1;
			o->preserve_fds = (int)n;
			break;
		case OPT_NO_SUBREAPER:
			/* kapsel waits for the container's init itself; a subreaper adds nothing.
			 */
			kapsel_log(KAPSEL_LOG_DEBUG, "--no-subreaper: ignored");
			break;
		case OPT_KEEP:
			kapsel_log(
			    KAPSEL_LOG_WARNING,
			    "--keep is not supported: the container is deleted when it exits");
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(cmd, argc - optind, 1, 1, "container ID"))
		return 1;
	o->id = argv[optind];
	if (cli_check_systemd_cgroup(cmd, g))
		return 1;
	return -1;
}

static int create(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_create_options o = {0};
	struct kapsel_error *err = NULL;
	int r = cli_parse_create(&cmd_create, g, argc, argv, &o);
	if (r >= 0)
		return r;
	/* run.oci.handler=vm: the same container in a micro-VM (docs/vm.md). */
	int vm = kapsel_oci_vm_bundle(o.bundle, &err);
	if (vm < 0)
		return cli_fail_err(err);
	if ((vm ? kapsel_oci_vm_create(&o, g->store, &err) : kapsel_container_create(&o, &err)) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_create = {
    .name = "create",
    .shortopts = "b:h",
    .options = create_options,
    .summary = "create a container (left waiting for start)",
    .run = create,
    .usage = "Usage: kapsel create [options] <container-id>\n"
	     "\n"
	     "Create the container from the bundle's config.json; its process waits until\n"
	     "'kapsel start' runs it.\n"
	     "\n"
	     "Options:\n"
	     "  --bundle, -b DIR        bundle directory (default: current directory)\n"
	     "  --pid-file FILE         write the container process's pid to FILE\n"
	     "  --console-socket PATH   send the pseudo-terminal's master fd to this socket\n"
	     "  --no-pivot              do not use pivot_root (for a ramdisk root)\n"
	     "  --no-new-keyring        keep the caller's session keyring\n"
	     "  --preserve-fds N        pass N more file descriptors (3 .. 3+N-1)\n"
	     "  --no-subreaper          accepted for compatibility; ignored\n"
	     "  --help, -h              print this help\n",
};
