/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/image.h>

#include "commands.h"
#include "format.h"

static int inspect(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"store", required_argument, NULL, 's'},
	    {"format", required_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *store = g->store, *format = NULL;
	int c;
	while ((c = cli_getopt(&cmd_image, argc, argv, "s:f:h", options)) != -1) {
		if (c == 's')
			store = optarg;
		else if (c == 'f')
			format = optarg;
		else
			return cli_opt_status(c);
	}
	if (!cli_nargs(&cmd_image, argc - optind, 1, -1, "IMAGE..."))
		return 1;
	/* kapsel inspect --type image, with the exit status image inspect has always had. */
	return cli_inspect(g, &cmd_image, store, "image", format, argv + optind, argc - optind, 1);
}

/* `kapsel image SUBCOMMAND`: inspect, and the podman-style aliases of the image commands. */
static int image(const struct cli_globals *g, int argc, char **argv)
{
	static const struct {
		const char *name;
		const struct cli_command *cmd;
	} aliases[] = {
	    {"ls", &cmd_images},       {"list", &cmd_images}, {"rm", &cmd_rmi},
	    {"prune", &cmd_prune},     {"load", &cmd_load},   {"save", &cmd_save},
	    {"build", &cmd_build},     {"tag", &cmd_tag},     {"untag", &cmd_untag},
	    {"history", &cmd_history},
	};
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(cmd_image.usage, argc < 2 ? stderr : stdout);
		return argc < 2;
	}
	if (!strcmp(argv[1], "inspect"))
		return inspect(g, argc - 1, argv + 1);
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (!strcmp(argv[1], aliases[i].name))
			return aliases[i].cmd->run(g, argc - 1, argv + 1);
	return cli_fail("image: unknown subcommand \"%s\" (see 'kapsel image --help')", argv[1]);
}

const struct cli_command cmd_image = {
    .name = "image",
    .summary = "inspect images (and: ls, rm, prune, load, save)",
    .run = image,
    .usage = "Usage: kapsel image inspect [--store DIR] [--format FORMAT] IMAGE...\n"
	     "       kapsel image ls|rm|prune|load|save ...   (as images, rmi, prune, load, save)\n"
	     "       kapsel image build|tag|untag|history ... (as build, tag, untag, history)\n"
	     "\n"
	     "inspect prints a JSON array with one object per image: Id, Digest, RepoTags,\n"
	     "Created, Architecture, Os, Size, Labels, Config, RootFS and Layers; with\n"
	     "--format TEMPLATE, the template rendered for each (see 'kapsel inspect --help').\n",
};
