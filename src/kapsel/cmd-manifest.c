/* SPDX-License-Identifier: Apache-2.0 */
/* `kapsel manifest create|add|remove|inspect|rm|push`: manifest lists (image indexes), as
 * podman's. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/image.h>
#include <kapsel/registry.h>

#include "commands.h"

enum {
	OPT_OS = 0x100,
	OPT_ARCH,
	OPT_VARIANT,
	OPT_ALL,
	OPT_FORMAT,
	OPT_INSECURE,
	OPT_TLS_VERIFY,
	OPT_CREDS,
	OPT_AUTHFILE,
};

/* The subcommands, defined with their table at the end. */
static const struct cli_command cmd_manifest_create, cmd_manifest_add, cmd_manifest_remove,
    cmd_manifest_inspect, cmd_manifest_rm, cmd_manifest_push;

/* podman's BOOL flags: absent value is true. */
static bool parse_bool(const char *flag, const char *v, bool *out)
{
	if (!v || !strcmp(v, "true") || !strcmp(v, "1")) {
		*out = true;
		return true;
	}
	if (!strcmp(v, "false") || !strcmp(v, "0")) {
		*out = false;
		return true;
	}
	cli_fail("manifest: %s=%s: expected true or false", flag, v);
	return false;
}

static const struct option create_options[] = {
    {"all", no_argument, NULL, OPT_ALL},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int create(const struct cli_globals *g, int argc, char **argv)
{
	bool all = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_manifest_create, argc, argv)) != -1) {
		if (c != OPT_ALL)
			return cli_opt_status(c);
		all = true;
	}
	if (!cli_nargs(&cmd_manifest_create, argc - optind, 1, -1, "LIST [IMAGE...]"))
		return cli_fail_status();
	char digest[KAPSEL_DIGEST_SIZE];
	struct kapsel_error *err = NULL;
	if (kapsel_manifest_create(g->store, argv[optind], argv + optind + 1,
				   (size_t)(argc - optind - 1), all, digest, &err) < 0)
		return cli_fail_err(err);
	printf("%s\n", digest + 7);
	return 0;
}

static const struct option add_options[] = {
    {"all", no_argument, NULL, OPT_ALL},
    {"os", required_argument, NULL, OPT_OS},
    {"arch", required_argument, NULL, OPT_ARCH},
    {"variant", required_argument, NULL, OPT_VARIANT},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* A platform word: what the index's platform fields hold ([a-z0-9._-]). */
static bool platform_word(const char *flag, const char *v)
{
	if (*v && strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789._-") == strlen(v))
		return true;
	cli_fail("manifest add: %s \"%s\": expected a word like linux, amd64 or v8", flag, v);
	return false;
}

static int add(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_manifest_add_options o = {0};
	int c;
	while ((c = cli_getopt_cmd(&cmd_manifest_add, argc, argv)) != -1) {
		switch (c) {
		case OPT_ALL:
			o.all = true;
			break;
		case OPT_OS:
			if (!platform_word("--os", optarg))
				return cli_fail_status();
			o.os = optarg;
			break;
		case OPT_ARCH:
			if (!platform_word("--arch", optarg))
				return cli_fail_status();
			o.arch = optarg;
			break;
		case OPT_VARIANT:
			if (!platform_word("--variant", optarg))
				return cli_fail_status();
			o.variant = optarg;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_manifest_add, argc - optind, 2, 2, "LIST IMAGE"))
		return cli_fail_status();
	char digest[KAPSEL_DIGEST_SIZE];
	struct kapsel_error *err = NULL;
	if (kapsel_manifest_add(g->store, argv[optind], argv[optind + 1], &o, digest, &err) < 0)
		return cli_fail_err(err);
	printf("%s\n", digest + 7);
	return 0;
}

static int remove_entry(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_manifest_remove, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_manifest_remove, argc - optind, 2, 2, "LIST DIGEST"))
		return cli_fail_status();
	char digest[KAPSEL_DIGEST_SIZE];
	struct kapsel_error *err = NULL;
	if (kapsel_manifest_remove(g->store, argv[optind], argv[optind + 1], digest, &err) < 0)
		return cli_fail_err(err);
	printf("%s\n", digest + 7);
	return 0;
}

static int inspect(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_manifest_inspect, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_manifest_inspect, argc - optind, 1, 1, "LIST"))
		return cli_fail_status();
	char *json = NULL;
	struct kapsel_error *err = NULL;
	if (kapsel_manifest_inspect(g->store, argv[optind], &json, &err) < 0)
		return cli_fail_err(err);
	puts(json);
	free(json);
	return 0;
}

static int rm(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_manifest_rm, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_manifest_rm, argc - optind, 1, -1, "LIST..."))
		return cli_fail_status();
	int status = 0;
	for (int i = optind; i < argc; i++) {
		struct kapsel_error *err = NULL;
		if (kapsel_manifest_delete(g->store, argv[i], &err) < 0)
			status = cli_fail_err(err);
		else
			puts(argv[i]);
	}
	return status;
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static const struct option push_options[] = {
    {"all", optional_argument, NULL, OPT_ALL},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"tls-verify", optional_argument, NULL, OPT_TLS_VERIFY},
    {"creds", required_argument, NULL, OPT_CREDS},
    {"authfile", required_argument, NULL, OPT_AUTHFILE},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int push(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_push_options o = {.cancel = &interrupted, .manifest_list = true};
	bool all = true, verify;
	int c;
	while ((c = cli_getopt_cmd(&cmd_manifest_push, argc, argv)) != -1) {
		switch (c) {
		case OPT_ALL:
			if (!parse_bool("--all", optarg, &all))
				return cli_fail_status();
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "oci") && strcmp(optarg, "docker"))
				return cli_fail(
				    "manifest push: --format %s: expected oci or docker", optarg);
			o.format = optarg;
			break;
		case OPT_INSECURE:
			o.insecure = true;
			break;
		case OPT_TLS_VERIFY:
			if (!parse_bool("--tls-verify", optarg, &verify))
				return cli_fail_status();
			o.insecure = !verify;
			break;
		case OPT_CREDS:
			o.creds = optarg;
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
	if (!cli_nargs(&cmd_manifest_push, argc - optind, 1, 2, "LIST [DEST]"))
		return cli_fail_status();
	o.index_only = !all;
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	char digest[KAPSEL_DIGEST_SIZE];
	struct kapsel_error *err = NULL;
	if (kapsel_push(g->store, argv[optind], argc - optind > 1 ? argv[optind + 1] : NULL, &o,
			digest, &err) < 0)
		return cli_fail_err(err);
	printf("%s\n", digest);
	return 0;
}

