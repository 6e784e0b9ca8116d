/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include <kapsel/info.h>

#include "commands.h"
#include "format.h"

/* The default output: podman info's YAML-like layout, rendered from the JSON. */
static const char text_template[] = "host:\n"
				    "  arch: {{.host.arch}}\n"
				    "  os: {{.host.os}}\n"
				    "  kernel: {{.host.kernel}}\n"
				    "  hostname: {{.host.hostname}}\n"
				    "  distribution:\n"
				    "    distribution: {{.host.distribution.distribution}}\n"
				    "    version: {{.host.distribution.version}}\n"
				    "  cpus: {{.host.cpus}}\n"
				    "  memTotal: {{.host.memTotal}}\n"
				    "  memFree: {{.host.memFree}}\n"
				    "  cgroupVersion: {{.host.cgroupVersion}}\n"
				    "  cgroupManager: {{.host.cgroupManager}}\n"
				    "  security:\n"
				    "    rootless: {{.host.security.rootless}}\n"
				    "    seccompEnabled: {{.host.security.seccompEnabled}}\n"
				    "    apparmorEnabled: {{.host.security.apparmorEnabled}}\n"
				    "  kvm:\n"
				    "    available: {{.host.kvm.available}}\n"
				    "store:\n"
				    "  graphRoot: {{.store.graphRoot}}\n"
				    "  graphDriverName: {{.store.graphDriverName}}\n"
				    "  runRoot: {{.store.runRoot}}\n"
				    "  imageStore:\n"
				    "    number: {{.store.imageStore.number}}\n"
				    "  containerStore:\n"
				    "    number: {{.store.containerStore.number}}\n"
				    "    running: {{.store.containerStore.running}}\n"
				    "    paused: {{.store.containerStore.paused}}\n"
				    "    stopped: {{.store.containerStore.stopped}}\n"
				    "version:\n"
				    "  version: {{.version.version}}\n"
				    "  ociVersion: {{.version.ociVersion}}\n";

static const struct option options[] = {
    {"format", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int info(const struct cli_globals *g, int argc, char **argv)
{
	const char *format = NULL;
	int c;
	while ((c = cli_getopt_cmd(&cmd_info, argc, argv)) != -1) {
		if (c != 'f')
			return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
		format = optarg;
	}
	if (!cli_nargs(&cmd_info, argc - optind, 0, 0, "none"))
		return EXIT_ENGINE;
	struct cli_format f;
	if (!cli_format_parse("info", format ? format : text_template, &f))
		return EXIT_ENGINE;
	char *json = NULL;
	struct kapsel_error *err = NULL;
	int status = 0;
	if (kapsel_system_info(g->store, g->root, &json, &err) < 0) {
		cli_fail_err(err);
		status = EXIT_ENGINE;
	} else if (f.kind == CLI_FORMAT_TEMPLATE) {
		status = cli_format_print("info", &f, json) ? 0 : EXIT_ENGINE;
	} else {
		puts(json);
	}
	free(json);
	cli_format_clear(&f);
	return status;
}

const struct cli_command cmd_info = {
    .podman_status = true,
    .name = "info",
    .shortopts = "f:h",
    .options = options,
    .summary = "show the host, the store and kapsel's view of them",
    .run = info,
    .usage = "Usage: kapsel info [--format json|TEMPLATE]\n"
	     "\n"
	     "Shows, as podman info does: the host (arch, os, kernel, cpus, memory, cgroup\n"
	     "version v1, hybrid or v2, the cgroup manager, rootless, seccomp and AppArmor,\n"
	     "whether KVM is available), the image store (path, images, containers) and the\n"
	     "runtime root. --format json prints podman's JSON names; a template renders\n"
	     "them ('{{.Host.Kernel}}' and '{{.host.kernel}}' both work).\n"
	     "\n"
	     "Options:\n"
	     "  --format, -f FORMAT   json, or a Go template\n"
	     "  --help, -h            print this help\n",
};
