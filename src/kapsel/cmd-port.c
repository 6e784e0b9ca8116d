/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include <kapsel/run.h>

#include "commands.h"

static const struct option options[] = {{"help", no_argument, NULL, 'h'}, {0}};

static int port_cmd(const struct cli_globals *g, int argc, char **argv)
{
	int c = cli_getopt_cmd(&cmd_port, argc, argv);
	if (c != -1)
		return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
	if (!cli_nargs(&cmd_port, argc - optind, 1, 2, "a container and an optional port"))
		return EXIT_ENGINE;
	struct kapsel_error *err = NULL;
	char **lines = NULL;
	if (kapsel_image_port(g->store, argv[optind], argc - optind > 1 ? argv[optind + 1] : NULL,
			      &lines, &err) < 0) {
		cli_fail_err(err);
		return EXIT_ENGINE;
	}
	for (char **l = lines; *l; l++) {
		puts(*l);
		free(*l);
	}
	free(lines);
	return 0;
}

const struct cli_command cmd_port = {
    .podman_status = true,
    .name = "port",
    .operands = CLI_OPERAND_CONTAINER,
    .summary = "list a container's published ports",
    .run = port_cmd,
    .usage = "Usage: kapsel port NAME [PORT[/tcp|/udp]]\n"
	     "\n"
	     "Print the container's published ports (-p, -P), one a line as podman does:\n"
	     "CTRPORT/PROTO -> HOSTIP:HOSTPORT. With PORT, only the host side of that one.\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
    .shortopts = "h",
    .options = options,
};
