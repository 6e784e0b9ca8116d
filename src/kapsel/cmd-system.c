/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kapsel/image.h>
#include <kapsel/run.h>
#include <kapsel/tools.h>

#include "commands.h"

/* go-units HumanSize (4 significant digits, decimal units), as podman system df prints. */
static void human_size(int64_t v, char *buf, size_t len)
{
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
	double d = (double)(v < 0 ? 0 : v);
	size_t u = 0;
	while (d >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
		d /= 1000;
		u++;
	}
	snprintf(buf, len, "%.4g%s", d, units[u]);
}

static void df_row(const char *type, const struct kapsel_df_row *r)
{
	char size[32], rec[32], col[48];
	human_size(r->size, size, sizeof(size));
	human_size(r->reclaimable, rec, sizeof(rec));
	snprintf(col, sizeof(col), "%s (%d%%)", rec,
		 r->size > 0 ? (int)(100 * r->reclaimable / r->size) : 0);
	printf("%-15s%-12" PRIu64 "%-12" PRIu64 "%-12s%s\n", type, r->total, r->active, size, col);
}

static void df_json_row(const char *type, const struct kapsel_df_row *r, bool last)
{
	/* podman system df --format json's keys. */
	char size[32], rec[32];
	human_size(r->size, size, sizeof(size));
	human_size(r->reclaimable, rec, sizeof(rec));
	printf(" {\"Type\": \"%s\", \"Total\": %" PRIu64 ", \"Active\": %" PRIu64
	       ", \"RawSize\": %lld, \"RawReclaimable\": %lld, \"Size\": \"%s\", "
	       "\"Reclaimable\": \"%s (%d%%)\"}%s\n",
	       type, r->total, r->active, (long long)r->size, (long long)r->reclaimable, size, rec,
	       r->size > 0 ? (int)(100 * r->reclaimable / r->size) : 0, last ? "" : ",");
}

static const struct cli_command cmd_system_df, cmd_system_prune;

static const struct option df_options[] = {
    {"format", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int df(const struct cli_globals *g, int argc, char **argv)
{
	bool json = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_system_df, argc, argv)) != -1) {
		if (c != 'f')
			return cli_opt_status(c);
		json = !strcmp(optarg, "json");
		if (!json && strcmp(optarg, "table"))
			return cli_fail("system df: invalid format \"%s\" (table or json)", optarg);
	}
	if (!cli_nargs(&cmd_system_df, argc - optind, 0, 0, "none"))
		return cli_fail_status();
	struct kapsel_df d;
	struct kapsel_error *err = NULL;
	if (kapsel_system_df(g->store, &d, &err) < 0)
		return cli_fail_err(err);
	if (json) {
		puts("[");
		df_json_row("Images", &d.images, false);
		df_json_row("Containers", &d.containers, false);
		df_json_row("Local Volumes", &d.volumes, true);
		puts("]");
		return 0;
	}
	printf("%-15s%-12s%-12s%-12s%s\n", "TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE");
	df_row("Images", &d.images);
	df_row("Containers", &d.containers);
	df_row("Local Volumes", &d.volumes);
	return 0;
}

/* podman's prompt; false unless the answer is yes. */
static bool confirm(bool all)
{
	printf("WARNING! This command removes:\n"
	       "\t- all stopped containers\n"
	       "\t- all %s images\n"
	       "\t- all blobs and layers no image or container uses\n"
	       "\n"
	       "Are you sure you want to continue? [y/N] ",
	       all ? "unused" : "dangling");
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof(line), stdin))
		return false;
	return !strcmp(line, "y\n") || !strcmp(line, "Y\n") || !strcasecmp(line, "yes\n");
}

