/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `start` is runc's (a created container: its process runs) and podman's (an image container
 * that has exited runs again). What the name refers to decides: a runtime container that
 * exists, and no running image container of that name, means runc's start, exactly as before.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/log.h>
#include <kapsel/run.h>

#include "commands.h"

/*
 * The container's init is cloned from this process: like run, re-execute through a sealed
 * view of the binary first (CVE-2019-5736, core/sealed.c); argv as given is in /proc.
 */
static int seal(const struct cli_globals *g)
{
	static char buf[65536];
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0 || n == (ssize_t)sizeof(buf) - 1)
		return cli_fail("start: read /proc/self/cmdline");
	size_t argc = 0;
	for (ssize_t i = 0; i < n; i++)
		argc += buf[i] == '\0';
	char **argv = calloc(argc + 1, sizeof(char *));
	if (!argv)
		return cli_fail("start: out of memory");
	for (size_t i = 0, off = 0; i < argc; i++, off += strlen(buf + off) + 1)
		argv[i] = buf + off;
	struct kapsel_error *err = NULL;
	int r = kapsel_runtime_seal(argv, g->root, &err);
	free(argv);
	return r < 0 ? cli_fail_err(err) : 0;
}

static int start(const struct cli_globals *g, int argc, char **argv)
{
	const char *id;
	struct kapsel_error *err = NULL;
	int r = cli_parse_id_only(&cmd_start, argc, argv, &id);
	if (r >= 0)
		return r;
	char *status = NULL;
	int image = kapsel_image_container_status(g->store, id, &status, &err);
	kapsel_error_free(err);
	err = NULL;
	bool live = image > 0 && (!strcmp(status, "running") || !strcmp(status, "paused"));
	bool exited = image > 0 && !strcmp(status, "exited");
	free(status);
	char *json = NULL;
	bool runtime = !live && kapsel_container_state(g->root, id, &json, &err) == 0;
	free(json);
	kapsel_error_free(err);
	err = NULL;
	if (live || (exited && !runtime)) {
		if (!live && seal(g))
			return EXIT_ENGINE;
		if (kapsel_image_start(g->store, g->root, id, &err) < 0) {
			cli_fail_err(err);
			return EXIT_ENGINE;
		}
		puts(id);
		return 0;
	}
	if (kapsel_container_start(g->root, id, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_start = {
    .name = "start",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = cli_help_options,
    .summary = "start a created container, or an image container again",
    .run = start,
    .usage = "Usage: kapsel start <container-id>\n"
	     "       kapsel start NAME\n"
	     "\n"
	     "Run the user process of a created container (runc's start). For an image\n"
	     "container that has exited (kapsel ps -a), start it again detached with the same\n"
	     "configuration, files and network address, as podman start; one that runs is\n"
	     "left as it is. The name decides: a runtime container of that id, and no image\n"
	     "container running under it, means the first form.\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
};
