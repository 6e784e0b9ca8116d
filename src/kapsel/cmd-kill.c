/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/container.h>
#include <kapsel/run.h>

#include "commands.h"

static const struct option options[] = {
    {"all", no_argument, NULL, 'a'},
    {"signal", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int kill_cmd(const struct cli_globals *g, int argc, char **argv)
{
	bool all = false;
	const char *signame = NULL;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt_cmd(&cmd_kill, argc, argv)) != -1) {
		if (c == 's')
			signame = optarg;
		else if (c == 'a')
			all = true;
		else
			return cli_opt_status(c);
	}
	int n = argc - optind;
	/* runc's form: kill ID [SIGNAL]; podman's: kill -s SIGNAL NAME... (names printed). */
	if (signame ? !cli_nargs(&cmd_kill, n, 1, -1, "container name")
		    : !cli_nargs(&cmd_kill, n, 1, 2, "container ID [SIGNAL]"))
		return 1;
	const char *name = signame ? signame : n == 2 ? argv[optind + 1] : "SIGTERM";
	int sig = kapsel_signal_parse(name);
	if (sig < 0)
		return cli_fail("kill: unknown signal \"%s\"", name);
	int status = 0;
	for (int i = optind; i < (signame ? argc : optind + 1); i++) {
		/* A `run --vm` container: the guest agent delivers it (the runtime has none). */
		int vm = kapsel_image_vm_kill(g->store, argv[i], sig, &err);
		if (vm < 0 ||
		    (vm == 0 && kapsel_container_kill(g->root, argv[i], sig, all, &err) < 0)) {
			cli_not_running(g, argv[i], err);
			status = cli_fail_err(err);
			err = NULL;
		} else if (signame) {
			puts(argv[i]);
		}
	}
	return status;
}

const struct cli_command cmd_kill = {
    .name = "kill",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "as:h",
    .options = options,
    .summary = "send a signal to a container's init process",
    .run = kill_cmd,
    .argv_after = 1,
    .usage = "Usage: kapsel kill [options] <container-id> [SIGNAL]\n"
	     "       kapsel kill [options] --signal SIGNAL NAME...\n"
	     "\n"
	     "Send SIGNAL (default SIGTERM) to the container's init process. SIGNAL is a name\n"
	     "(KILL, SIGKILL, RTMIN+1) or a number. With --signal (podman's form) every\n"
	     "argument is a container, and each one signalled is printed.\n"
	     "\n"
	     "Options:\n"
	     "  --signal, -s SIGNAL     the signal to send\n"
	     "  --all, -a               send the signal to every process in the container\n"
	     "  --help, -h              print this help\n",
};
