/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/run.h>

#include "commands.h"

enum { OPT_NO_STDIN = 0x100 };

static const struct option options[] = {
    {"no-stdin", no_argument, NULL, OPT_NO_STDIN},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int attach(const struct cli_globals *g, int argc, char **argv)
{
	bool no_stdin = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_attach, argc, argv)) != -1) {
		if (c != OPT_NO_STDIN)
			return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
		no_stdin = true;
	}
	if (!cli_nargs(&cmd_attach, argc - optind, 1, 1, "container name"))
		return EXIT_ENGINE;
	struct kapsel_error *err = NULL;
	int r = kapsel_image_attach(g->store, argv[optind], no_stdin, &err);
	if (r < 0) {
		cli_fail_err(err);
		return EXIT_ENGINE;
	}
	return r;
}

const struct cli_command cmd_attach = {
    .podman_status = true,
    .name = "attach",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = options,
    .summary = "attach to a detached image container's output (and terminal)",
    .run = attach,
    .usage = "Usage: kapsel attach [--no-stdin] NAME\n"
	     "\n"
	     "Stream a container run with -d: its stdout and stderr to ours; with a terminal\n"
	     "(run -dit) our keys go to it too, and ctrl-p ctrl-q detaches, leaving it\n"
	     "running. Exit status: the container's when it ends (0 after a detach).\n"
	     "\n"
	     "Options:\n"
	     "  --no-stdin              do not send our input\n"
	     "  --help, -h              print this help\n",
};
