/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/tools.h>

#include "commands.h"

/* go-units HumanSizeWithPrecision(size, 3), podman stats' sizes: decimal units, 3 digits. */
static void human_size(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
	double d = (double)v;
	size_t u = 0;
	while (d >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
		d /= 1000;
		u++;
	}
	snprintf(buf, len, "%.3g%s", d, units[u]);
}

/* Go's time.Duration.String() for a CPU time, at podman's millisecond precision. */
static void go_duration(uint64_t ns, char *buf, size_t len)
{
	uint64_t ms = ns / 1000000;
	if (ms == 0) {
		snprintf(buf, len, ns ? "%" PRIu64 "µs" : "0s", ns / 1000);
		return;
	}
	if (ms < 1000) {
		snprintf(buf, len, "%" PRIu64 "ms", ms);
		return;
	}
	uint64_t s = ms / 1000, h = s / 3600, m = s / 60 % 60;
	char sec[32];
	snprintf(sec, sizeof(sec), "%" PRIu64 ".%03" PRIu64, s % 60, ms % 1000);
	size_t n = strlen(sec);
	while (sec[n - 1] == '0')
		sec[--n] = '\0';
	if (sec[n - 1] == '.')
		sec[--n] = '\0';
	if (h)
		snprintf(buf, len, "%" PRIu64 "h%" PRIu64 "m%ss", h, m, sec);
	else if (m)
		snprintf(buf, len, "%" PRIu64 "m%ss", m, sec);
	else
		snprintf(buf, len, "%ss", sec);
}

/* The columns, by podman's template field name, header and JSON key. */
enum field {
	F_ID,
	F_NAME,
	F_CPU_PERC,
	F_MEM_USAGE,
	F_MEM_BYTES,
	F_MEM_PERC,
	F_NET,
	F_BLOCK,
	F_PIDS,
	F_CPU_TIME,
	F_AVG_CPU,
	F_UP
};
static const struct {
	const char *field, *header, *json;
} fields[] = {
    [F_ID] = {"ID", "ID", "id"},
    [F_NAME] = {"Name", "NAME", "name"},
    [F_CPU_PERC] = {"CPUPerc", "CPU %", "cpu_percent"},
    [F_MEM_USAGE] = {"MemUsage", "MEM USAGE / LIMIT", "mem_usage"},
    [F_MEM_BYTES] = {"MemUsageBytes", "MEM USAGE / LIMIT", "mem_usage_bytes"},
    [F_MEM_PERC] = {"MemPerc", "MEM %", "mem_percent"},
    [F_NET] = {"NetIO", "NET IO", "net_io"},
    [F_BLOCK] = {"BlockIO", "BLOCK IO", "block_io"},
    [F_PIDS] = {"PIDS", "PIDS", "pids"},
    [F_CPU_TIME] = {"CPU", "CPU TIME", "cpu_time"},
    [F_AVG_CPU] = {"AvgCPU", "AVG CPU %", "avg_cpu"},
    [F_UP] = {"UpTime", "UP TIME", "up_time"},
};
#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

static int find_field(const char *name, size_t len)
{
	if (len == 4 && !strncmp(name, "PIDs", 4))
		return F_PIDS;
	for (size_t i = 0; i < N_FIELDS; i++)
		if (strlen(fields[i].field) == len && !strncmp(fields[i].field, name, len))
			return (int)i;
	return -1;
}

struct prev {
	char *name;
	uint64_t cpu_ns, system_ns;
};

static void percent(double v, char *buf, size_t len)
{
	if (v < 0)
		snprintf(buf, len, "--");
	else
		snprintf(buf, len, "%.2f%%", v);
}

static void value(const struct kapsel_stats *s, const struct prev *p, enum field f, char *buf,
		  size_t len)
{
	char a[32], b[32];
	switch (f) {
	case F_ID:
	case F_NAME:
		snprintf(buf, len, "%s", s->name);
		break;
	case F_CPU_PERC: {
		/* podman: the CPU used since the last sample over the time passed, or over the
		 * container's life for the first one (100% is one CPU busy). */
		uint64_t dc = p ? s->cpu_ns - p->cpu_ns : s->cpu_ns;
		uint64_t dt = p ? s->system_ns - p->system_ns : s->up_ns;
		percent(dt ? 100.0 * (double)dc / (double)dt : 0.0, buf, len);
		break;
	}
	case F_AVG_CPU:
		percent(s->up_ns ? 100.0 * (double)s->cpu_ns / (double)s->up_ns : 0.0, buf, len);
		break;
	case F_MEM_USAGE:
		human_size(s->mem_usage, a, sizeof(a));
		human_size(s->mem_limit, b, sizeof(b));
		snprintf(buf, len, "%s / %s", a, b);
		break;
	case F_MEM_BYTES:
		snprintf(buf, len, "%" PRIu64 " / %" PRIu64, s->mem_usage, s->mem_limit);
		break;
	case F_MEM_PERC:
		percent(s->mem_limit ? 100.0 * (double)s->mem_usage / (double)s->mem_limit : 0.0,
			buf, len);
		break;
	case F_NET:
		human_size(s->net_rx, a, sizeof(a));
		human_size(s->net_tx, b, sizeof(b));
		snprintf(buf, len, "%s / %s", a, b);
		break;
	case F_BLOCK:
		human_size(s->blk_read, a, sizeof(a));
		human_size(s->blk_write, b, sizeof(b));
		snprintf(buf, len, "%s / %s", a, b);
		break;
	case F_PIDS:
		snprintf(buf, len, "%" PRIu64, s->pids);
		break;
	case F_CPU_TIME:
		go_duration(s->cpu_ns, buf, len);
		break;
	case F_UP:
		go_duration(s->up_ns, buf, len);
		break;
	}
}

