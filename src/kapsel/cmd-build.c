/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/build.h>

#include "commands.h"

/* Repeatable flags collect into a NULL-terminated list. */
static bool push(char ***v, size_t *n, char *s)
{
	char **nv = realloc(*v, (*n + 2) * sizeof(*nv));
	if (!nv)
		return false;
	nv[(*n)++] = s;
	nv[*n] = NULL;
	*v = nv;
	return true;
}

static const struct option options[] = {
    {"tag", required_argument, NULL, 't'},
    {"file", required_argument, NULL, 'f'},
    {"build-arg", required_argument, NULL, 'a'},
    {"target", required_argument, NULL, 'T'},
    {"label", required_argument, NULL, 'l'},
    {"network", required_argument, NULL, 'n'},
    {"quiet", no_argument, NULL, 'q'},
    {"no-cache", no_argument, NULL, 'C'},
    {"store", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int build(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_build_options o = {.store = g->store, .root = g->root};
	char **tags = NULL, **args = NULL, **labels = NULL;
	size_t nt = 0, na = 0, nl = 0;
	int c, ret = 1;
	while ((c = cli_getopt_cmd(&cmd_build, argc, argv)) != -1) {
		bool ok = true;
		switch (c) {
		case 't':
			ok = push(&tags, &nt, optarg);
			break;
		case 'f':
			o.file = optarg;
			break;
		case 'a':
			ok = push(&args, &na, optarg);
			break;
		case 'T':
			o.target = optarg;
			break;
		case 'l':
			ok = push(&labels, &nl, optarg);
			break;
		case 'n':
			if (strcmp(optarg, "none") && strcmp(optarg, "host")) {
				cli_fail("build: --network %s: expected none or host", optarg);
				goto out;
			}
			o.network = optarg;
			break;
		case 'q':
			o.quiet = true;
			break;
		case 'C':
			o.no_cache = true;
			break;
		case 's':
			o.store = optarg;
			break;
		default:
			ret = cli_opt_status(c);
			goto out;
		}
		if (!ok) {
			cli_fail("build: out of memory");
			goto out;
		}
	}
	if (!cli_nargs(&cmd_build, argc - optind, 1, 1, "CONTEXT"))
		goto out;
	o.context = argv[optind];
	o.tags = tags;
	o.build_args = args;
	o.labels = labels;
	struct kapsel_error *err = NULL;
	char *id = NULL;
	if (kapsel_image_build(&o, &id, &err) < 0) {
		ret = cli_fail_err(err);
		goto out;
	}
	printf("%s\n", id);
	free(id);
	ret = 0;
out:
	free(tags);
	free(args);
	free(labels);
	return ret;
}

const struct cli_command cmd_build = {
    .name = "build",
    .shortopts = "t:f:qs:h",
    .options = options,
    .summary = "build an image from a Containerfile",
    .run = build,
    .usage = "Usage: kapsel build [options] CONTEXT\n"
	     "\n"
	     "Builds an image from CONTEXT/Containerfile (or Dockerfile) into the store. RUN\n"
	     "steps run in kapsel's own runtime, without network unless --network host. Prints\n"
	     "the image ID.\n"
	     "\n"
	     "Options:\n"
	     "  -t, --tag NAME[:TAG]  name the image (repeatable; bare names get localhost/)\n"
	     "  -f, --file FILE       the Containerfile\n"
	     "  --build-arg K=V       set an ARG (K alone: from the environment; repeatable)\n"
	     "  --target STAGE        build up to this stage and name it\n"
	     "  --label K=V           add a label to the image (repeatable)\n"
	     "  --network none|host   RUN's network (default none)\n"
	     "  --no-cache            run every step (the cache is still filled)\n"
	     "  -q, --quiet           print only the image ID\n"
	     "  --store DIR           image store\n",
};
