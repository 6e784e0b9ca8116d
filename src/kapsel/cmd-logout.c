/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include <kapsel/registry.h>

#include "commands.h"

enum { OPT_AUTHFILE = 0x100 };

static const struct option options[] = {
    {"authfile", required_argument, NULL, OPT_AUTHFILE},
    {"all", no_argument, NULL, 'a'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int logout_cmd(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_login_options o = {0};
	bool all = false;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt_cmd(&cmd_logout, argc, argv)) != -1) {
		switch (c) {
		case OPT_AUTHFILE:
			o.auth_file = optarg;
			break;
		case 'a':
			all = true;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_logout, argc - optind, all ? 0 : 1, all ? 0 : 1,
		       all ? "none with --all" : "registry"))
		return cli_fail_status();
	if (kapsel_logout(all ? NULL : argv[optind], &o, all, &err) < 0)
		return cli_fail_err(err);
	if (all)
		puts("Removed login credentials for all registries");
	else
		printf("Removed login credentials for %s\n", argv[optind]);
	return 0;
}

const struct cli_command cmd_logout = {
    .podman_status = true,
    .name = "logout",
    .shortopts = "ah",
    .options = options,
    .summary = "log out of a registry (remove its credentials)",
    .run = logout_cmd,
    .usage = "Usage: kapsel logout [options] REGISTRY\n"
	     "\n"
	     "Remove REGISTRY's credentials from the containers auth file.\n"
	     "\n"
	     "Options:\n"
	     "  --authfile FILE         credentials file to edit\n"
	     "  --all, -a               remove the credentials of every registry\n"
	     "  --help, -h              print this help\n",
};
