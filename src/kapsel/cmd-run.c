/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/container.h>

#include "commands.h"

static int run(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_create_options o = {0};
	struct kapsel_error *err = NULL;
	int r = cli_parse_create(&cmd_run, g, argc, argv, &o);
	if (r >= 0)
		return r;
	/* Without --detach the container's exit status is ours, like a shell's. */
	r = kapsel_container_run(&o, &err);
	if (r < 0)
		return cli_fail_err(err);
	return r;
}

const struct cli_command cmd_run = {
    .name = "run",
    .summary = "create and start a container",
    .run = run,
    .usage =
	"Usage: kapsel run [options] <container-id>\n"
	"\n"
	"Create and start the container from the bundle's config.json. Without --detach,\n"
	"wait for it, delete it, and exit with its status.\n"
	"\n"
	"Options:\n"
	"  --bundle, -b DIR        bundle directory (default: current directory)\n"
	"  --detach, -d            return once the container has started\n"
	"  --pid-file FILE         write the container process's pid to FILE\n"
	"  --console-socket PATH   send the pseudo-terminal's master fd to this socket\n"
	"  --no-pivot              do not use pivot_root (for a ramdisk root)\n"
	"  --no-new-keyring        keep the caller's session keyring\n"
	"  --preserve-fds N        pass N more file descriptors (3 .. 3+N-1)\n"
	"  --keep                  accepted for compatibility; the container is still deleted\n"
	"  --no-subreaper          accepted for compatibility; ignored\n"
	"  --help, -h              print this help\n",
};
