/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/container.h>

#include "commands.h"

static int kill_cmd(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"all", no_argument, NULL, 'a'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool all = false;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt(&cmd_kill, argc, argv, "ah", options)) != -1) {
		if (c != 'a')
			return cli_opt_status(c);
		all = true;
	}
	int n = argc - optind;
	if (!cli_nargs(&cmd_kill, n, 1, 2, "container ID [SIGNAL]"))
		return 1;
	const char *name = n == 2 ? argv[optind + 1] : "SIGTERM";
	int sig = kapsel_signal_parse(name);
	if (sig < 0)
		return cli_fail("kill: unknown signal \"%s\"", name);
	if (kapsel_container_kill(g->root, argv[optind], sig, all, &err) < 0) {
		cli_not_running(g, argv[optind], err);
		return cli_fail_err(err);
	}
	return 0;
}

const struct cli_command cmd_kill = {
    .name = "kill",
    .summary = "send a signal to a container's init process",
    .run = kill_cmd,
    .argv_after = 1,
    .usage = "Usage: kapsel kill [options] <container-id> [SIGNAL]\n"
	     "\n"
	     "Send SIGNAL (default SIGTERM) to the container's init process. SIGNAL is a name\n"
	     "(KILL, SIGKILL, RTMIN+1) or a number.\n"
	     "\n"
	     "Options:\n"
	     "  --all, -a               send the signal to every process in the container\n"
	     "  --help, -h              print this help\n",
};
