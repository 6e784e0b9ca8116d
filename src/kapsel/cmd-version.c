/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kapsel/container.h>

#include "commands.h"
#include "format.h"
#include "version.h"

#if defined(__x86_64__)
#define GOARCH "amd64"
#elif defined(__aarch64__)
#define GOARCH "arm64"
#else
#define GOARCH "unknown"
#endif

/*
 * When this file was compiled: it includes version.h, which changes with the commit, so a
 * build of a new commit compiles it again (SOURCE_DATE_EPOCH pins it for reproducible builds).
 */
static time_t built(void)
{
	struct tm tm = {0};
	if (!strptime(__DATE__ " " __TIME__, "%b %d %Y %H:%M:%S", &tm))
		return 0;
	tm.tm_isdst = -1;
	return mktime(&tm);
}

static const struct option options[] = {
    {"format", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int version(const struct cli_globals *g, int argc, char **argv)
{
	(void)g;
	const char *format = NULL;
	int c;
	while ((c = cli_getopt_cmd(&cmd_version, argc, argv)) != -1) {
		if (c != 'f')
			return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
		format = optarg;
	}
	if (!cli_nargs(&cmd_version, argc - optind, 0, 0, "none"))
		return EXIT_ENGINE;
	struct cli_format f;
	if (!cli_format_parse("version", format, &f))
		return EXIT_ENGINE;
	time_t t = built();
	char when[64] = "";
	struct tm tm;
	if (t && localtime_r(&t, &tm))
		strftime(when, sizeof(when), "%a %b %e %H:%M:%S %Y", &tm);
	/* podman version's names, without the Go ones it has and kapsel has not. */
	char *json = NULL;
	FILE *m = open_memstream(&json, &(size_t){0});
	if (!m)
		return cli_fail("version: out of memory"), EXIT_ENGINE;
	fprintf(m, "{\"Client\":{\"Version\":");
	cli_json_string(m, KAPSEL_VERSION);
	fprintf(m, ",\"OciVersion\":");
	cli_json_string(m, KAPSEL_OCI_VERSION);
	fprintf(m, ",\"GitCommit\":");
	cli_json_string(m, KAPSEL_GIT_COMMIT);
	fprintf(m, ",\"Built\":%lld,\"BuiltTime\":", (long long)t);
	cli_json_string(m, when);
	fprintf(m, ",\"OsArch\":\"linux/" GOARCH "\",\"Os\":\"linux\"}}");
	fclose(m);
	int status = 0;
	if (f.kind == CLI_FORMAT_JSON)
		puts(json);
	else if (f.kind == CLI_FORMAT_TEMPLATE)
		status = cli_format_print("version", &f, json) ? 0 : EXIT_ENGINE;
	else
		printf("Client:       kapsel\n"
		       "Version:      %s\n"
		       "OCI Version:  %s\n"
		       "Git Commit:   %s\n"
		       "Built:        %s\n"
		       "OS/Arch:      linux/%s\n",
		       KAPSEL_VERSION, KAPSEL_OCI_VERSION,
		       *KAPSEL_GIT_COMMIT ? KAPSEL_GIT_COMMIT : "unknown", *when ? when : "unknown",
		       GOARCH);
	free(json);
	cli_format_clear(&f);
	return status;
}

const struct cli_command cmd_version = {
    .podman_status = true,
    .name = "version",
    .shortopts = "f:h",
    .options = options,
    .summary = "show kapsel's version, commit, build time and platform",
    .run = version,
    .usage = "Usage: kapsel version [--format json|TEMPLATE]\n"
	     "\n"
	     "Prints the version, the OCI runtime-spec version, the git commit it was built\n"
	     "from (when the build knew it), when it was built, and OS/Arch. --format json\n"
	     "prints {\"Client\": {...}} with podman's names; a template renders it\n"
	     "('{{.Client.Version}}').\n"
	     "\n"
	     "Options:\n"
	     "  --format, -f FORMAT   json, or a Go template\n"
	     "  --help, -h            print this help\n",
};
