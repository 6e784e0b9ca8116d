/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include <kapsel/image.h>

#include "commands.h"

static const struct option options[] = {
    {"output", required_argument, NULL, 'o'},
    {"store", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int save(const struct cli_globals *g, int argc, char **argv)
{
	const char *store = g->store, *output = NULL;
	int c;
	while ((c = cli_getopt_cmd(&cmd_save, argc, argv)) != -1) {
		switch (c) {
		case 'o':
			output = optarg;
			break;
		case 's':
			store = optarg;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!output)
		return cli_fail("save: -o FILE is required");
	if (!cli_nargs(&cmd_save, argc - optind, 1, -1, "IMAGE..."))
		return cli_fail_status();
	struct kapsel_error *err = NULL;
	if (kapsel_image_save(store, argv + optind, (size_t)(argc - optind), output, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_save = {
    .podman_status = true,
    .name = "save",
    .operands = CLI_OPERAND_IMAGE,
    .shortopts = "o:s:h",
    .options = options,
    .summary = "save images to an oci-archive tarball",
    .run = save,
    .usage = "Usage: kapsel save -o FILE IMAGE...\n"
	     "\n"
	     "Writes the images as an oci-archive (an OCI image layout in a tar file), which\n"
	     "`kapsel load`, `podman load` and `skopeo copy oci-archive:FILE` read.\n"
	     "\n"
	     "Options:\n"
	     "  -o, --output FILE the tarball to write (replaced atomically)\n"
	     "  --store DIR       image store\n",
};
