/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "format.h"

static const struct option options[] = {
    {"format", required_argument, NULL, 'f'},
    {"type", required_argument, NULL, 't'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int inspect(const struct cli_globals *g, int argc, char **argv)
{
	const char *format = NULL, *type = NULL;
	int c;
	while ((c = cli_getopt_cmd(&cmd_inspect, argc, argv)) != -1) {
		switch (c) {
		case 'f':
			format = optarg;
			break;
		case 't':
			type = optarg;
			break;
		default:
			return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
		}
	}
	if (type && !strcmp(type, "all"))
		type = NULL;
	if (type && strcmp(type, "container") && strcmp(type, "image")) {
		cli_fail("inspect: --type: \"%s\" is not container, image or all", type);
		return EXIT_ENGINE;
	}
	if (!cli_nargs(&cmd_inspect, argc - optind, 1, -1, "NAME..."))
		return EXIT_ENGINE;
	return cli_inspect(g, &cmd_inspect, g->store, type, format, argv + optind, argc - optind,
			   EXIT_ENGINE);
}

const struct cli_command cmd_inspect = {
    .podman_status = true,
    .name = "inspect",
    .operands = CLI_OPERAND_CONTAINER_OR_IMAGE,
    .shortopts = "f:t:h",
    .options = options,
    .summary = "show containers or images as JSON, or through a --format template",
    .run = inspect,
    .usage = "Usage: kapsel inspect [--type container|image|all] [--format FORMAT] NAME...\n"
	     "\n"
	     "Prints a JSON array with one object per container ('kapsel run' made it) or\n"
	     "image, as podman inspect does. Without --type a name is looked up as a\n"
	     "container first, then as an image.\n"
	     "\n"
	     "Options:\n"
	     "  --type, -t TYPE       container, image or all (default)\n"
	     "  --format, -f FORMAT   json (default) or a Go template for each object:\n"
	     "                        '{{.State.Pid}}', '{{json .Config}}',\n"
	     "                        '{{range .Config.Env}}{{.}} {{end}}'; functions: json,\n"
	     "                        upper, lower, title, join, index, len, truncate, eq, ne,\n"
	     "                        not, and, or\n"
	     "  --help, -h            print this help\n"
	     "\n"
	     "A name that is neither is an error (exit status 125), as is an unknown field.\n",
};