static const struct option prune_options[] = {
    {"all", no_argument, NULL, 'a'},
    {"force", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int prune(const struct cli_globals *g, int argc, char **argv)
{
	bool all = false, force = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_system_prune, argc, argv)) != -1) {
		if (c == 'a')
			all = true;
		else if (c == 'f')
			force = true;
		else
			return cli_opt_status(c);
	}
	if (!cli_nargs(&cmd_system_prune, argc - optind, 0, 0, "none"))
		return cli_fail_status();
	if (!force) {
		/* podman asks; with no terminal to ask on, nothing is removed unasked. */
		if (!isatty(STDIN_FILENO))
			return cli_fail("system prune: needs confirmation and stdin is not a "
					"terminal; use --force");
		if (!confirm(all))
			return 0;
	}
	struct kapsel_error *err = NULL;
	struct kapsel_df before, after;
	if (kapsel_system_df(g->store, &before, &err) < 0)
		return cli_fail_err(err);

	int status = 0;
	struct kapsel_ps_entry *e = NULL;
	size_t n = 0;
	if (kapsel_image_ps(g->store, g->root, true, &e, &n, &err) < 0)
		return cli_fail_err(err);
	bool header = false;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(e[i].status, "running") || !strcmp(e[i].status, "paused"))
			continue;
		if (kapsel_image_rm(g->store, g->root, e[i].name, false, &err) < 0) {
			status = cli_fail_err(err);
			err = NULL;
			continue;
		}
		if (!header)
			puts("Deleted Containers");
		header = true;
		puts(e[i].name);
	}
	kapsel_ps_entries_free(e, n);

	if (all) {
		/* Every image no container uses: rmi refuses the others (EBUSY). */
		struct kapsel_image_info *imgs = NULL;
		size_t ni = 0;
		if (kapsel_image_list(g->store, &imgs, &ni, &err) < 0)
			return cli_fail_err(err);
		header = false;
		for (size_t i = 0; i < ni; i++) {
			int r = kapsel_image_remove(g->store, imgs[i].name, false, &err);
			if (r == -EBUSY || r == -ENOENT) {
				kapsel_error_free(err);
				err = NULL;
				continue;
			}
			if (r < 0) {
				status = cli_fail_err(err);
				err = NULL;
				continue;
			}
			if (!header)
				puts("Deleted Images");
			header = true;
			puts(imgs[i].name);
		}
		kapsel_image_info_free(imgs, ni);
	}
	int64_t freed = kapsel_image_prune(g->store, &err);
	if (freed < 0)
		return cli_fail_err(err);
	if (kapsel_system_df(g->store, &after, &err) < 0)
		return cli_fail_err(err);
	/* What rm and rmi gave back, and what prune found on top of that. */
	int64_t ctr = before.containers.size - after.containers.size;
	int64_t img = before.images.size - after.images.size;
	char total[32];
	human_size(freed + (ctr > 0 ? ctr : 0) + (img > 0 ? img : 0), total, sizeof(total));
	printf("Total reclaimed space: %s\n", total);
	return status;
}

static int system_cmd(const struct cli_globals *g, int argc, char **argv)
{
	return cli_dispatch(&cmd_system, g, argc, argv);
}

static const char system_usage[] =
    "Usage: kapsel system df [--format table|json]\n"
    "       kapsel system prune [-a] [-f]\n"
    "\n"
    "df: images, containers and local volumes in the store: how many, how many in\n"
    "use, their size and what removing the unused ones gives back (podman system df).\n"
    "prune: removes stopped containers, dangling images and the blobs and layers\n"
    "nothing uses (with --all also every image no container uses), after asking on\n"
    "the terminal; without one it needs --force.\n"
    "\n"
    "Options:\n"
    "  --format, -f FORMAT     df: table (default) or json\n"
    "  --all, -a               prune: also images no container uses\n"
    "  --force, -f             prune: do not ask for confirmation\n"
    "  --help, -h              print this help\n";

static const struct cli_command cmd_system_df = {
    .name = "system df",
    .summary = "show the store's disk use",
    .run = df,
    .usage = system_usage,
    .shortopts = "f:h",
    .options = df_options,
};
static const struct cli_command cmd_system_prune = {
    .name = "system prune",
    .summary = "remove stopped containers, dangling images and unused blobs",
    .run = prune,
    .usage = system_usage,
    .shortopts = "afh",
    .options = prune_options,
};

const struct cli_command cmd_system = {
    .podman_status = true,
    .name = "system",
    .summary = "show the store's disk use (df), remove what is unused (prune)",
    .run = system_cmd,
    .usage = system_usage,
    .subcommands =
	(const struct cli_subcommand[]){
	    {"df", &cmd_system_df},
	    {"prune", &cmd_system_prune},
	    {0},
	},
};
