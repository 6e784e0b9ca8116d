/* SPDX-License-Identifier: Apache-2.0 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <kapsel/registry.h>

#include "commands.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = 1;
}

/* --tls-verify[=BOOL] as podman spells it; returns false on a value that is not a boolean. */
static bool parse_tls_verify(const char *v, bool *insecure)
{
	if (!v || !strcmp(v, "true") || !strcmp(v, "1")) {
		*insecure = false;
		return true;
	}
	if (!strcmp(v, "false") || !strcmp(v, "0")) {
		*insecure = true;
		return true;
	}
	return false;
}

enum { OPT_STORE = 0x100, OPT_TLS_VERIFY, OPT_PLATFORM, OPT_AUTHFILE, OPT_INSECURE };

static const struct option options[] = {
    {"store", required_argument, NULL, OPT_STORE},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"tls-verify", optional_argument, NULL, OPT_TLS_VERIFY},
    {"platform", required_argument, NULL, OPT_PLATFORM},
    {"authfile", required_argument, NULL, OPT_AUTHFILE},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int pull_cmd(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_pull_options o = {.cancel = &interrupted};
	const char *store = g->store;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt_cmd(&cmd_pull, argc, argv)) != -1) {
		switch (c) {
		case OPT_STORE:
			store = optarg;
			break;
		case OPT_INSECURE:
			o.insecure = true;
			break;
		case OPT_TLS_VERIFY:
			if (!parse_tls_verify(optarg, &o.insecure))
				return cli_fail("pull: --tls-verify: expected true or false, not "
						"\"%s\"",
						optarg);
			break;
		case OPT_PLATFORM:
			o.platform = optarg;
			break;
		case OPT_AUTHFILE:
			o.auth_file = optarg;
			break;
		case 'q':
			o.quiet = true;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_pull, argc - optind, 1, 1, "image reference"))
		return cli_fail_status();

	/* No SA_RESTART: blocking calls return EINTR and the pull notices the flag at once. */
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	char digest[KAPSEL_DIGEST_SIZE];
	int r = kapsel_pull(store, argv[optind], &o, digest, &err);
	if (r < 0) {
		cli_fail_err(err);
		return interrupted ? 130 : cli_fail_status();
	}
	puts(digest);
	return 0;
}

const struct cli_command cmd_pull = {
    .name = "pull",
    .podman_status = true,
    .shortopts = "qh",
    .options = options,
    .summary = "pull an image from a registry into the image store",
    .run = pull_cmd,
    .usage = "Usage: kapsel pull [options] [REGISTRY[:PORT]/]REPOSITORY[:TAG|@DIGEST]\n"
	     "\n"
	     "Download an image (manifest, config and layers, in parallel) from an OCI\n"
	     "distribution registry, verify every blob, unpack its layers and tag it in the\n"
	     "store. Prints the digest of the image manifest. Credentials come from the\n"
	     "containers auth file (see 'kapsel login').\n"
	     "\n"
	     "Options:\n"
	     "  --store DIR             image store (default: /var/lib/kapsel)\n"
	     "  --platform OS/ARCH[/V]  which image of a multi-platform index (default: the host)\n"
	     "  --tls-verify=false      allow plain HTTP and unverified TLS (also: --insecure)\n"
	     "  --authfile FILE         credentials file (default: $REGISTRY_AUTH_FILE, podman's)\n"
	     "  --quiet, -q             no progress display\n"
	     "  --help, -h              print this help\n",
};
