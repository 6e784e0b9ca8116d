/* SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kapsel/run.h>

#include "commands.h"

enum { OPT_SINCE = 0x100, OPT_UNTIL, OPT_TAIL };

static const struct option options[] = {
    {"follow", no_argument, NULL, 'f'},
    {"timestamps", no_argument, NULL, 't'},
    {"since", required_argument, NULL, OPT_SINCE},
    {"until", required_argument, NULL, OPT_UNTIL},
    {"tail", required_argument, NULL, OPT_TAIL},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int logs(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_logs_options o = {.tail = -1, .out = stdout, .err = stderr};
	long long n;
	int c;
	while ((c = cli_getopt_cmd(&cmd_logs, argc, argv)) != -1) {
		switch (c) {
		case 'f':
			o.follow = true;
			break;
		case 't':
			o.timestamps = true;
			break;
		case OPT_SINCE:
		case OPT_UNTIL:
			if (!cli_parse_time(optarg, c == OPT_SINCE ? &o.since_ns : &o.until_ns))
				return cli_fail(
				    "logs: %s: invalid time \"%s\" (RFC 3339, "
				    "YYYY-MM-DD, Unix seconds or a duration such as 10m)",
				    c == OPT_SINCE ? "--since" : "--until", optarg);
			break;
		case OPT_TAIL:
			/* podman: -1 means every line. */
			if (!cli_parse_int(&cmd_logs, "--tail", optarg, -1, 1L << 30, &n))
				return cli_fail_status();
			o.tail = (long)n;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_logs, argc - optind, 1, 1, "container name"))
		return cli_fail_status();
	/* Line by line: a reader of -f sees each line when the container wrote it. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct kapsel_error *err = NULL;
	if (kapsel_image_logs(g->store, g->root, argv[optind], &o, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_logs = {
    .name = "logs",
    .podman_status = true,
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "fth",
    .options = options,
    .summary = "print the output of an image container",
    .run = logs,
    .usage = "Usage: kapsel logs [options] NAME\n"
	     "\n"
	     "Print what a container made by 'kapsel run IMAGE' (in the foreground or with -d)\n"
	     "wrote: its stdout lines to stdout, its stderr lines to stderr. The log is kept in\n"
	     "podman's k8s-file format (a time, the stream and the text on each line).\n"
	     "\n"
	     "Options:\n"
	     "  --follow, -f            keep printing until the container stops\n"
	     "  --timestamps, -t        start each line with the time it was written\n"
	     "  --since TIME            only lines from TIME on: RFC 3339, YYYY-MM-DD, Unix\n"
	     "                          seconds, or a duration before now (10m, 1h30m)\n"
	     "  --until TIME            only lines up to TIME (same forms)\n"
	     "  --tail N                only the last N lines (-1: all)\n"
	     "  --help, -h              print this help\n",
};
