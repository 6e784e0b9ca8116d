/* SPDX-License-Identifier: Apache-2.0 */
/* `kapsel volume create|ls|inspect|rm|prune`, as podman's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kapsel/run.h>
#include <kapsel/volume.h>

#include "commands.h"

enum { OPT_FORMAT = 0x100 };

/* The subcommands, defined with their table at the end. */
static const struct cli_command cmd_volume_create, cmd_volume_list, cmd_volume_inspect,
    cmd_volume_rm, cmd_volume_prune;

static int create(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_volume_create, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_volume_create, argc - optind, 0, 1, "[NAME]"))
		return cli_fail_status();
	char *name = NULL;
	struct kapsel_error *err = NULL;
	if (kapsel_volume_create(g->store, optind < argc ? argv[optind] : NULL, &name, &err) < 0)
		return cli_fail_err(err);
	puts(name);
	free(name);
	return 0;
}

static void created_at(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const struct option list_options[] = {
    {"format", required_argument, NULL, OPT_FORMAT},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int list(const struct cli_globals *g, int argc, char **argv)
{
	bool json = false, quiet = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_volume_list, argc, argv)) != -1) {
		if (c == 'q') {
			quiet = true;
			continue;
		}
		if (c != OPT_FORMAT)
			return cli_opt_status(c);
		if (strcmp(optarg, "json") && strcmp(optarg, "table"))
			return cli_fail("volume ls: --format %s: expected json or table", optarg);
		json = !strcmp(optarg, "json");
	}
	if (!cli_nargs(&cmd_volume_list, argc - optind, 0, 0, ""))
		return cli_fail_status();
	struct kapsel_volume_info *v = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	if (kapsel_volume_list(g->store, &v, &n, &err) < 0)
		return cli_fail_err(err);
	if (json)
		putchar('[');
	else if (!quiet)
		printf("%-12s%s\n", "DRIVER", "VOLUME NAME");
	for (size_t i = 0; i < n; i++) {
		if (quiet && !json) {
			puts(v[i].name);
			continue;
		}
		if (!json) {
			printf("%-12s%s\n", v[i].driver, v[i].name);
			continue;
		}
		/* podman's volume ls --format json keys. */
		char when[40];
		created_at(v[i].created, when, sizeof(when));
		printf("%s\n  {\"Name\": ", i ? "," : "");
		cli_json_string(stdout, v[i].name);
		printf(", \"Driver\": ");
		cli_json_string(stdout, v[i].driver);
		printf(", \"Mountpoint\": ");
		cli_json_string(stdout, v[i].mountpoint);
		printf(", \"CreatedAt\": ");
		cli_json_string(stdout, when);
		printf(
		    ", \"Labels\": {}, \"Scope\": \"local\", \"Options\": {}, \"Containers\": [");
		for (char **p = v[i].containers; *p; p++) {
			printf("%s", p == v[i].containers ? "" : ", ");
			cli_json_string(stdout, *p);
		}
		printf("]}");
	}
	if (json)
		puts(n ? "\n]" : "]");
	kapsel_volume_infos_free(v, n);
	return 0;
}

static int inspect(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_volume_inspect, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_volume_inspect, argc - optind, 1, -1, "NAME..."))
		return cli_fail_status();
	int status = 0;
	bool first = true;
	putchar('[');
	for (int i = optind; i < argc; i++) {
		char *json = NULL;
		struct kapsel_error *err = NULL;
		if (kapsel_volume_inspect(g->store, argv[i], &json, &err) < 0) {
			status = cli_fail_err(err);
			continue;
		}
		printf("%s%s", first ? "\n" : ",\n", json);
		first = false;
		free(json);
	}
	puts(first ? "]" : "\n]");
	return status;
}

/* -f: the containers using the volume go first (podman's volume rm -f). */
static int remove_one(const struct cli_globals *g, const char *name, bool force)
{
	struct kapsel_error *err = NULL;
	if (force) {
		struct kapsel_volume_info *v = NULL;
		size_t n = 0;
		if (kapsel_volume_list(g->store, &v, &n, &err) < 0)
			return cli_fail_err(err);
		int status = 0;
		for (size_t i = 0; i < n && !status; i++) {
			if (strcmp(v[i].name, name))
				continue;
			for (char **p = v[i].containers; *p && !status; p++)
				if (kapsel_image_rm(g->store, g->root, *p, true, &err) < 0)
					status = cli_fail_err(err);
		}
		kapsel_volume_infos_free(v, n);
		if (status)
			return status;
	}
	if (kapsel_volume_rm(g->store, name, &err) < 0)
		return cli_fail_err(err);
	puts(name);
	return 0;
}

