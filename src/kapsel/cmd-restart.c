/* SPDX-License-Identifier: Apache-2.0 */
#include <limits.h>
#include <stdio.h>

#include <kapsel/run.h>

#include "commands.h"

static const struct option options[] = {
    {"time", required_argument, NULL, 't'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int restart(const struct cli_globals *g, int argc, char **argv)
{
	long long timeout = 10;
	int c;
	while ((c = cli_getopt_cmd(&cmd_restart, argc, argv)) != -1) {
		if (c != 't')
			return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
		if (!cli_parse_int(&cmd_restart, "--time", optarg, 0, INT_MAX / 1000, &timeout))
			return EXIT_ENGINE;
	}
	if (!cli_nargs(&cmd_restart, argc - optind, 1, -1, "container name"))
		return EXIT_ENGINE;
	int status = 0;
	for (int i = optind; i < argc; i++) {
		struct kapsel_error *err = NULL;
		if (kapsel_image_restart(g->store, g->root, argv[i], (int)timeout, &err) < 0) {
			cli_fail_err(err);
			status = EXIT_ENGINE;
		} else {
			puts(argv[i]);
		}
	}
	return status;
}

const struct cli_command cmd_restart = {
    .podman_status = true,
    .name = "restart",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "t:h",
    .options = options,
    .summary = "stop image containers, then start them again",
    .run = restart,
    .usage = "Usage: kapsel restart [-t SECONDS] NAME...\n"
	     "\n"
	     "Stop each container as 'kapsel stop' does (running ones), then start it again\n"
	     "detached with the same configuration, name, files and network address; an\n"
	     "exited container is just started. Its --restart policy applies again.\n"
	     "\n"
	     "Options:\n"
	     "  --time, -t SECONDS      grace period before SIGKILL (default 10)\n"
	     "  --help, -h              print this help\n",
};
