/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kapsel/container.h>

#include "commands.h"

/* Creates dir/config.json, never replacing one: a user's edited config is worth more. */
static int write_config(const char *dir, const char *json)
{
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/config.json", dir) >= (int)sizeof(path))
		return cli_fail("spec: bundle path too long");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0 && errno == EEXIST)
		return cli_fail("File config.json exists. Remove it first");
	if (fd < 0)
		return cli_fail("spec: create %s: %s", path, strerror(errno));
	FILE *f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return cli_fail("spec: write %s: %s", path, strerror(errno));
	}
	fprintf(f, "%s\n", json);
	bool failed = ferror(f);
	if (fclose(f) != 0 || failed)
		return cli_fail("spec: write %s: %s", path, strerror(errno ? errno : EIO));
	return 0;
}

static const struct option options[] = {
    {"bundle", required_argument, NULL, 'b'},
    {"rootless", no_argument, NULL, 'r'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int spec(const struct cli_globals *g, int argc, char **argv)
{
	const char *bundle = ".";
	bool rootless = false;
	char *json = NULL;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt_cmd(&cmd_spec, argc, argv)) != -1) {
		switch (c) {
		case 'b':
			bundle = optarg;
			break;
		case 'r':
			rootless = true;
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_spec, argc - optind, 0, 0, "none"))
		return 1;
	if (kapsel_spec_default(rootless, &json, &err) < 0)
		return cli_fail_err(err);
	int r = write_config(bundle, json);
	free(json);
	return r;
}

const struct cli_command cmd_spec = {
    .name = "spec",
    .shortopts = "b:h",
    .options = options,
    .summary = "write a starter config.json",
    .run = spec,
    .usage = "Usage: kapsel spec [options]\n"
	     "\n"
	     "Write a starter config.json (as 'runc spec' does) into the bundle directory.\n"
	     "An existing config.json is never replaced.\n"
	     "\n"
	     "Options:\n"
	     "  --bundle, -b DIR        bundle directory (default: current directory)\n"
	     "  --rootless              a config for a container run by an unprivileged user\n"
	     "  --help, -h              print this help\n",
};