static int manifest(const struct cli_globals *g, int argc, char **argv)
{
	return cli_dispatch(&cmd_manifest, g, argc, argv);
}

static const char manifest_usage[] =
    "Usage: kapsel manifest create [--all] LIST [IMAGE...]\n"
    "       kapsel manifest add [--all] [--os OS] [--arch ARCH] [--variant V] LIST IMAGE\n"
    "       kapsel manifest remove LIST DIGEST\n"
    "       kapsel manifest inspect LIST\n"
    "       kapsel manifest rm LIST...\n"
    "       kapsel manifest push [options] LIST [DEST]\n"
    "\n"
    "A manifest list is an OCI image index in the store: one image per platform, under a\n"
    "name of its own (a bare name gets localhost/). create and add print the list's new\n"
    "ID, push the pushed index's digest. Images come from the store ('kapsel pull\n"
    "--platform linux/arm64 ...' fetches one for another platform); the entry's platform\n"
    "is the image config's unless given. Adding a manifest the list has replaces its\n"
    "entry; a second manifest for a platform the list has is refused (remove the first).\n"
    "push sends every image the list names (blobs the registry has are skipped), each\n"
    "manifest, then the index last; 'kapsel push LIST' does the same. 'kapsel images'\n"
    "shows lists, 'kapsel rmi' and 'manifest rm' remove them (not their images).\n"
    "\n"
    "Options:\n"
    "  --all                 (create, add) IMAGE is an index (a list, or a multi-platform\n"
    "                        image kapsel pulled): add every entry it lists, not only the\n"
    "                        one for --os/--arch (default linux/amd64);\n"
    "                        (push) --all=BOOL: push the images too (default true)\n"
    "  --os OS               (add) the entry's os\n"
    "  --arch ARCH           (add) the entry's architecture\n"
    "  --variant V           (add) the entry's variant (v7, v8)\n"
    "  --format oci|docker   (push) an OCI index with OCI manifests, or a Docker manifest\n"
    "                        list with Docker manifests (default: as stored, OCI)\n"
    "  --insecure            (push) allow plain HTTP and unverified TLS\n"
    "  --tls-verify=BOOL     (push) podman's spelling: false is --insecure\n"
    "  --creds USER:PASSWORD (push) credentials (default: those `kapsel login` stored)\n"
    "  --authfile FILE       (push) the auth file to read them from\n"
    "  -q, --quiet           (push) no per-blob lines\n"
    "  --help, -h            print this help\n";

/* Each subcommand's --help prints the whole usage: it fits on one screen. */
static const struct cli_command cmd_manifest_create = {
    .name = "manifest create",
    .operands = CLI_OPERAND_IMAGE,
    .summary = "create a manifest list",
    .run = create,
    .usage = manifest_usage,
    .shortopts = "h",
    .options = create_options,
};
static const struct cli_command cmd_manifest_add = {
    .name = "manifest add",
    .operands = CLI_OPERAND_IMAGE,
    .summary = "add an image to a manifest list",
    .run = add,
    .usage = manifest_usage,
    .shortopts = "h",
    .options = add_options,
};
static const struct cli_command cmd_manifest_remove = {
    .name = "manifest remove",
    .operands = CLI_OPERAND_IMAGE,
    .summary = "remove an image from a manifest list",
    .run = remove_entry,
    .usage = manifest_usage,
    .shortopts = "h",
    .options = cli_help_options,
};
static const struct cli_command cmd_manifest_inspect = {
    .name = "manifest inspect",
    .operands = CLI_OPERAND_IMAGE,
    .summary = "print a manifest list's index",
    .run = inspect,
    .usage = manifest_usage,
    .shortopts = "h",
    .options = cli_help_options,
};
static const struct cli_command cmd_manifest_rm = {
    .name = "manifest rm",
    .operands = CLI_OPERAND_IMAGE,
    .summary = "remove manifest lists",
    .run = rm,
    .usage = manifest_usage,
    .shortopts = "h",
    .options = cli_help_options,
};
static const struct cli_command cmd_manifest_push = {
    .name = "manifest push",
    .operands = CLI_OPERAND_IMAGE,
    .summary = "push a manifest list and its images",
    .run = push,
    .usage = manifest_usage,
    .shortopts = "qh",
    .options = push_options,
};

const struct cli_command cmd_manifest = {
    .podman_status = true,
    .name = "manifest",
    .summary = "manage manifest lists (create, add, remove, inspect, rm, push)",
    .run = manifest,
    .usage = manifest_usage,
    .subcommands =
	(const struct cli_subcommand[]){
	    {"create", &cmd_manifest_create},
	    {"add", &cmd_manifest_add},
	    {"remove", &cmd_manifest_remove},
	    {"inspect", &cmd_manifest_inspect},
	    {"rm", &cmd_manifest_rm},
	    {"push", &cmd_manifest_push},
	    {0},
	},
};
