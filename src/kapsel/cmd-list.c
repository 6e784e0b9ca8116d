/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include <kapsel/container.h>

#include "commands.h"

#define N_COLUMNS 6

static const char *const headers[N_COLUMNS] = {"ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"};

static void cells(const struct kapsel_container_info *c, char *pid, size_t pid_len,
		  const char *out[N_COLUMNS])
{
	snprintf(pid, pid_len, "%d", (int)c->pid);
	out[0] = c->id;
	out[1] = pid;
	out[2] = c->status ? c->status : "";
	out[3] = c->bundle ? c->bundle : "";
	out[4] = c->created ? c->created : "";
	out[5] = c->owner ? c->owner : "";
}

static void print_row(const char *const row[N_COLUMNS], const size_t width[N_COLUMNS])
{
	for (int i = 0; i < N_COLUMNS - 1; i++)
		printf("%-*s", (int)width[i], row[i]);
	printf("%s\n", row[N_COLUMNS - 1]);
}

/*
 * runc prints through Go's tabwriter (minwidth 12, padding 3): every column but the last is as
 * wide as its longest cell plus 3, and at least 12.
 */
static void print_table(const struct kapsel_container_info *list, size_t n)
{
	size_t width[N_COLUMNS];
	const char *row[N_COLUMNS];
	char pid[16];

	for (int i = 0; i < N_COLUMNS; i++)
		width[i] = strlen(headers[i]);
	for (size_t k = 0; k < n; k++) {
		cells(&list[k], pid, sizeof(pid), row);
		for (int i = 0; i < N_COLUMNS; i++)
			if (strlen(row[i]) > width[i])
				width[i] = strlen(row[i]);
	}
	for (int i = 0; i < N_COLUMNS; i++)
		width[i] = width[i] + 3 < 12 ? 12 : width[i] + 3;

	print_row(headers, width);
	for (size_t k = 0; k < n; k++) {
		cells(&list[k], pid, sizeof(pid), row);
		print_row(row, width);
	}
}

/* runc's list JSON, limited to what the state directory records for each container. */
static void print_json(const struct kapsel_container_info *list, size_t n)
{
	static const char *const keys[N_COLUMNS] = {"id",     "pid",	 "status",
						    "bundle", "created", "owner"};
	const char *row[N_COLUMNS];
	char pid[16];

	putchar('[');
	for (size_t k = 0; k < n; k++) {
		cells(&list[k], pid, sizeof(pid), row);
		printf("%s{", k ? "," : "");
		for (int i = 0; i < N_COLUMNS; i++) {
			printf("%s\"%s\":", i ? "," : "", keys[i]);
			if (i == 1)
				fputs(pid, stdout);
			else
				cli_json_string(stdout, row[i]);
		}
		putchar('}');
	}
	puts("]");
}

static const struct option options[] = {
    {"format", required_argument, NULL, 'f'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int list(const struct cli_globals *g, int argc, char **argv)
{
	bool quiet = false, json = false;
	struct kapsel_container_info *containers = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt_cmd(&cmd_list, argc, argv)) != -1) {
		switch (c) {
		case 'f':
			json = !strcmp(optarg, "json");
			if (!json && strcmp(optarg, "table"))
				return cli_fail("list: invalid format \"%s\" (table or json)",
						optarg);
			break;
		case 'q':
			quiet = true;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_list, argc - optind, 0, 0, "none"))
		return 1;
	if (kapsel_container_list(g->root, &containers, &n, &err) < 0)
		return cli_fail_err(err);

	if (quiet)
		for (size_t k = 0; k < n; k++)
			puts(containers[k].id);
	else if (json)
		print_json(containers, n);
	else
		print_table(containers, n);
	kapsel_container_info_free(containers, n);
	return 0;
}

const struct cli_command cmd_list = {
    .name = "list",
    .shortopts = "f:qh",
    .options = options,
    .summary = "list the containers under the state root",
    .run = list,
    .usage = "Usage: kapsel list [options]\n"
	     "\n"
	     "List the containers kapsel manages under --root.\n"
	     "\n"
	     "Options:\n"
	     "  --format, -f FORMAT     table (default) or json\n"
	     "  --quiet, -q             print only the container IDs\n"
	     "  --help, -h              print this help\n",
};
