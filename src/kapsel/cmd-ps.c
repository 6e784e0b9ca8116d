/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/run.h>

#include "commands.h"
#include "format.h"

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
	if (WIFSIGNALED(status))
		return cli_fail("ps: ps killed by signal %d", WTERMSIG(status));
	if (WEXITSTATUS(status) != 0)
		return cli_fail("ps: ps %s: exit status %d (check the ps options)",
				n_args ? args[0] : "-ef", WEXITSTATUS(status));
	if (col < 0)
		return cli_fail("ps: no PID column in the output of ps");
	return 0;
}

/* "5 seconds", "3 minutes", ... as podman words a duration. */
static void human_duration(int64_t secs, char *buf, size_t len)
{
	static const struct {
		int64_t unit;
		const char *name;
	} units[] = {{86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}};
	if (secs < 1) {
		snprintf(buf, len, "less than a second");
		return;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (secs >= units[i].unit) {
			int64_t v = secs / units[i].unit;
			snprintf(buf, len, "%lld %s%s", (long long)v, units[i].name,
				 v == 1 ? "" : "s");
			return;
		}
	}
}

/*
 * podman ps --format json's object for one container. For a template (podman's ps fields),
 * also ID, and Names as one string: podman's template sees Names as the names joined.
 */
static char *entry_json(const struct kapsel_ps_entry *e, const char *created, const char *status,
			bool for_template)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	if (!m)
		return NULL;
	/* The name is the runtime id too. */
	bool exited = !strcmp(e->status, "exited");
	fprintf(m, "{\"Id\":");
	cli_json_string(m, e->name);
	if (for_template) {
		fprintf(m, ",\"ID\":");
		cli_json_string(m, e->name);
		fprintf(m, ",\"Names\":");
		cli_json_string(m, e->name);
	} else {
		fprintf(m, ",\"Names\":[");
		cli_json_string(m, e->name);
		fputc(']', m);
	}
	fprintf(m, ",\"Image\":");
	cli_json_string(m, e->image);
	fprintf(m, ",\"Command\":");
	cli_json_string(m, e->command);
	fprintf(m, ",\"Created\":%lld,\"CreatedAt\":", (long long)e->created);
	cli_json_string(m, created);
	fprintf(m, ",\"State\":");
	cli_json_string(m, e->status);
	fprintf(m, ",\"Exited\":%s,\"ExitedAt\":%lld,\"ExitCode\":%d,\"Status\":",
		exited ? "true" : "false", (long long)(exited ? e->finished : 0), e->exit_code);
	cli_json_string(m, status);
	fputc('}', m);
	if (fclose(m) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* Without an ID: the containers `kapsel run IMAGE` made, as podman ps lists them. */
static int list_containers(const struct cli_globals *g, bool all, bool quiet,
			   const struct cli_format *f)
{
	struct kapsel_ps_entry *e = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	if (kapsel_image_ps(g->store, g->root, all, &e, &n, &err) < 0)
		return cli_fail_err(err);
	int64_t now = time(NULL);
	bool json = f->kind == CLI_FORMAT_JSON, tmpl = f->kind == CLI_FORMAT_TEMPLATE && !quiet;
	int status = 0;
	if (json)
		putchar('[');
	else if (tmpl)
		cli_format_header(f);
	else if (!quiet)
		printf("%-24s  %-32s  %-24s  %-24s  %s\n", "NAME", "IMAGE", "COMMAND", "CREATED",
		       "STATUS");
	for (size_t i = 0; i < n; i++) {
		char created[64], ago[48], state[128];
		human_duration(now - e[i].created, ago, sizeof(ago));
		snprintf(created, sizeof(created), "%s ago", ago);
		if (!strcmp(e[i].status, "running") || !strcmp(e[i].status, "paused")) {
			snprintf(state, sizeof(state), "Up %s%s", ago,
				 strcmp(e[i].status, "paused") ? "" : " (Paused)");
		} else if (!strcmp(e[i].status, "exited")) {
			char done[48], code[16] = "";
			human_duration(now - (e[i].finished ? e[i].finished : e[i].created), done,
				       sizeof(done));
			if (e[i].exit_code >= 0)
				snprintf(code, sizeof(code), " (%d)", e[i].exit_code);
			snprintf(state, sizeof(state), "Exited%s %s ago", code, done);
		} else {
			snprintf(state, sizeof(state), "Created");
		}
		if (json || tmpl) {
			char *obj = entry_json(&e[i], created, state, tmpl);
			if (!obj) {
				status = cli_fail("ps: out of memory");
				break;
			}
			if (json)
				printf("%s%s", i ? "," : "", obj);
			else if (!cli_format_print("ps", f, obj))
				status = EXIT_ENGINE;
			free(obj);
			if (status)
				break;
		} else if (quiet) {
			puts(e[i].name);
		} else {
			char cmd[25];
			snprintf(cmd, sizeof(cmd), "%s", e[i].command);
			printf("%-24s  %-32s  %-24s  %-24s  %s\n", e[i].name, e[i].image, cmd,
			       created, state);
		}
	}
	if (json)
		puts("]");
	kapsel_ps_entries_free(e, n);
	return status;
}

static const struct option options[] = {
    {"format", required_argument, NULL, 'f'},
    {"all", no_argument, NULL, 'a'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/*
 * Whether argv names no container (podman's ps, a list) rather than runc's ps ID: for the
 * status of an error met while parsing the flags, before optind says which.
 */
static bool lists(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return i + 1 >= argc;
		if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--format") ||
		    !strcmp(argv[i], "-format"))
			i++;
		else if (argv[i][0] != '-')
			return false;
	}
	return true;
}

static int ps(const struct cli_globals *g, int argc, char **argv)
{
	bool json = false, all = false, quiet = false;
	const char *format = NULL;
	pid_t *pids = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	int c;

	/* podman's ps (a list) exits 125 on errors; ps ID is runc's and keeps its 1. */
	if (lists(argc, argv))
		cli_set_fail_status(EXIT_ENGINE);
	while ((c = cli_getopt_cmd(&cmd_ps, argc, argv)) != -1) {
		switch (c) {
		case 'a':
			all = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'f':
			json = !strcmp(optarg, "json");
			if (!json && strcmp(optarg, "table") && !strstr(optarg, "{{"))
				return cli_fail("ps: invalid format \"%s\" (table, json or a "
						"template)",
						optarg);
			format = optarg;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (argc - optind == 0) {
		struct cli_format f;
		if (!cli_format_parse("ps", format, &f))
			return EXIT_ENGINE;
		int r = list_containers(g, all, quiet, &f);
		cli_format_clear(&f);
		return r;
	}
	if (format && !json && strcmp(format, "table"))
		return cli_fail("ps: a --format template lists containers: give no container ID");
	/*
	 * After the ID come ps's own options (runc's shape), but "-f json" there is kapsel's
	 * --format as podman users place it: ps(1) has no such use of -f (it would print its
	 * usage). So a trailing -f/--format json|table is ours.
	 */
	int nps = argc - optind - 1;
	char **psargs = argv + optind + 1;
	if (nps == 2 &&
	    (!strcmp(psargs[0], "-f") || !strcmp(psargs[0], "--format") ||
	     !strcmp(psargs[0], "-format")) &&
	    (!strcmp(psargs[1], "json") || !strcmp(psargs[1], "table"))) {
		json = !strcmp(psargs[1], "json");
		nps = 0;
	} else if (nps == 1 &&
		   (!strcmp(psargs[0], "--format=json") || !strcmp(psargs[0], "--format=table") ||
		    !strcmp(psargs[0], "-f=json") || !strcmp(psargs[0], "-f=table"))) {
		json = strstr(psargs[0], "json") != NULL;
		nps = 0;
	}
	if (all || quiet)
		return cli_fail("ps: --all and --quiet list containers: give no container ID");
	if (json && nps > 0)
		return cli_fail("ps: ps options cannot be used with --format json");
	if (kapsel_container_pids(g->root, argv[optind], &pids, &n, &err) < 0)
		return cli_fail_err(err);

	int r = 0;
	if (json)
		print_json(pids, n);
	else
		r = print_table(psargs, nps, pids, n);
	free(pids);
	return r;
}

const struct cli_command cmd_ps = {
    .name = "ps",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "f:aqh",
    .options = options,
    .summary = "list image containers, or the processes of one container (runc)",
    .run = ps,
    .argv_after = 1,
    .usage = "Usage: kapsel ps [-a] [-q] [--format table|json|TEMPLATE]\n"
	     "       kapsel ps [--format table|json] <container-id> [ps options]\n"
	     "\n"
	     "Without an ID: the containers 'kapsel run IMAGE' made (like podman ps): running\n"
	     "ones, or with --all stopped ones too.\n"
	     "With an ID (runc's ps): the rows of 'ps' (run with the given options, default\n"
	     "-ef) whose PID belongs to the container.\n"
	     "\n"
	     "Options:\n"
	     "  --all, -a               also list stopped containers (no ID)\n"
	     "  --quiet, -q             print names only (no ID)\n"
	     "  --format, -f FORMAT     table (default), json (with an ID: an array of pids),\n"
	     "                          or a Go template per container (no ID): '{{.Names}}',\n"
	     "                          '{{.ID}} {{.Status}}'; fields as in --format json\n"
	     "  --help, -h              print this help\n",
};
