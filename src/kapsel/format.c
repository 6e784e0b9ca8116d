/* SPDX-License-Identifier: Apache-2.0 */
/* --format for the commands that print objects (format.h), and inspect, which they share. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/format.h>
#include <kapsel/image.h>
#include <kapsel/run.h>

#include "commands.h"
#include "format.h"

/*
 * The header of "table TEMPLATE", as podman derives it from the field names: the text
 * between actions kept ("\t" a tab), a plain field chain {{.State.Pid}} as "PID", any other
 * action as nothing.
 */
static char *header_of(const char *tmpl)
{
	size_t n = strlen(tmpl);
	char *h = malloc(n + 2), *o = h;
	if (!h)
		return NULL;
	for (const char *p = tmpl; *p;) {
		if (p[0] == '\\' && p[1] == 't') {
			*o++ = '\t';
			p += 2;
			continue;
		}
		if (p[0] != '{' || p[1] != '{') {
			*o++ = *p++;
			continue;
		}
		const char *end = strstr(p, "}}");
		if (!end)
			break;
		const char *a = p + 2, *b = end;
		while (a < b && (*a == ' ' || *a == '-'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '-'))
			b--;
		bool plain = a < b && *a == '.' && b - a > 1;
		for (const char *q = a; plain && q < b; q++)
			plain = *q == '.' || *q == '_' || (*q >= '0' && *q <= '9') ||
				((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z');
		if (plain) {
			const char *last = b;
			while (last > a && last[-1] != '.')
				last--;
			for (; last < b; last++)
				*o++ = (char)(*last >= 'a' && *last <= 'z' ? *last - 32 : *last);
		}
		p = end + 2;
	}
	while (o > h && o[-1] == '\n')
		o--;
	*o++ = '\n';
	*o = '\0';
	return h;
}

bool cli_format_parse(const char *cmd, const char *value, struct cli_format *f)
{
	*f = (struct cli_format){.kind = CLI_FORMAT_TABLE};
	if (!value || !strcmp(value, "table"))
		return true;
	if (!strcmp(value, "json")) {
		f->kind = CLI_FORMAT_JSON;
		return true;
	}
	/* podman's report.NormalizeFormat: "table " goes, "\t" is a tab, a newline ends it. */
	bool table = !strncmp(value, "table ", 6);
	if (table)
		value += 6;
	size_t n = strlen(value);
	char *text = malloc(n + 2);
	if (!text) {
		cli_fail("%s: out of memory", cmd);
		return false;
	}
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (value[i] == '\\' && value[i + 1] == 't') {
			text[o++] = '\t';
			i++;
		} else if (value[i] == '\\' && value[i + 1] == 'n') {
			text[o++] = '\n';
			i++;
		} else {
			text[o++] = value[i];
		}
	}
	if (!o || text[o - 1] != '\n')
		text[o++] = '\n';
	text[o] = '\0';
	struct kapsel_error *err = NULL;
	int r = kapsel_template_parse(text, &f->t, &err);
	free(text);
	if (r < 0) {
		cli_fail("%s: --format: %s", cmd, err->msg);
		kapsel_error_free(err);
		return false;
	}
	f->kind = CLI_FORMAT_TEMPLATE;
	if (table && !(f->header = header_of(value))) {
		cli_format_clear(f);
		cli_fail("%s: out of memory", cmd);
		return false;
	}
	return true;
}

void cli_format_header(const struct cli_format *f)
{
	if (f->header)
		fputs(f->header, stdout);
}

bool cli_format_print(const char *cmd, const struct cli_format *f, const char *json)
{
	char *out = NULL;
	struct kapsel_error *err = NULL;
	if (kapsel_template_render(f->t, json, &out, &err) < 0) {
		cli_fail("%s: --format: %s", cmd, err->msg);
		kapsel_error_free(err);
		return false;
	}
	fputs(out, stdout);
	free(out);
	return true;
}

void cli_format_clear(struct cli_format *f)
{
	kapsel_template_free(f->t);
	free(f->header);
	*f = (struct cli_format){0};
}

/* One object's JSON: 1 found, 0 not there (nothing reported), < 0 reported error. */
static int inspect_one(const struct cli_globals *g, const char *store, const char *type,
		       const char *name, char **json, struct kapsel_error **err)
{
	int r = -ENOENT;
	if (!type || !strcmp(type, "container")) {
		r = kapsel_image_container_inspect(store, name, json, err);
		if (r >= 0 || r != -ENOENT || type)
			return r < 0 ? r : 1;
		kapsel_error_free(*err);
		*err = NULL;
	}
	r = kapsel_image_inspect(store, name, json, err);
	if (r == -ENOENT && !type) {
		kapsel_error_free(*err);
		*err = NULL;
		return 0;
	}
	(void)g;
	return r < 0 ? r : 1;
}

int cli_inspect(const struct cli_globals *g, const struct cli_command *cmd, const char *store,
		const char *type, const char *format, char **names, int n, int missing_status)
{
	struct cli_format f;
	if (!cli_format_parse(cmd->name, format, &f))
		return EXIT_ENGINE;
	int status = 0;
	bool first = true;
	bool array = f.kind != CLI_FORMAT_TEMPLATE;
	if (array)
		putchar('[');
	for (int i = 0; i < n; i++) {
		char *json = NULL;
		struct kapsel_error *err = NULL;
		int r = inspect_one(g, store, type, names[i], &json, &err);
		if (r == 0) {
			/* podman: "no such object" when neither a container nor an image. */
			cli_fail("%s: no such object: \"%s\"", cmd->name, names[i]);
			status = missing_status;
			continue;
		}
		if (r < 0) {
			cli_fail_err(err);
			status = r == -ENOENT ? missing_status : EXIT_ENGINE;
			continue;
		}
		if (array) {
			printf("%s%s", first ? "\n" : ",\n", json);
		} else if (!cli_format_print(cmd->name, &f, json)) {
			free(json);
			status = EXIT_ENGINE;
			break;
		}
		first = false;
		free(json);
	}
	if (array)
		puts("\n]");
	cli_format_clear(&f);
	return status;
}
