/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/container.h>

#include "commands.h"

/*
 * A Go time.Duration as runc's --interval takes it ("5s", "500ms", "1m30s", "1.5s"), in
 * milliseconds; false when malformed.
 */
static bool parse_duration_ms(const char *s, double *ms)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = {
	    {"ns", 1e-6}, {"us", 1e-3}, {"µs", 1e-3},	{"ms", 1},
	    {"s", 1000},  {"m", 60000}, {"h", 3600000},
	};
	*ms = 0;
	if (!*s)
		return false;
	while (*s) {
		/* Plain decimals only: strtod alone would also take "1e3", "0x10" and "inf". */
		char num[32], *num_end;
		size_t nlen = strspn(s, "0123456789.");
		if (nlen == 0 || nlen >= sizeof(num))
			return false;
		memcpy(num, s, nlen);
		num[nlen] = '\0';
		double v = strtod(num, &num_end);
		if (*num_end)
			return false;
		const char *end = s + nlen;
		size_t len = strspn(end, "abcdefghijklmnopqrstuvwxyz\xc2\xb5");
		size_t i;
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strlen(units[i].unit) == len && !strncmp(end, units[i].unit, len))
				break;
		if (i == sizeof(units) / sizeof(units[0]))
			return false;
		*ms += v * units[i].ms;
		s = end + len;
	}
	return true;
}

static const struct option options[] = {
    {"stats", no_argument, NULL, 's'},
    {"interval", required_argument, NULL, 'i'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int events(const struct cli_globals *g, int argc, char **argv)
{
	bool stats = false;
	double ms = 5000;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt_cmd(&cmd_events, argc, argv)) != -1) {
		switch (c) {
		case 's':
			stats = true;
			break;
		case 'i':
			if (!parse_duration_ms(optarg, &ms) || ms < 1 || ms > 86400000.0 * 24)
				return cli_fail("events: --interval: invalid duration \"%s\" "
						"(examples: 5s, 500ms, 1m)",
						optarg);
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_events, argc - optind, 1, 1, "container ID"))
		return 1;
	/* Line-buffered: a reader (containerd) sees each event as it happens. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (kapsel_container_events(g->root, argv[optind], stats, (unsigned)ms, stdout, &err) < 0) {
		cli_not_running(g, argv[optind], err);
		return cli_fail_err(err);
	}
	return 0;
}

const struct cli_command cmd_events = {
    .name = "events",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = options,
    .summary = "print container events and resource statistics",
    .run = events,
    .usage = "Usage: kapsel events [options] <container-id>\n"
	     "\n"
	     "Print JSON lines: resource statistics every interval, and OOM events, until the\n"
	     "container stops.\n"
	     "\n"
	     "Options:\n"
	     "  --stats                 print statistics once and exit\n"
	     "  --interval DURATION     time between statistics (default 5s; e.g. 500ms, 1m)\n"
	     "  --help, -h              print this help\n",
};
