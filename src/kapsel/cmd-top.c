/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include <kapsel/tools.h>

#include "commands.h"

static const struct option options[] = {
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int top(const struct cli_globals *g, int argc, char **argv)
{
	int c = cli_getopt_cmd(&cmd_top, argc, argv);
	if (c != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_top, argc - optind, 1, -1, "container name"))
		return cli_fail_status();
	struct kapsel_top t;
	struct kapsel_error *err = NULL;
	if (kapsel_image_top(g->store, argv[optind], argv + optind + 1, &t, &err) < 0)
		return cli_fail_err(err);
	/* Columns as wide as their widest cell; the last one unpadded (commands run long). */
	size_t width[64] = {0};
	for (size_t col = 0; col < t.n_cols && col < 64; col++) {
		width[col] = strlen(t.header[col]);
		for (size_t r = 0; r < t.n_rows; r++) {
			size_t w = strlen(t.cells[r * t.n_cols + col]);
			if (w > width[col])
				width[col] = w;
		}
	}
	for (size_t r = 0; r <= t.n_rows; r++) {
		for (size_t col = 0; col < t.n_cols; col++) {
			const char *s = r ? t.cells[(r - 1) * t.n_cols + col] : t.header[col];
			if (col + 1 == t.n_cols)
				printf("%s\n", s);
			else
				printf("%-*s  ", (int)width[col < 64 ? col : 63], s);
		}
	}
	kapsel_top_clear(&t);
	return 0;
}

const struct cli_command cmd_top = {
    .podman_status = true,
    .name = "top",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = options,
    .summary = "show the processes of an image container",
    .run = top,
    .argv_after = 1,
    .usage =
	"Usage: kapsel top NAME [DESCRIPTOR...]\n"
	"\n"
	"Lists the processes of a running container made by 'kapsel run', as podman top\n"
	"does. Default columns: USER PID PPID %CPU ELAPSED TTY TIME COMMAND. User and\n"
	"group names are the container's; PIDs are those in its namespace (hpid: the host's).\n"
	"\n"
	"Descriptors (also comma-separated): user pid ppid pcpu etime tty time args comm\n"
	"group nice pgid rgroup ruser vsz rss state stime hpid huser hgroup capamb capbnd\n"
	"capeff capinh capprm seccomp, or AIX ones: %C %G %P %U %a %c %g %n %p %r %t %u %x\n"
	"%y %z.\n"
	"\n"
	"Options:\n"
	"  --help, -h              print this help\n",
};
