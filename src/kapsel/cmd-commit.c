/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include <kapsel/build.h>

#include "commands.h"

static const struct option options[] = {
    {"change", required_argument, NULL, 'c'},
    {"quiet", no_argument, NULL, 'q'},
    {"store", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int commit(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_commit_options o = {.store = g->store};
	char **changes = calloc((size_t)argc + 1, sizeof(char *));
	size_t n = 0;
	int c, ret = cli_fail_status();
	if (!changes)
		return cli_fail("commit: out of memory");
	while ((c = cli_getopt_cmd(&cmd_commit, argc, argv)) != -1) {
		switch (c) {
		case 'c':
			changes[n++] = optarg;
			break;
		case 'q':
			break; /* commit prints only the ID anyway */
		case 's':
			o.store = optarg;
			break;
		default:
			ret = cli_opt_status(c);
			goto out;
		}
	}
	if (!cli_nargs(&cmd_commit, argc - optind, 1, 2, "CONTAINER [IMAGE]"))
		goto out;
	o.container = argv[optind];
	o.image = argc - optind > 1 ? argv[optind + 1] : NULL;
	o.changes = changes;
	struct kapsel_error *err = NULL;
	char *id = NULL;
	if (kapsel_image_commit(&o, &id, &err) < 0) {
		ret = cli_fail_err(err);
		goto out;
	}
	printf("%s\n", id);
	free(id);
	ret = 0;
out:
	free(changes);
	return ret;
}

const struct cli_command cmd_commit = {
    .podman_status = true,
    .name = "commit",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "c:qs:h",
    .options = options,
    .summary = "make an image from a container's changes",
    .run = commit,
    .usage =
	"Usage: kapsel commit [--change INSTRUCTION]... [--store DIR] CONTAINER [IMAGE]\n"
	"\n"
	"Adds the files a `kapsel run` container changed (running or stopped) as one layer on\n"
	"its image and stores the result as IMAGE (bare names get localhost/). Prints the\n"
	"image ID.\n"
	"\n"
	"Options:\n"
	"  -c, --change INSTR   a config instruction to apply: CMD, ENTRYPOINT, ENV, LABEL,\n"
	"                       EXPOSE, USER, WORKDIR, VOLUME, STOPSIGNAL, ... (repeatable)\n"
	"  -q, --quiet          accepted for podman's sake: commit prints only the ID anyway\n"
	"  -s, --store DIR      image store\n"
	"  -h, --help           print this help\n",
};
