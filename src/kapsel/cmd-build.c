/* SPDX-License-Identifier: Apache-2.0 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/build.h>

#include "commands.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

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

enum { OPT_LAYERS = 0x100, OPT_SQUASH, OPT_PLATFORM, OPT_FORMAT, OPT_COMPRESSION, OPT_TIMESTAMP };

static const struct option options[] = {
    {"layers", optional_argument, NULL, OPT_LAYERS},
    {"squash", no_argument, NULL, OPT_SQUASH},
    {"platform", required_argument, NULL, OPT_PLATFORM},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"compression", required_argument, NULL, OPT_COMPRESSION},
    {"timestamp", required_argument, NULL, OPT_TIMESTAMP},
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
	struct kapsel_build_options o = {
	    .store = g->store, .root = g->root, .cancel = &interrupted};
	long long ts;
	char **tags = NULL, **args = NULL, **labels = NULL;
	size_t nt = 0, na = 0, nl = 0;
	int c, ret = cli_fail_status();
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
		case OPT_LAYERS:
			if (optarg && strcmp(optarg, "true") && strcmp(optarg, "false")) {
				cli_fail("build: --layers=%s: expected true or false", optarg);
				goto out;
			}
			o.single_layer = optarg && !strcmp(optarg, "false");
			break;
		case OPT_SQUASH:
			o.squash = true;
			break;
		case OPT_PLATFORM:
			o.platform = optarg;
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "oci") && strcmp(optarg, "docker")) {
				cli_fail("build: --format %s: expected oci or docker", optarg);
				goto out;
			}
			o.format = optarg;
			break;
		case OPT_COMPRESSION:
			if (strcmp(optarg, "gzip") && strcmp(optarg, "zstd")) {
				cli_fail("build: --compression %s: expected gzip or zstd", optarg);
				goto out;
			}
			o.compression = optarg;
			break;
		case OPT_TIMESTAMP:
			if (!cli_parse_int(&cmd_build, "--timestamp", optarg, 0, 253402300799LL,
					   &ts))
				goto out;
			o.has_timestamp = true;
			o.timestamp = ts;
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
	/* A RUN's container is killed and everything removed: see kapsel_build_options. The
	 * flag is checked between steps, so other system calls just restart. */
	struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
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
    .podman_status = true,
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
	     "  --layers=true|false   false: the final stage's changes as one layer (no cache)\n"
	     "  --squash              the image as one layer, its base included\n"
	     "  --platform linux/amd64  the only platform (no emulation for others)\n"
	     "  --format oci|docker   the manifest's media types (default oci)\n"
	     "  --compression gzip|zstd  layer compression (default gzip)\n"
	     "  --timestamp SECONDS   created times and later file mtimes set to it (as\n"
	     "                        SOURCE_DATE_EPOCH): reproducible digests\n"
	     "  -q, --quiet           print only the image ID\n"
	     "  --store DIR           image store\n",
};
