/* SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kapsel/run.h>

#include "commands.h"

/*
 * A time for --since and --until as podman reads it (podman-logs(1)): an RFC 3339 time
 * ("2026-12-02T14:00:00Z", "...+01:00", fractions allowed), a date ("2026-12-02", UTC), Unix
 * seconds ("1796222704.5"), or a duration before now ("10m", "1h30m", "90s"). Nanoseconds
 * since the epoch; false when it is none of these.
 */
static bool parse_time(const char *s, int64_t *ns)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	char *end;
	/* A duration: one or more NUMBER UNIT pairs (h, m, s, ms). */
	double total = 0;
	const char *p = s;
	bool any = false;
	while (*p) {
		double v = strtod(p, &end);
		if (end == p || v < 0)
			break;
		double unit = !strncmp(end, "ms", 2) ? 1e-3
			      : *end == 'h'	     ? 3600
			      : *end == 'm'	     ? 60
			      : *end == 's'	     ? 1
						     : 0;
		if (!unit)
			break;
		total += v * unit;
		p = end + (unit == 1e-3 ? 2 : 1);
		any = true;
	}
	if (any && !*p) {
		*ns = now_ns - (int64_t)(total * 1e9);
		return true;
	}
	/* Unix seconds, with an optional fraction. */
	double secs = strtod(s, &end);
	if (end != s && !*end && secs >= 0 && strspn(s, "0123456789.") == strlen(s)) {
		*ns = secs >= 9.2e9 ? INT64_MAX : (int64_t)(secs * 1e9);
		return true;
	}
	struct tm tm = {0};
	const char *rest = strptime(s, "%Y-%m-%d", &tm);
	if (!rest)
		return false;
	int64_t frac = 0;
	long off = 0;
	if (*rest == 'T' || *rest == 't' || *rest == ' ') {
		rest = strptime(rest + 1, "%H:%M:%S", &tm);
		if (!rest)
			return false;
		if (*rest == '.') {
			int digits = 0;
			for (rest++; *rest >= '0' && *rest <= '9'; rest++, digits++)
				if (digits < 9)
					frac = frac * 10 + (*rest - '0');
			for (; digits < 9; digits++)
				frac *= 10;
		}
		if (*rest == 'Z' || *rest == 'z') {
			rest++;
		} else if (*rest == '+' || *rest == '-') {
			int hh, mm, n = 0;
			if (sscanf(rest + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 || n != 5)
				return false;
			off = (hh * 3600L + mm * 60L) * (*rest == '-' ? -1 : 1);
			rest += 6;
		}
	}
	if (*rest)
		return false;
	int64_t t = (int64_t)timegm(&tm) - off;
	/* Past 2262 nanoseconds overflow 64 bits: such a time is "never" either way. */
	*ns = t >= INT64_MAX / 1000000000 ? INT64_MAX : t * 1000000000 + frac;
	return true;
}

static int logs(const struct cli_globals *g, int argc, char **argv)
{
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
	struct kapsel_logs_options o = {.tail = -1, .out = stdout, .err = stderr};
	long long n;
	int c;
	while ((c = cli_getopt(&cmd_logs, argc, argv, "fth", options)) != -1) {
		switch (c) {
		case 'f':
			o.follow = true;
			break;
		case 't':
			o.timestamps = true;
			break;
		case OPT_SINCE:
		case OPT_UNTIL:
			if (!parse_time(optarg, c == OPT_SINCE ? &o.since_ns : &o.until_ns))
				return cli_fail(
				    "logs: %s: invalid time \"%s\" (RFC 3339, "
				    "YYYY-MM-DD, Unix seconds or a duration such as 10m)",
				    c == OPT_SINCE ? "--since" : "--until", optarg);
			break;
		case OPT_TAIL:
			/* podman: -1 means every line. */
			if (!cli_parse_int(&cmd_logs, "--tail", optarg, -1, 1L << 30, &n))
				return 1;
			o.tail = (long)n;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_logs, argc - optind, 1, 1, "container name"))
		return 1;
	/* Line by line: a reader of -f sees each line when the container wrote it. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct kapsel_error *err = NULL;
	if (kapsel_image_logs(g->store, g->root, argv[optind], &o, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_logs = {
    .name = "logs",
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
