/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/tools.h>

#include "commands.h"

static const struct option options[] = {
    {"archive", no_argument, NULL, 'a'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int cp(const struct cli_globals *g, int argc, char **argv)
{
	bool archive = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_cp, argc, argv)) != -1) {
		if (c != 'a')
			return cli_opt_status(c);
		archive = true;
	}
	if (!cli_nargs(&cmd_cp, argc - optind, 2, 2, "SRC and DST"))
		return cli_fail_status();
	struct kapsel_error *err = NULL;
	if (kapsel_image_cp(g->store, argv[optind], argv[optind + 1], archive, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_cp = {
    .podman_status = true,
    .name = "cp",
    .shortopts = "ah",
    .options = options,
    .summary = "copy files between an image container and the host",
    .run = cp,
    .usage = "Usage: kapsel cp [-a] CONTAINER:SRC DST\n"
	     "       kapsel cp [-a] SRC CONTAINER:DST\n"
	     "\n"
	     "Copies a file or directory out of or into a container made by 'kapsel run',\n"
	     "running or stopped, as podman cp does: a directory is copied whole, only its\n"
	     "contents when SRC ends in \"/.\"; an existing directory DST receives SRC under its\n"
	     "own name. Paths in the container resolve inside its root: its symlinks never lead\n"
	     "out of it. A local path containing ':' is written ./a:b.\n"
	     "\n"
	     "Options:\n"
	     "  --archive, -a           keep owners (default: files copied in belong to the\n"
	     "                          container's root, files copied out to you)\n"
	     "  --help, -h              print this help\n",
};
