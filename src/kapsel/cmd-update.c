/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/container.h>

#include "commands.h"

enum {
	OPT_MEMORY = 0x100,
	OPT_MEMORY_RESERVATION,
	OPT_MEMORY_SWAP,
	OPT_CPU_QUOTA,
	OPT_CPU_PERIOD,
	OPT_CPU_SHARE,
	OPT_CPUSET_CPUS,
	OPT_CPUSET_MEMS,
	OPT_PIDS_LIMIT,
	OPT_BLKIO_WEIGHT,
};

/* runc 1.1 update.go flag names (the subset kapsel implements). */
static const struct option options[] = {
    {"resources", required_argument, NULL, 'r'},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"memory-reservation", required_argument, NULL, OPT_MEMORY_RESERVATION},
    {"memory-swap", required_argument, NULL, OPT_MEMORY_SWAP},
    {"cpu-quota", required_argument, NULL, OPT_CPU_QUOTA},
    {"cpu-period", required_argument, NULL, OPT_CPU_PERIOD},
    {"cpu-share", required_argument, NULL, OPT_CPU_SHARE},
    {"cpuset-cpus", required_argument, NULL, OPT_CPUSET_CPUS},
    {"cpuset-mems", required_argument, NULL, OPT_CPUSET_MEMS},
    {"pids-limit", required_argument, NULL, OPT_PIDS_LIMIT},
    {"blkio-weight", required_argument, NULL, OPT_BLKIO_WEIGHT},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/*
 * A size as docker's units.RAMInBytes reads it: "512", "64k", "1.5g", "2 GiB", "100MB" (binary
 * multiples); "-1" means unlimited, as runc allows for the memory flags.
 */
static bool parse_size(const char *flag, const char *s, int64_t *out)
{
	static const char suffixes[] = "kmgtp";
	if (!strcmp(s, "-1")) {
		*out = -1;
		return true;
	}
	size_t n = strspn(s, "0123456789.");
	char num[32], *end;
	if (n == 0 || n >= sizeof(num) || s[0] == '.')
		goto invalid;
	memcpy(num, s, n);
	num[n] = '\0';
	double v = strtod(num, &end);
	if (*end)
		goto invalid;

	const char *p = s + n;
	if (*p == ' ')
		p++;
	double mult = 1;
	const char *unit = *p ? strchr(suffixes, tolower((unsigned char)*p)) : NULL;
	if (unit) {
		for (const char *u = suffixes; u <= unit; u++)
			mult *= 1024;
		p++;
	}
	if (*p == 'i' || *p == 'I')
		p++;
	if (*p == 'b' || *p == 'B')
		p++;
	if (*p || v * mult >= 9.2e18)
		goto invalid;
	*out = (int64_t)(v * mult);
	return true;
invalid:
	cli_fail("update: %s: invalid size \"%s\" (examples: 512m, 1g, -1)", flag, s);
	return false;
}

