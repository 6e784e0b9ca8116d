/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include <kapsel/run.h>

#include "commands.h"

static int logs(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"follow", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool follow = false;
	int c;
	while ((c = cli_getopt(&cmd_logs, argc, argv, "fh", options)) != -1) {
		if (c != 'f')
			return cli_opt_status(c);
		follow = true;
	}
	if (!cli_nargs(&cmd_logs, argc - optind, 1, 1, "container name"))
		return 1;
	struct kapsel_error *err = NULL;
	if (kapsel_image_logs(g->store, g->root, argv[optind], follow, stdout, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_logs = {
    .name = "logs",
    .summary = "print the output of a detached image container",
    .run = logs,
    .usage = "Usage: kapsel logs [-f] NAME\n"
	     "\n"
	     "Print what a container run with 'kapsel run -d' wrote to stdout and stderr.\n"
	     "\n"
	     "Options:\n"
	     "  --follow, -f            keep printing until the container stops\n"
	     "  --help, -h              print this help\n",
};