/* rm's and prune's: -f means something different to each (see the usage). */
static const struct option force_options[] = {
    {"force", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int rm(const struct cli_globals *g, int argc, char **argv)
{
	bool force = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_volume_rm, argc, argv)) != -1) {
		if (c != 'f')
			return cli_opt_status(c);
		force = true;
	}
	if (!cli_nargs(&cmd_volume_rm, argc - optind, 1, -1, "NAME..."))
		return cli_fail_status();
	int status = 0;
	for (int i = optind; i < argc; i++)
		if (remove_one(g, argv[i], force))
			status = cli_fail_status();
	return status;
}

/* Every volume no container uses. */
static int prune(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	/* -f: podman's "do not ask"; kapsel never asks. */
	while ((c = cli_getopt_cmd(&cmd_volume_prune, argc, argv)) != -1)
		if (c != 'f')
			return cli_opt_status(c);
	if (!cli_nargs(&cmd_volume_prune, argc - optind, 0, 0, ""))
		return cli_fail_status();
	struct kapsel_volume_info *v = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	if (kapsel_volume_list(g->store, &v, &n, &err) < 0)
		return cli_fail_err(err);
	int status = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i].containers[0])
			continue;
		/* A container that started using it meanwhile makes rm refuse: then skip it. */
		if (kapsel_volume_rm(g->store, v[i].name, &err) < 0) {
			if (err->code != EBUSY)
				status = cli_fail_err(err);
			else
				kapsel_error_free(err);
		} else {
			puts(v[i].name);
		}
		err = NULL;
	}
	kapsel_volume_infos_free(v, n);
	return status;
}

static int volume(const struct cli_globals *g, int argc, char **argv)
{
	return cli_dispatch(&cmd_volume, g, argc, argv);
}

static const char volume_usage[] =
    "Usage: kapsel volume create [NAME]\n"
    "       kapsel volume ls [--format json|table] [-q]\n"
    "       kapsel volume inspect NAME...\n"
    "       kapsel volume rm [-f] NAME...\n"
    "       kapsel volume prune [-f]\n"
    "\n"
    "A named volume is a directory in the store (<store>/volumes/NAME/_data) that\n"
    "outlives containers. 'kapsel run -v NAME:/path' and '--mount type=volume,\n"
    "src=NAME,dst=/path' mount it, creating it when missing; a new volume first gets\n"
    "the image's content at /path (unless nocopy). A name is\n"
    "[a-zA-Z0-9][a-zA-Z0-9_.-]*; create without one makes a random name. rm refuses a\n"
    "volume a container uses (running or not); rm -f removes those containers first.\n"
    "prune removes every volume no container uses.\n"
    "\n"
    "Options:\n"
    "  --format json|table   (ls) print a JSON array with podman's keys, or the table\n"
    "  --quiet, -q           (ls) print only the names\n"
    "  --force, -f           (rm) remove the containers using the volume first;\n"
    "                        (prune) accepted for podman's sake: prune never asks\n"
    "  --help, -h            print this help\n";

/* Each subcommand's --help prints the whole usage: it fits on one screen. */
static const struct cli_command cmd_volume_create = {
    .name = "volume create",
    .summary = "create a volume",
    .run = create,
    .usage = volume_usage,
    .shortopts = "h",
    .options = cli_help_options,
};
static const struct cli_command cmd_volume_list = {
    .name = "volume ls",
    .summary = "list volumes",
    .run = list,
    .usage = volume_usage,
    .shortopts = "qh",
    .options = list_options,
};
static const struct cli_command cmd_volume_inspect = {
    .name = "volume inspect",
    .operands = CLI_OPERAND_VOLUME,
    .summary = "print volumes as JSON",
    .run = inspect,
    .usage = volume_usage,
    .shortopts = "h",
    .options = cli_help_options,
};
static const struct cli_command cmd_volume_rm = {
    .name = "volume rm",
    .operands = CLI_OPERAND_VOLUME,
    .summary = "remove volumes",
    .run = rm,
    .usage = volume_usage,
    .shortopts = "fh",
    .options = force_options,
};
static const struct cli_command cmd_volume_prune = {
    .name = "volume prune",
    .summary = "remove the volumes no container uses",
    .run = prune,
    .usage = volume_usage,
    .shortopts = "fh",
    .options = force_options,
};

const struct cli_command cmd_volume = {
    .podman_status = true,
    .name = "volume",
    .summary = "manage named volumes (create, ls, inspect, rm, prune)",
    .run = volume,
    .usage = volume_usage,
    .subcommands =
	(const struct cli_subcommand[]){
	    {"create", &cmd_volume_create},
	    {"ls", &cmd_volume_list},
	    {"list", &cmd_volume_list},
	    {"inspect", &cmd_volume_inspect},
	    {"rm", &cmd_volume_rm},
	    {"remove", &cmd_volume_rm},
	    {"prune", &cmd_volume_prune},
	    {0},
	},
};
