/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include <kapsel/image.h>

#include "commands.h"

static const struct option options[] = {
    {"input", required_argument, NULL, 'i'},
    {"store", required_argument, NULL, 's'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int load(const struct cli_globals *g, int argc, char **argv)
{
	const char *store = g->store, *input = NULL;
	bool quiet = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_load, argc, argv)) != -1) {
		switch (c) {
		case 'i':
			input = optarg;
			break;
		case 's':
			store = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_load, argc - optind, input ? 0 : 1, input ? 0 : 1, "FILE|DIR"))
		return cli_fail_status();
	if (!input)
		input = argv[optind];
	char **names = NULL;
	struct kapsel_error *err = NULL;
	if (kapsel_image_load(store, input, &names, &err) < 0)
		return cli_fail_err(err);
	for (char **p = names; !quiet && p && *p; p++)
		printf("Loaded image: %s\n", *p);
	kapsel_image_names_free(names);
	return 0;
}

const struct cli_command cmd_load = {
    .name = "load",
    .podman_status = true,
    .shortopts = "i:s:qh",
    .options = options,
    .summary = "load images from an OCI layout, oci-archive or docker-archive",
    .run = load,
    .usage = "Usage: kapsel load [-q] -i FILE|DIR\n"
	     "       kapsel load FILE|DIR\n"
	     "\n"
	     "Loads every image of an OCI image layout directory, an oci-archive tarball or a\n"
	     "docker-archive tarball (`podman save`, `docker save`) into the store. Nothing is\n"
	     "stored unless the whole input verifies.\n"
	     "\n"
	     "Options:\n"
	     "  -i, --input PATH  the file or directory to load\n"
	     "  -q, --quiet       do not print the loaded names\n"
	     "  --store DIR       image store\n",
};
