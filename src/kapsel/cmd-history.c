/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <kapsel/image.h>

#include "commands.h"

static void human(int64_t n, char *buf, size_t len)
{
	/* podman's units: decimal, three significant digits. */
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
	double v = (double)n;
	size_t u = 0;
	while (v >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1000;
		u++;
	}
	snprintf(buf, len, u ? "%.3g %s" : "%.0f %s", v, units[u]);
}

static const struct option options[] = {
    {"no-trunc", no_argument, NULL, 'n'},
    {"store", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int history(const struct cli_globals *g, int argc, char **argv)
{
	const char *store = g->store;
	bool trunc = true;
	int c;
	while ((c = cli_getopt_cmd(&cmd_history, argc, argv)) != -1) {
		switch (c) {
		case 'n':
			trunc = false;
			break;
		case 's':
			store = optarg;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_history, argc - optind, 1, 1, "IMAGE"))
		return cli_fail_status();
	struct kapsel_history_entry *v;
	size_t n;
	struct kapsel_error *err = NULL;
	if (kapsel_image_history(store, argv[optind], &v, &n, &err) < 0)
		return cli_fail_err(err);
	printf("%-22s %-46s %-10s %s\n", "CREATED", "CREATED BY", "SIZE", "COMMENT");
	for (size_t i = 0; i < n; i++) {
		char size[32];
		human(v[i].size, size, sizeof(size));
		const char *by = v[i].created_by;
		int w = trunc && strlen(by) > 45 ? 42 : (int)strlen(by);
		printf("%-22s %.*s%s%*s %-10s %s\n", v[i].created, w, by,
		       w < (int)strlen(by) ? "..." : "",
		       trunc ? 45 - w - (w < (int)strlen(by) ? 3 : 0) : 1, "", size, v[i].comment);
	}
	kapsel_history_free(v, n);
	return 0;
}

const struct cli_command cmd_history = {
    .podman_status = true,
    .name = "history",
    .operands = CLI_OPERAND_IMAGE,
    .shortopts = "s:h",
    .options = options,
    .summary = "show how an image was built",
    .run = history,
    .usage = "Usage: kapsel history [--no-trunc] [--store DIR] IMAGE\n"
	     "\n"
	     "Prints the image config's history, newest first: when, the instruction, the size of\n"
	     "the layer it made (0 B for config-only steps), and the comment.\n"
	     "\n"
	     "Options:\n"
	     "  --no-trunc          print CREATED BY in full (cut to 45 columns otherwise)\n"
	     "  --store, -s DIR     image store\n"
	     "  --help, -h          print this help\n",
};