/* The rest of f as a string; NULL with errno set on failure. */
static char *read_all(FILE *f)
{
	char *buf = NULL, chunk[8192];
	size_t len = 0, r;
	FILE *mem = open_memstream(&buf, &len);
	if (!mem)
		return NULL;
	while ((r = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, r, mem);
	bool failed = ferror(f) || ferror(mem);
	if (fclose(mem) != 0 || failed) {
		free(buf);
		errno = errno ? errno : EIO;
		return NULL;
	}
	return buf;
}

/* linux.resources JSON from a file or, for "-", stdin. */
static char *read_resources(const char *path)
{
	bool is_stdin = !strcmp(path, "-");
	FILE *f = is_stdin ? stdin : fopen(path, "re");
	if (!f) {
		cli_fail("update: open %s: %s", path, strerror(errno));
		return NULL;
	}
	errno = 0;
	char *json = read_all(f);
	if (!json)
		cli_fail("update: read %s: %s", is_stdin ? "stdin" : path, strerror(errno));
	if (!is_stdin)
		fclose(f);
	return json;
}

/* Applies one flag to o; false after reporting a bad value. */
static bool apply(int c, const char *arg, struct kapsel_update_options *o)
{
	char flag[32] = "";
	for (const struct option *opt = options; opt->name; opt++)
		if (opt->val == c)
			snprintf(flag, sizeof(flag), "--%s", opt->name);
	long long n;

	switch (c) {
	case OPT_MEMORY:
		return (o->has_memory = parse_size(flag, arg, &o->memory));
	case OPT_MEMORY_RESERVATION:
		return (o->has_memory_reservation = parse_size(flag, arg, &o->memory_reservation));
	case OPT_MEMORY_SWAP:
		return (o->has_memory_swap = parse_size(flag, arg, &o->memory_swap));
	case OPT_CPU_QUOTA:
		if (!cli_parse_int(&cmd_update, flag, arg, -1, INT64_MAX, &n))
			return false;
		o->cpu_quota = n;
		return (o->has_cpu_quota = true);
	case OPT_CPU_PERIOD:
		if (!cli_parse_int(&cmd_update, flag, arg, 0, INT64_MAX, &n))
			return false;
		o->cpu_period = (uint64_t)n;
		return (o->has_cpu_period = true);
	case OPT_CPU_SHARE:
		if (!cli_parse_int(&cmd_update, flag, arg, 0, INT64_MAX, &n))
			return false;
		o->cpu_shares = (uint64_t)n;
		return (o->has_cpu_shares = true);
	case OPT_PIDS_LIMIT:
		if (!cli_parse_int(&cmd_update, flag, arg, -1, INT64_MAX, &n))
			return false;
		o->pids_limit = n;
		return (o->has_pids_limit = true);
	case OPT_BLKIO_WEIGHT:
		if (!cli_parse_int(&cmd_update, flag, arg, 0, UINT16_MAX, &n))
			return false;
		o->blkio_weight = (uint16_t)n;
		return (o->has_blkio_weight = true);
	case OPT_CPUSET_CPUS:
		o->cpuset_cpus = arg;
		return true;
	case OPT_CPUSET_MEMS:
		o->cpuset_mems = arg;
		return true;
	}
	return false;
}

static int update(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_update_options o = {0};
	const char *resources = NULL;
	struct kapsel_error *err = NULL;
	int c;

	const char *memory_arg = NULL;
	while ((c = cli_getopt_cmd(&cmd_update, argc, argv)) != -1) {
		if (c == OPT_MEMORY)
			memory_arg = optarg;
		if (c == 'r')
			resources = optarg;
		else if (c < OPT_MEMORY || c > OPT_BLKIO_WEIGHT)
			return cli_opt_status(c);
		else if (!apply(c, optarg, &o))
			return 1;
	}
	if (!cli_nargs(&cmd_update, argc - optind, 1, 1, "container ID"))
		return 1;
	/* What `kapsel run --memory` enforces (podman's minimum): a limit below the container's
	 * current use fails in the kernel with a bare EBUSY instead. A container that does not
	 * exist is the first thing to say, though. */
	if (o.has_memory && o.memory >= 0 && o.memory < (6 << 20)) {
		char *state = NULL;
		if (kapsel_container_state(g->root, argv[optind], &state, &err) < 0)
			return cli_fail_err(err);
		free(state);
		return cli_fail("update: --memory: %s is below the minimum of 6m", memory_arg);
	}

	char *json = NULL;
	if (resources) {
		json = read_resources(resources);
		if (!json)
			return 1;
		o.resources_json = json;
	}
	int r = kapsel_container_update(g->root, argv[optind], &o, &err);
	free(json);
	return r < 0 ? cli_fail_err(err) : 0;
}

const struct cli_command cmd_update = {
    .name = "update",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "r:h",
    .options = options,
    .summary = "change the resource limits of a container",
    .run = update,
    .usage = "Usage: kapsel update [options] <container-id>\n"
	     "\n"
	     "Change the container's cgroup limits, from a linux.resources JSON object and/or\n"
	     "the flags below (which apply on top of it).\n"
	     "\n"
	     "Options:\n"
	     "  --resources, -r FILE    linux.resources JSON from FILE ('-' for stdin)\n"
	     "  --memory SIZE           memory limit (e.g. 512m, 1g; -1 for none)\n"
	     "  --memory-reservation SIZE  memory soft limit\n"
	     "  --memory-swap SIZE      memory plus swap limit (-1 for none)\n"
	     "  --cpu-quota N           CPU time per period in microseconds (-1 for none)\n"
	     "  --cpu-period N          CFS period in microseconds\n"
	     "  --cpu-share N           CPU shares (relative weight)\n"
	     "  --cpuset-cpus LIST      CPUs allowed (e.g. 0-3,5)\n"
	     "  --cpuset-mems LIST      memory nodes allowed\n"
	     "  --pids-limit N          maximum number of processes (-1 for none)\n"
	     "  --blkio-weight N        block I/O weight (10 to 1000)\n"
	     "  --help, -h              print this help\n",
};
