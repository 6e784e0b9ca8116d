/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/run.h>

#include "commands.h"

static const struct option options[] = {
    {"force", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int rm(const struct cli_globals *g, int argc, char **argv)
{
	bool force = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_rm, argc, argv)) != -1) {
		if (c != 'f')
			return cli_opt_status(c);
		force = true;
	}
	if (!cli_nargs(&cmd_rm, argc - optind, 1, -1, "container name"))
		return cli_fail_status();
	int status = 0;
	for (int i = optind; i < argc; i++) {
		struct kapsel_error *err = NULL;
		if (kapsel_image_rm(g->store, g->root, argv[i], force, &err) < 0)
			status = cli_fail_err(err);
		else
			puts(argv[i]);
	}
	return status;
}

const struct cli_command cmd_rm = {
    .podman_status = true,
    .name = "rm",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "fh",
    .options = options,
    .summary = "remove image containers",
    .run = rm,
    .usage = "Usage: kapsel rm [-f] NAME...\n"
	     "\n"
	     "Remove stopped containers made by 'kapsel run IMAGE': their writable layer,\n"
	     "bundle, log and runtime state, and their hold on the image.\n"
	     "\n"
	     "Options:\n"
	     "  --force, -f             kill a running container first\n"
	     "  --help, -h              print this help\n",
};
