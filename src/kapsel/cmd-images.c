/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/image.h>

#include "commands.h"

/* Decimal units, as podman and docker print image sizes. */
static void human_size(int64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
	double v = (double)bytes;
	size_t u = 0;
	while (v >= 1000 && u < sizeof(units) / sizeof(units[0]) - 1) {
		v /= 1000;
		u++;
	}
	snprintf(buf, len, u ? "%.3g %s" : "%.0f %s", v, units[u]);
}

static int images(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"store", required_argument, NULL, 's'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"format", required_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *store = g->store;
	bool quiet = false, json = false;
	int c;
	while ((c = cli_getopt(&cmd_images, argc, argv, "s:qf:h", options)) != -1) {
		switch (c) {
		case 's':
			store = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'f':
			json = !strcmp(optarg, "json");
			if (!json && strcmp(optarg, "table"))
				return cli_fail("images: --format: \"%s\" is not table or json",
						optarg);
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_images, argc - optind, 0, 0, "none"))
		return 1;
	struct kapsel_image_info *list = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	if (kapsel_image_list(store, &list, &n, &err) < 0)
		return cli_fail_err(err);
	if (json) {
		putchar('[');
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"name\":", i ? "," : "");
			cli_json_string(stdout, list[i].name);
			printf(",\"repository\":");
			cli_json_string(stdout, list[i].repository);
			printf(",\"tag\":");
			cli_json_string(stdout, list[i].tag);
			printf(",\"id\":");
			cli_json_string(stdout, list[i].id);
			printf(",\"digest\":");
			cli_json_string(stdout, list[i].digest);
			printf(",\"created\":");
			cli_json_string(stdout, list[i].created);
			printf(",\"size\":%lld}", (long long)list[i].size);
		}
		puts("]");
	} else if (quiet) {
		/* One line per image, as `podman images -q`: names of one image share an ID. */
		for (size_t i = 0; i < n; i++) {
			bool seen = false;
			for (size_t k = 0; k < i && !seen; k++)
				seen = !strcmp(list[k].id, list[i].id);
			if (!seen)
				puts(list[i].id);
		}
	} else {
		size_t w = strlen("REPOSITORY");
		for (size_t i = 0; i < n; i++)
			if (strlen(list[i].repository) > w)
				w = strlen(list[i].repository);
		printf("%-*s  %-10s  %-12s  %-25s  %s\n", (int)w, "REPOSITORY", "TAG", "IMAGE ID",
		       "CREATED", "SIZE");
		for (size_t i = 0; i < n; i++) {
			char size[32];
			human_size(list[i].size, size, sizeof(size));
			printf("%-*s  %-10s  %-12s  %-25.25s  %s\n", (int)w, list[i].repository,
			       list[i].tag, list[i].id, list[i].created, size);
		}
	}
	kapsel_image_info_free(list, n);
	return 0;
}

const struct cli_command cmd_images = {
    .name = "images",
    .summary = "list the images in the store",
    .run = images,
    .usage = "Usage: kapsel images [--store DIR] [-q] [--format table|json]\n"
	     "\n"
	     "Lists stored images: repository, tag, image ID (config digest), creation time\n"
	     "and size.\n"
	     "\n"
	     "Options:\n"
	     "  --store DIR       image store (default: the global --store, or /var/lib/kapsel)\n"
	     "  -q, --quiet       print image IDs only\n"
	     "  --format FORMAT   table (default) or json\n",
};
