/* SPDX-License-Identifier: Apache-2.0 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <kapsel/registry.h>

#include "commands.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

enum { OPT_TLS_VERIFY = 0x100, OPT_AUTHFILE, OPT_CHUNK, OPT_FORMAT };

static const struct option options[] = {
    {"insecure", no_argument, NULL, 'k'},
    {"tls-verify", required_argument, NULL, OPT_TLS_VERIFY},
    {"creds", required_argument, NULL, 'c'},
    {"authfile", required_argument, NULL, OPT_AUTHFILE},
    {"chunk-size", required_argument, NULL, OPT_CHUNK},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"quiet", no_argument, NULL, 'q'},
    {"store", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int push(const struct cli_globals *g, int argc, char **argv)
{
	const char *store = g->store;
	struct kapsel_push_options o = {.cancel = &interrupted};
	long long chunk;
	int c;
	while ((c = cli_getopt_cmd(&cmd_push, argc, argv)) != -1) {
		switch (c) {
		case 'k':
			o.insecure = true;
			break;
		case OPT_TLS_VERIFY:
			if (strcmp(optarg, "true") && strcmp(optarg, "false"))
				return cli_fail("push: --tls-verify: expected true or false, not "
						"\"%s\"",
						optarg);
			o.insecure = !strcmp(optarg, "false");
			break;
		case 'c':
			o.creds = optarg;
			break;
		case OPT_AUTHFILE:
			o.auth_file = optarg;
			break;
		case OPT_CHUNK:
			if (!cli_parse_int(&cmd_push, "--chunk-size", optarg, 1, 1LL << 40, &chunk))
				return cli_fail_status();
			o.chunk_size = chunk;
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "oci") && strcmp(optarg, "docker"))
				return cli_fail("push: --format %s: expected oci or docker",
						optarg);
			o.format = optarg;
			break;
		case 'q':
			o.quiet = true;
			break;
		case 's':
			store = optarg;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_push, argc - optind, 1, 2, "IMAGE [DEST]"))
		return cli_fail_status();
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	char digest[KAPSEL_DIGEST_SIZE];
	struct kapsel_error *err = NULL;
	if (kapsel_push(store, argv[optind], argc - optind > 1 ? argv[optind + 1] : NULL, &o,
			digest, &err) < 0)
		return cli_fail_err(err);
	printf("%s\n", digest);
	return 0;
}

const struct cli_command cmd_push = {
    .podman_status = true,
    .name = "push",
    .operands = CLI_OPERAND_IMAGE,
    .shortopts = "qs:h",
    .options = options,
    .summary = "push an image to a registry",
    .run = push,
    .usage = "Usage: kapsel push [options] IMAGE [DEST]\n"
	     "\n"
	     "Pushes a stored image to an OCI distribution registry as DEST\n"
	     "([docker://]registry/repository[:tag]; default: the image's own name). Blobs the\n"
	     "registry has are skipped (a re-run resumes an interrupted push), the others are\n"
	     "mounted from another repository of the registry they are known to be in, or\n"
	     "uploaded in parallel, then the manifest. Prints the pushed manifest's digest.\n"
	     "\n"
	     "Options:\n"
	     "  --creds USER:PASSWORD   credentials (default: those `kapsel login` stored)\n"
	     "  --authfile FILE         the auth file to read them from\n"
	     "  --insecure              allow plain HTTP and unverified TLS\n"
	     "  --tls-verify=BOOL       podman's spelling: false is --insecure\n"
	     "  --chunk-size BYTES      upload in chunks of this size (default: monolithic up to\n"
	     "                          64 MiB, then 32 MiB chunks)\n"
	     "  --format oci|docker     convert the manifest's media types (default: as stored)\n"
	     "  -q, --quiet             no per-blob lines\n"
	     "  --store DIR             image store\n",
};