/*
 * A Go-template-like --format: "{{.Field}}" (spaces allowed inside the braces) and text,
 * with "\t" and "\n" as podman's report package reads them; "table " first prints a header.
 * Checked once before any sampling, so a wrong field is a usage error.
 */
static int check_template(const char *t)
{
	const char *p = t;
	while ((p = strstr(p, "{{"))) {
		const char *e = strstr(p, "}}");
		if (!e)
			return cli_fail("stats: --format: unterminated {{ in \"%s\"", t);
		const char *f = p + 2;
		while (*f == ' ')
			f++;
		size_t n = (size_t)(e - f);
		while (n && f[n - 1] == ' ')
			n--;
		if (n < 2 || f[0] != '.' || find_field(f + 1, n - 1) < 0)
			return cli_fail(
			    "stats: --format: unknown field \"%.*s\" (fields: .ID .Name "
			    ".CPUPerc .MemUsage .MemUsageBytes .MemPerc .NetIO .BlockIO "
			    ".PIDS .CPU .AvgCPU .UpTime)",
			    (int)n, f);
		p = e + 2;
	}
	return 0;
}

static void render(const char *t, const struct kapsel_stats *s, const struct prev *prev,
		   bool header)
{
	for (const char *p = t; *p;) {
		if (p[0] == '\\' && (p[1] == 't' || p[1] == 'n')) {
			putchar(p[1] == 't' ? '\t' : '\n');
			p += 2;
			continue;
		}
		if (strncmp(p, "{{", 2)) {
			putchar(*p++);
			continue;
		}
		const char *e = strstr(p, "}}");
		const char *f = p + 2;
		while (*f == ' ')
			f++;
		size_t n = (size_t)(e - f);
		while (n && f[n - 1] == ' ')
			n--;
		enum field fi = (enum field)find_field(f + 1, n - 1);
		if (header) {
			fputs(fields[fi].header, stdout);
		} else {
			char buf[128];
			value(s, prev, fi, buf, sizeof(buf));
			fputs(buf, stdout);
		}
		p = e + 2;
	}
	putchar('\n');
}

static const struct prev *find_prev(const struct prev *p, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(p[i].name, name))
			return &p[i];
	return NULL;
}

static void print_json(const struct kapsel_stats *s, size_t n, const struct prev *prev,
		       size_t n_prev)
{
	/* podman stats --format json's keys. */
	static const enum field order[] = {F_ID,      F_NAME,	   F_CPU_TIME, F_CPU_PERC,
					   F_AVG_CPU, F_MEM_USAGE, F_MEM_PERC, F_NET,
					   F_BLOCK,   F_PIDS};
	puts("[");
	for (size_t i = 0; i < n; i++) {
		const struct prev *p = find_prev(prev, n_prev, s[i].name);
		printf(" {\n");
		for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
			char buf[128];
			value(&s[i], p, order[k], buf, sizeof(buf));
			printf("  \"%s\": ", fields[order[k]].json);
			cli_json_string(stdout, buf);
			printf("%s\n", k + 1 < sizeof(order) / sizeof(order[0]) ? "," : "");
		}
		printf(" }%s\n", i + 1 < n ? "," : "");
	}
	puts("]");
}

