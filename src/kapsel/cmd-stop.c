/* SPDX-License-Identifier: Apache-2.0 */
#include <limits.h>

#include <kapsel/run.h>

#include "commands.h"

static const struct option options[] = {
    {"time", required_argument, NULL, 't'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int stop(const struct cli_globals *g, int argc, char **argv)
{
	long long timeout = 10;
	int c;
	while ((c = cli_getopt_cmd(&cmd_stop, argc, argv)) != -1) {
		if (c != 't')
			return cli_opt_status(c);
		if (!cli_parse_int(&cmd_stop, "--time", optarg, 0, INT_MAX / 1000, &timeout))
			return cli_fail_status();
	}
	if (!cli_nargs(&cmd_stop, argc - optind, 1, -1, "container name"))
		return cli_fail_status();
	int status = 0;
	for (int i = optind; i < argc; i++) {
		struct kapsel_error *err = NULL;
		if (kapsel_image_stop(g->store, g->root, argv[i], (int)timeout, &err) < 0)
			status = cli_fail_err(err);
		else
			puts(argv[i]);
	}
	return status;
}

const struct cli_command cmd_stop = {
    .podman_status = true,
    .name = "stop",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "t:h",
    .options = options,
    .summary = "stop image containers (stop signal, then SIGKILL)",
    .run = stop,
    .usage = "Usage: kapsel stop [-t SECONDS] NAME...\n"
	     "\n"
	     "Send each container the image's stop signal (default SIGTERM), wait up to\n"
	     "SECONDS (default 10) for it to exit, then SIGKILL every process in it. The\n"
	     "container stays listed by 'kapsel ps -a' until 'kapsel rm' (unless run with --rm).\n"
	     "\n"
	     "Options:\n"
	     "  --time, -t SECONDS      grace period before SIGKILL (default 10)\n"
	     "  --help, -h              print this help\n",
};
