/* SPDX-License-Identifier: Apache-2.0 */
/*
 * --format as podman's commands take it: "table" (the command's own table), "json", or a Go
 * template rendered for each object ({{.Names}}, {{json .Config}}); kapsel/format.h does
 * the rendering. Shared by inspect, ps, images, network ls, version and info.
 */
#pragma once
#include <stdbool.h>

struct kapsel_template;

enum cli_format_kind { CLI_FORMAT_TABLE, CLI_FORMAT_JSON, CLI_FORMAT_TEMPLATE };

struct cli_format {
	enum cli_format_kind kind;
	struct kapsel_template *t;
	char *header; /* "table {{.Names}}\t{{.Status}}": "NAMES\tSTATUS\n"; else NULL */
};

/*
 * Parses --format's value (NULL: table). As podman does, "\t" in a template is a tab and a
 * template gets a newline at its end unless it has one; "table " before a template asks
 * for a header line (cli_format_header). Reports a bad template ("ps: --format: template: 1:3:
 * ...") and returns false.
 */
bool cli_format_parse(const char *cmd, const char *value, struct cli_format *f);
/* Renders the object json with f's template to stdout; reports and returns false on error. */
bool cli_format_print(const char *cmd, const struct cli_format *f, const char *json);
void cli_format_clear(struct cli_format *f);
/* For "table TEMPLATE": prints the header, each plain {{.A.B}} as "B" in capitals. */
void cli_format_header(const struct cli_format *f);

struct cli_globals;
struct cli_command;
/*
 * inspect NAME... of type "container", "image" or NULL (a container, else an image), with
 * format (NULL: JSON array). Returns 0, or missing_status after reporting a name that is not
 * there (podman: 125), or 125 for other errors.
 */
int cli_inspect(const struct cli_globals *g, const struct cli_command *cmd, const char *store,
		const char *type, const char *format, char **names, int n, int missing_status);