static void print_table(const struct kapsel_stats *s, size_t n, const struct prev *prev,
			size_t n_prev)
{
	static const enum field cols[] = {F_NAME,  F_CPU_PERC, F_MEM_USAGE, F_MEM_PERC, F_NET,
					  F_BLOCK, F_PIDS,     F_CPU_TIME,  F_AVG_CPU};
	static const int width[] = {24, 10, 22, 8, 20, 20, 6, 12, 0};
	const size_t nc = sizeof(cols) / sizeof(cols[0]);
	for (size_t i = 0; i <= n; i++) {
		const struct prev *p = i ? find_prev(prev, n_prev, s[i - 1].name) : NULL;
		for (size_t k = 0; k < nc; k++) {
			char buf[128];
			if (i)
				value(&s[i - 1], p, cols[k], buf, sizeof(buf));
			else
				snprintf(buf, sizeof(buf), "%s", fields[cols[k]].header);
			/* The last column unpadded. */
			if (k + 1 == nc)
				printf("%s\n", buf);
			else
				printf("%-*s  ", width[k], buf);
		}
	}
}

static void prev_free(struct prev *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(p[i].name);
	free(p);
}

static const struct option options[] = {
    {"no-stream", no_argument, NULL, 'n'},
    {"format", required_argument, NULL, 'f'},
    {"interval", required_argument, NULL, 'i'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int stats(const struct cli_globals *g, int argc, char **argv)
{
	bool stream = true;
	const char *format = NULL;
	long long interval = 1;
	int c;
	while ((c = cli_getopt_cmd(&cmd_stats, argc, argv)) != -1) {
		switch (c) {
		case 'n':
			stream = false;
			break;
		case 'f':
			format = optarg;
			break;
		case 'i':
			if (!cli_parse_int(&cmd_stats, "--interval", optarg, 1, 3600, &interval))
				return cli_fail_status();
			break;
		default:
			return cli_opt_status(c);
		}
	}
	bool json = format && !strcmp(format, "json");
	const char *tmpl = NULL;
	bool header = false;
	if (format && !json && strcmp(format, "table")) {
		tmpl = format;
		if (!strncmp(tmpl, "table", 5) && (tmpl[5] == ' ' || tmpl[5] == '\t')) {
			header = true;
			tmpl += 6;
		}
		if (check_template(tmpl))
			return cli_fail_status();
	}
	char *const *names = argc > optind ? argv + optind : NULL;
	bool tty = isatty(STDOUT_FILENO);
	struct prev *prev = NULL;
	size_t n_prev = 0;
	int status = 0;
	for (;;) {
		struct kapsel_stats *s = NULL;
		size_t n = 0;
		struct kapsel_error *err = NULL;
		if (kapsel_image_stats(g->store, names, &s, &n, &err) < 0) {
			status = cli_fail_err(err);
			break;
		}
		if (stream && tty && !json)
			fputs("\033[2J\033[H", stdout); /* podman redraws in place on a terminal */
		if (json) {
			print_json(s, n, prev, n_prev);
		} else if (tmpl) {
			if (header)
				render(tmpl, NULL, NULL, true);
			for (size_t i = 0; i < n; i++)
				render(tmpl, &s[i], find_prev(prev, n_prev, s[i].name), false);
		} else {
			print_table(s, n, prev, n_prev);
		}
		fflush(stdout);
		prev_free(prev, n_prev);
		prev = calloc(n ? n : 1, sizeof(*prev));
		n_prev = 0;
		for (size_t i = 0; prev && i < n; i++) {
			prev[n_prev] = (struct prev){
			    .name = s[i].name, .cpu_ns = s[i].cpu_ns, .system_ns = s[i].system_ns};
			s[i].name = NULL;
			n_prev++;
		}
		kapsel_stats_free(s, n);
		if (!stream)
			break;
		struct timespec ts = {(time_t)interval, 0};
		while (nanosleep(&ts, &ts) < 0)
			;
	}
	prev_free(prev, n_prev);
	return status;
}

const struct cli_command cmd_stats = {
    .podman_status = true,
    .name = "stats",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "f:i:h",
    .options = options,
    .summary = "show resource use of image containers",
    .run = stats,
    .usage =
	"Usage: kapsel stats [--no-stream] [--format json|TEMPLATE] [NAME...]\n"
	"\n"
	"Shows CPU %, memory use and limit, network and block I/O and the number of\n"
	"processes of running containers made by 'kapsel run' (all of them without a\n"
	"NAME), from their cgroups (v1, v2 or hybrid), as podman stats does; refreshed\n"
	"every second until interrupted.\n"
	"\n"
	"Options:\n"
	"  --no-stream             print once and exit\n"
	"  --format, -f FORMAT     table (default), json, or a template such as\n"
	"                          \"table {{.Name}}\\t{{.CPUPerc}}\\t{{.MemUsage}}\"; fields:\n"
	"                          .ID .Name .CPUPerc .MemUsage .MemUsageBytes .MemPerc\n"
	"                          .NetIO .BlockIO .PIDS .CPU .AvgCPU .UpTime\n"
	"  --interval, -i SECONDS  time between refreshes (default 1)\n"
	"  --help, -h              print this help\n",
};
