/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/image.h>

#include "commands.h"
#include "format.h"

static const struct cli_command cmd_image_inspect;

static const struct option inspect_options[] = {
    {"store", required_argument, NULL, 's'},
    {"format", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int inspect(const struct cli_globals *g, int argc, char **argv)
{
	const char *store = g->store, *format = NULL;
	int c;
	while ((c = cli_getopt_cmd(&cmd_image_inspect, argc, argv)) != -1) {
		if (c == 's')
			store = optarg;
		else if (c == 'f')
			format = optarg;
		else
			return cli_opt_status(c);
	}
	if (!cli_nargs(&cmd_image_inspect, argc - optind, 1, -1, "IMAGE..."))
		return cli_fail_status();
	/* kapsel inspect --type image; a missing image exits 125, as podman image inspect. */
	return cli_inspect(g, &cmd_image_inspect, store, "image", format, argv + optind,
			   argc - optind, cli_fail_status());
}

/* `kapsel image SUBCOMMAND`: inspect, and the podman-style aliases of the image commands. */
static int image(const struct cli_globals *g, int argc, char **argv)
{
	return cli_dispatch(&cmd_image, g, argc, argv);
}

static const char image_usage[] =
    "Usage: kapsel image inspect [--store DIR] [--format FORMAT] IMAGE...\n"
    "       kapsel image ls|rm|prune|load|save ...   (as images, rmi, prune, load, save)\n"
    "       kapsel image build|tag|untag|history ... (as build, tag, untag, history)\n"
    "\n"
    "inspect prints a JSON array with one object per image: Id, Digest, RepoTags,\n"
    "Created, Architecture, Os, Size, Labels, Config, RootFS and Layers; with\n"
    "--format TEMPLATE, the template rendered for each (see 'kapsel inspect --help').\n"
    "\n"
    "Options (inspect):\n"
    "  --format, -f FORMAT   json (default) or a Go template for each image\n"
    "  --store, -s DIR       image store\n"
    "  --help, -h            print this help\n";

static const struct cli_command cmd_image_inspect = {
    .name = "image inspect",
    .operands = CLI_OPERAND_IMAGE,
    .summary = "print images as JSON",
    .run = inspect,
    .usage = image_usage,
    .shortopts = "s:f:h",
    .options = inspect_options,
};

const struct cli_command cmd_image = {
    .name = "image",
    .podman_status = true,
    .summary = "inspect images (and: ls, rm, prune, load, save)",
    .run = image,
    .usage = image_usage,
    .subcommands =
	(const struct cli_subcommand[]){
	    {"inspect", &cmd_image_inspect},
	    {"ls", &cmd_images},
	    {"list", &cmd_images},
	    {"rm", &cmd_rmi},
	    {"prune", &cmd_prune},
	    {"load", &cmd_load},
	    {"save", &cmd_save},
	    {"build", &cmd_build},
	    {"tag", &cmd_tag},
	    {"untag", &cmd_untag},
	    {"history", &cmd_history},
	    {0},
	},
};
