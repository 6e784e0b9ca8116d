/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/container.h>

#include "commands.h"

static const struct option options[] = {
    {"force", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int delete (const struct cli_globals *g, int argc, char **argv)
{
	bool force = false;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt_cmd(&cmd_delete, argc, argv)) != -1) {
		if (c != 'f')
			return cli_opt_status(c);
		force = true;
	}
	if (!cli_nargs(&cmd_delete, argc - optind, 1, 1, "container ID"))
		return 1;
	if (kapsel_container_delete(g->root, argv[optind], force, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_delete = {
    .name = "delete",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "fh",
    .options = options,
    .summary = "delete a container and its state",
    .run = delete,
    .usage = "Usage: kapsel delete [options] <container-id>\n"
	     "\n"
	     "Delete a stopped (or, with --force, any) container and its state.\n"
	     "\n"
	     "Options:\n"
	     "  --force, -f             kill the container with SIGKILL first if it is running\n"
	     "  --help, -h              print this help\n",
};
