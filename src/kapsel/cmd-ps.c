/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kapsel/container.h>

#include "commands.h"

static void print_json(const pid_t *pids, size_t n)
{
	putchar('[');
	for (size_t i = 0; i < n; i++)
		printf("%s%d", i ? "," : "", (int)pids[i]);
	puts("]");
}

/* Index of the "PID" column in ps's header line, or -1. */
static int pid_column(const char *header)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", header);
	char *save = NULL;
	int i = 0;
	for (char *f = strtok_r(buf, " \t\n", &save); f; f = strtok_r(NULL, " \t\n", &save), i++)
		if (!strcmp(f, "PID"))
			return i;
	return -1;
}

static bool row_in_container(const char *line, int col, const pid_t *pids, size_t n)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", line);
	char *save = NULL, *f = strtok_r(buf, " \t\n", &save);
	for (int i = 0; f && i < col; i++)
		f = strtok_r(NULL, " \t\n", &save);
	if (!f)
		return false;
	long pid = strtol(f, NULL, 10);
	for (size_t i = 0; i < n; i++)
		if (pids[i] == pid)
			return true;
	return false;
}

/* ps(1) with args (default -ef), its stdout on a pipe; returns the read end, or NULL. */
static FILE *spawn_ps(char **args, int n_args, pid_t *child)
{
	char **argv = calloc((size_t)n_args + 3, sizeof(*argv));
	int fds[2];
	if (!argv || pipe(fds) < 0) {
		free(argv);
		return NULL;
	}
	argv[0] = "ps";
	if (n_args == 0)
		argv[1] = "-ef";
	for (int i = 0; i < n_args; i++)
		argv[i + 1] = args[i];

	*child = fork();
	if (*child == 0) {
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execvp("ps", argv);
		fprintf(stderr, "kapsel: ps: exec ps: %s\n", strerror(errno));
		_exit(127);
	}
	free(argv);
	close(fds[1]);
	if (*child < 0) {
		close(fds[0]);
		return NULL;
	}
	return fdopen(fds[0], "r");
}

/*
 * As runc does: run ps(1) on the host with the user's options and keep the header and the rows
 * whose PID column names a process of the container.
 */
static int print_table(char **args, int n_args, const pid_t *pids, size_t n)
{
	pid_t child = -1;
	FILE *out = spawn_ps(args, n_args, &child);
	if (!out)
		return cli_fail("ps: run ps: %s", strerror(errno));

	char *line = NULL;
	size_t cap = 0;
	int col = -1;
	if (getline(&line, &cap, out) > 0) {
		fputs(line, stdout);
		col = pid_column(line);
	}
	while (col >= 0 && getline(&line, &cap, out) > 0)
		if (row_in_container(line, col, pids, n))
			fputs(line, stdout);
	free(line);
	fclose(out);

	int status;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return cli_fail("ps: ps failed (status 0x%x)", (unsigned)status);
	if (col < 0)
		return cli_fail("ps: no PID column in the output of ps");
	return 0;
}

static int ps(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"format", required_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool json = false;
	pid_t *pids = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt(&cmd_ps, argc, argv, "f:h", options)) != -1) {
		switch (c) {
		case 'f':
			json = !strcmp(optarg, "json");
			if (!json && strcmp(optarg, "table"))
				return cli_fail("ps: invalid format \"%s\" (table or json)",
						optarg);
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_ps, argc - optind, 1, -1, "container ID [ps options]"))
		return 1;
	if (json && argc - optind > 1)
		return cli_fail("ps: ps options cannot be used with --format json");
	if (kapsel_container_pids(g->root, argv[optind], &pids, &n, &err) < 0)
		return cli_fail_err(err);

	int r = 0;
	if (json)
		print_json(pids, n);
	else
		r = print_table(argv + optind + 1, argc - optind - 1, pids, n);
	free(pids);
	return r;
}

const struct cli_command cmd_ps = {
    .name = "ps",
    .summary = "list the processes running in a container",
    .run = ps,
    .usage = "Usage: kapsel ps [options] <container-id> [ps options]\n"
	     "\n"
	     "List the container's processes: the rows of 'ps' (run with the given options,\n"
	     "default -ef) whose PID belongs to the container.\n"
	     "\n"
	     "Options:\n"
	     "  --format, -f FORMAT     table (default) or json (an array of host pids)\n"
	     "  --help, -h              print this help\n",
};
