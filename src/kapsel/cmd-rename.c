/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/run.h>

#include "commands.h"

static const struct option options[] = {{"help", no_argument, NULL, 'h'}, {0}};

static int rename_cmd(const struct cli_globals *g, int argc, char **argv)
{
	int c = cli_getopt_cmd(&cmd_rename, argc, argv);
	if (c != -1)
		return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
	if (!cli_nargs(&cmd_rename, argc - optind, 2, 2, "container name and its new name"))
		return EXIT_ENGINE;
	struct kapsel_error *err = NULL;
	if (kapsel_image_rename(g->store, argv[optind], argv[optind + 1], &err) < 0) {
		cli_fail_err(err);
		return EXIT_ENGINE;
	}
	return 0;
}

const struct cli_command cmd_rename = {
    .podman_status = true,
    .name = "rename",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = options,
    .summary = "rename an image container",
    .run = rename_cmd,
    .usage = "Usage: kapsel rename NAME NEWNAME\n"
	     "\n"
	     "Give a container, running or stopped, another name (podman's rule:\n"
	     "[a-zA-Z0-9][a-zA-Z0-9_.-]*, not in use). Its state, log and files move with it;\n"
	     "exec, stop, logs and the rest use the new name from then on. A running container\n"
	     "on a network (--net NETWORK) must be stopped first.\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
};
