/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kapsel/image.h>

#include "commands.h"
#include "format.h"

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

static const struct option options[] = {
    {"store", required_argument, NULL, 's'},
    {"quiet", no_argument, NULL, 'q'},
    {"format", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int images(const struct cli_globals *g, int argc, char **argv)
{
	const char *store = g->store;
	bool quiet = false, json = false;
	const char *format = NULL;
	struct cli_format f = {0};
	int c;
	while ((c = cli_getopt_cmd(&cmd_images, argc, argv)) != -1) {
		switch (c) {
		case 's':
			store = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'f':
			json = !strcmp(optarg, "json");
			if (!json && strcmp(optarg, "table") && !strstr(optarg, "{{"))
				return cli_fail("images: --format: \"%s\" is not table, json or a "
						"template",
						optarg);
			format = optarg;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_images, argc - optind, 0, 0, "none"))
		return cli_fail_status();
	if (!cli_format_parse("images", json ? NULL : format, &f))
		return EXIT_ENGINE;
	struct kapsel_image_info *list = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	if (kapsel_image_list(store, &list, &n, &err) < 0)
		return cli_fail_err(err);
	if (json) {
		/* podman images --format json: one object per image, its names together. */
		putchar('[');
		bool first = true;
		for (size_t i = 0; i < n; i++) {
			bool seen = false;
			for (size_t k = 0; k < i && !seen; k++)
				seen = !strcmp(list[k].id, list[i].id);
			if (seen)
				continue;
			int64_t created = 0;
			cli_parse_time(list[i].created, &created);
			printf("%s{\"Id\":", first ? "" : ",");
			first = false;
			cli_json_string(stdout, list[i].full_id);
			for (int pass = 0; pass < 2; pass++) {
				/* Names: every name; RepoTags: those with a tag. */
				printf(pass ? ",\"RepoTags\":[" : ",\"Names\":[");
				bool any = false;
				for (size_t k = i; k < n; k++) {
					if (strcmp(list[k].id, list[i].id) ||
					    (pass && !strcmp(list[k].tag, "<none>")))
						continue;
					if (any)
						putchar(',');
					any = true;
					cli_json_string(stdout, list[k].name);
				}
				putchar(']');
			}
			printf(",\"Digest\":");
			cli_json_string(stdout, list[i].digest);
			printf(",\"Created\":%lld,\"CreatedAt\":",
			       (long long)(created / 1000000000));
			cli_json_string(stdout, list[i].created);
			printf(",\"Size\":%lld}", (long long)list[i].size);
		}
		puts("]");
	} else if (f.kind == CLI_FORMAT_TEMPLATE && !quiet) {
		/* One object per name, as the table has rows; podman's template fields. */
		int status = 0;
		int64_t now = time(NULL);
		cli_format_header(&f);
		for (size_t i = 0; i < n && !status; i++) {
			char size[32], ago[48] = "";
			int64_t created = 0;
			human_size(list[i].size, size, sizeof(size));
			if (*list[i].created && cli_parse_time(list[i].created, &created))
				cli_human_ago(now - created / 1000000000, ago, sizeof(ago));
			char *obj = NULL;
			size_t len = 0;
			FILE *m = open_memstream(&obj, &len);
			if (!m) {
				status = cli_fail("images: out of memory");
				break;
			}
			const char *const fields[][2] = {
			    {"ID", list[i].id},
			    {"Id", list[i].full_id},
			    {"Repository", list[i].repository},
			    {"Tag", list[i].tag},
			    {"Name", list[i].name},
			    {"Digest", list[i].digest},
			    {"CreatedAt", list[i].created},
			    {"CreatedSince", ago},
			    {"Size", size},
			};
			for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
				fprintf(m, "%s\"%s\":", k ? "," : "{", fields[k][0]);
				cli_json_string(m, fields[k][1]);
			}
			fprintf(m, ",\"Created\":%lld,\"VirtualSize\":%lld}",
				(long long)(created / 1000000000), (long long)list[i].size);
			if (fclose(m) != 0 || !obj)
				status = cli_fail("images: out of memory");
			else if (!cli_format_print("images", &f, obj))
				status = EXIT_ENGINE;
			free(obj);
		}
		kapsel_image_info_free(list, n);
		cli_format_clear(&f);
		return status;
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
		/* Columns as wide as their widest entry: nothing is cut. CREATED in podman's
		 * words ("2 weeks ago"). */
		int64_t now = time(NULL);
		size_t w = strlen("REPOSITORY"), wt = strlen("TAG"), wc = strlen("CREATED");
		for (size_t i = 0; i < n; i++) {
			char ago[48];
			int64_t created = 0;
			cli_parse_time(list[i].created, &created);
			cli_human_ago(now - created / 1000000000, ago, sizeof(ago));
			w = strlen(list[i].repository) > w ? strlen(list[i].repository) : w;
			wt = strlen(list[i].tag) > wt ? strlen(list[i].tag) : wt;
			wc = strlen(ago) > wc ? strlen(ago) : wc;
		}
		printf("%-*s  %-*s  %-12s  %-*s  %s\n", (int)w, "REPOSITORY", (int)wt, "TAG",
		       "IMAGE ID", (int)wc, "CREATED", "SIZE");
		for (size_t i = 0; i < n; i++) {
			char size[32], ago[48] = "";
			int64_t created = 0;
			human_size(list[i].size, size, sizeof(size));
			if (*list[i].created && cli_parse_time(list[i].created, &created))
				cli_human_ago(now - created / 1000000000, ago, sizeof(ago));
			printf("%-*s  %-*s  %-12s  %-*s  %s\n", (int)w, list[i].repository, (int)wt,
			       list[i].tag, list[i].id, (int)wc, *ago ? ago : "-", size);
		}
	}
	kapsel_image_info_free(list, n);
	cli_format_clear(&f);
	return 0;
}

const struct cli_command cmd_images = {
    .podman_status = true,
    .name = "images",
    .shortopts = "s:qf:h",
    .options = options,
    .summary = "list the images in the store",
    .run = images,
    .usage = "Usage: kapsel images [--store DIR] [-q] [--format table|json|TEMPLATE]\n"
	     "\n"
	     "Lists stored images: repository, tag, image ID (config digest), creation time\n"
	     "and size. --format json prints podman's fields: Id, Names, RepoTags, Digest,\n"
	     "Created (Unix seconds), CreatedAt and Size, one object per image. A Go\n"
	     "template is rendered for each name, with podman's fields: ID, Id, Repository,\n"
	     "Tag, Name, Digest, Created, CreatedAt, CreatedSince, Size, VirtualSize.\n"
	     "\n"
	     "Options:\n"
	     "  --store DIR       image store (default: the global --store, or /var/lib/kapsel)\n"
	     "  -q, --quiet       print image IDs only\n"
	     "  --format FORMAT   table (default), json, or a template ('{{.Repository}}')\n",
};
