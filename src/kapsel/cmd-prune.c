/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include <kapsel/image.h>

#include "commands.h"

static const struct option options[] = {
    {"store", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int prune(const struct cli_globals *g, int argc, char **argv)
{
	const char *store = g->store;
	int c;
	while ((c = cli_getopt_cmd(&cmd_prune, argc, argv)) != -1) {
		if (c != 's')
			return cli_opt_status(c);
		store = optarg;
	}
	if (!cli_nargs(&cmd_prune, argc - optind, 0, 0, "none"))
		return cli_fail_status();
	struct kapsel_error *err = NULL;
	int64_t freed = kapsel_image_prune(store, &err);
	if (freed < 0)
		return cli_fail_err(err);
	printf("Freed %lld bytes\n", (long long)freed);
	return 0;
}

const struct cli_command cmd_prune = {
    .podman_status = true,
    .name = "prune",
    .shortopts = "s:h",
    .options = options,
    .summary = "remove blobs and layers no image or container uses",
    .run = prune,
    .usage = "Usage: kapsel prune [--store DIR]\n"
	     "\n"
	     "Removes the store's blobs and unpacked layers that no image name and no\n"
	     "container references, and leftovers of interrupted pulls and loads.\n"
	     "\n"
	     "Options:\n"
	     "  --store, -s DIR     image store\n"
	     "  --help, -h          print this help\n",
};
