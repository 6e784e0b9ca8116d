/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include <kapsel/image.h>

#include "commands.h"

static const struct option options[] = {
    {"force", no_argument, NULL, 'f'},
    {"store", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int rmi(const struct cli_globals *g, int argc, char **argv)
{
	const char *store = g->store;
	bool force = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_rmi, argc, argv)) != -1) {
		switch (c) {
		case 'f':
			force = true;
			break;
		case 's':
			store = optarg;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_rmi, argc - optind, 1, -1, "IMAGE..."))
		return cli_fail_status();
	int status = 0;
	for (int i = optind; i < argc; i++) {
		struct kapsel_error *err = NULL;
		if (kapsel_image_remove(store, argv[i], force, &err) < 0)
			status = cli_fail_err(err);
		else
			printf("Untagged: %s\n", argv[i]);
	}
	return status;
}

const struct cli_command cmd_rmi = {
    .name = "rmi",
    .podman_status = true,
    .operands = CLI_OPERAND_IMAGE,
    .shortopts = "fs:h",
    .options = options,
    .summary = "remove images from the store",
    .run = rmi,
    .usage = "Usage: kapsel rmi [--force] IMAGE...\n"
	     "\n"
	     "Removes image names (an image ID removes every name of it) and the blobs and\n"
	     "layers no other image uses. An image a container uses is refused.\n"
	     "\n"
	     "Options:\n"
	     "  -f, --force       remove the name even when a container uses the image (its\n"
	     "                    content stays until the container is gone), or an ID with\n"
	     "                    several names\n"
	     "  --store DIR       image store\n",
};
