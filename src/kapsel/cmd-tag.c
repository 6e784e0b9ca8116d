/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include <kapsel/image.h>

#include "commands.h"

static const struct option options[] = {
    {"store", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int store_opt(const struct cli_command *cmd, const struct cli_globals *g, int argc,
		     char **argv, const char **store)
{
	int c;
	*store = g->store;
	while ((c = cli_getopt_cmd(cmd, argc, argv)) != -1) {
		if (c != 's')
			return cli_opt_status(c);
		*store = optarg;
	}
	return -1;
}

static int tag(const struct cli_globals *g, int argc, char **argv)
{
	const char *store;
	int r = store_opt(&cmd_tag, g, argc, argv, &store);
	if (r >= 0)
		return r;
	if (!cli_nargs(&cmd_tag, argc - optind, 2, -1, "IMAGE NAME..."))
		return cli_fail_status();
	for (int i = optind + 1; i < argc; i++) {
		struct kapsel_error *err = NULL;
		if (kapsel_image_tag(store, argv[optind], argv[i], &err) < 0)
			return cli_fail_err(err);
	}
	return 0;
}

static int untag(const struct cli_globals *g, int argc, char **argv)
{
	const char *store;
	int r = store_opt(&cmd_untag, g, argc, argv, &store);
	if (r >= 0)
		return r;
	if (!cli_nargs(&cmd_untag, argc - optind, 1, -1, "IMAGE [NAME...]"))
		return cli_fail_status();
	struct kapsel_error *err = NULL;
	if (kapsel_image_untag(store, argv[optind], argv + optind + 1, (size_t)(argc - optind - 1),
			       &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_tag = {
    .podman_status = true,
    .name = "tag",
    .operands = CLI_OPERAND_IMAGE,
    .shortopts = "s:h",
    .options = options,
    .summary = "give an image more names",
    .run = tag,
    .usage = "Usage: kapsel tag [--store DIR] IMAGE NAME...\n"
	     "\n"
	     "Adds each NAME[:TAG] to IMAGE (a name, a reference or an ID). A NAME without a\n"
	     "registry part is stored as localhost/NAME, as podman does.\n"
	     "\n"
	     "Options:\n"
	     "  --store, -s DIR     image store\n"
	     "  --help, -h          print this help\n",
};

const struct cli_command cmd_untag = {
    .podman_status = true,
    .name = "untag",
    .operands = CLI_OPERAND_IMAGE,
    .shortopts = "s:h",
    .options = options,
    .summary = "remove names from an image",
    .run = untag,
    .usage = "Usage: kapsel untag [--store DIR] IMAGE [NAME...]\n"
	     "\n"
	     "Removes the given names of IMAGE, or all of them when none is given. The image's\n"
	     "blobs and layers stay until `kapsel image prune`.\n"
	     "\n"
	     "Options:\n"
	     "  --store, -s DIR     image store\n"
	     "  --help, -h          print this help\n",
};
