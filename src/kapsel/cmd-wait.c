/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include <kapsel/run.h>

#include "commands.h"

enum { OPT_CONDITION = 0x100 };

static const struct option options[] = {
    {"condition", required_argument, NULL, OPT_CONDITION},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int wait_cmd(const struct cli_globals *g, int argc, char **argv)
{
	const char *condition = NULL;
	int c;
	while ((c = cli_getopt_cmd(&cmd_wait, argc, argv)) != -1) {
		if (c != OPT_CONDITION)
			return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
		condition = optarg;
	}
	if (!cli_nargs(&cmd_wait, argc - optind, 1, -1, "container name"))
		return EXIT_ENGINE;
	int status = 0;
	for (int i = optind; i < argc; i++) {
		struct kapsel_error *err = NULL;
		int code;
		if (kapsel_image_wait(g->store, argv[i], condition, &code, &err) < 0) {
			cli_fail_err(err);
			status = EXIT_ENGINE;
			continue;
		}
		printf("%d\n", code);
		fflush(stdout);
	}
	return status;
}

const struct cli_command cmd_wait = {
    .podman_status = true,
    .name = "wait",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = options,
    .summary = "wait for image containers to stop; print their exit codes",
    .run = wait_cmd,
    .usage = "Usage: kapsel wait [--condition stopped|exited|running] NAME...\n"
	     "\n"
	     "Block until each container stops (at once for one that has exited) and print\n"
	     "its exit code, one line each, as podman wait. A restart by its --restart policy\n"
	     "counts as an exit. With --condition running, wait until it runs and print -1.\n"
	     "Exit status 125 when a container does not exist.\n"
	     "\n"
	     "Options:\n"
	     "  --condition COND        stopped or exited (the default), or running\n"
	     "  --help, -h              print this help\n",
};
