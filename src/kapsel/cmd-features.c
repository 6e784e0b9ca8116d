/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include <kapsel/container.h>

#include "commands.h"

static const struct option options[] = {{"help", no_argument, NULL, 'h'}, {0}};

static int features(const struct cli_globals *g, int argc, char **argv)
{
	char *json = NULL;
	struct kapsel_error *err = NULL;
	int c = cli_getopt_cmd(&cmd_features, argc, argv);
	if (c != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_features, argc - optind, 0, 0, "none"))
		return 1;
	if (kapsel_features(&json, &err) < 0)
		return cli_fail_err(err);
	puts(json);
	free(json);
	return 0;
}

const struct cli_command cmd_features = {
    .name = "features",
    .shortopts = "h",
    .options = options,
    .summary = "print the runtime's features (OCI features JSON)",
    .run = features,
    .usage = "Usage: kapsel features\n"
	     "\n"
	     "Print what this runtime supports, as runtime-spec features.md JSON.\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
};
