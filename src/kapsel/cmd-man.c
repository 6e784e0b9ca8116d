/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel __man DIR STAMP`: kapsel(1) and one kapsel-COMMAND(1) per command and subcommand,
 * in man(7) roff, written from the same tables the parser uses (cli_commands, each command's
 * options and subcommands) and the usage text --help prints. The build runs it (a meson
 * custom_target) and `meson install` copies DIR into mandir/man1, so the pages always match
 * the binary they were made with.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"

/* Writes [s, s + n) as roff text: backslashes and hyphens escaped, no control-line starts. */
static void roff(FILE *out, const char *s, size_t n)
{
	if (n && (*s == '.' || *s == '\''))
		fputs("\\&", out);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\')
			fputs("\\e", out);
		else if (s[i] == '-')
			fputs("\\-", out);
		else
			fputc(s[i], out);
	}
}

static void roff_str(FILE *out, const char *s)
{
	roff(out, s, strlen(s));
}

/* "network create" -> "kapsel-network-create" */
static void page_name(const char *cmd_path, char *buf, size_t len)
{
	snprintf(buf, len, "kapsel%s%s", *cmd_path ? "-" : "", cmd_path);
	for (char *p = buf; *p; p++)
		if (*p == ' ')
			*p = '-';
}

static bool is_header(const char *line, size_t n)
{
	return n > 1 && n < 40 && line[0] >= 'A' && line[0] <= 'Z' && line[n - 1] == ':' &&
	       !memchr(line, '.', n);
}

/*
 * The usage text: "Usage:" lines become SYNOPSIS, the rest DESCRIPTION, except the flag lines
 * (and their continuations), which OPTIONS gives from the table; indented lines stay as set.
 */
static void put_usage(FILE *out, const char *usage)
{
	const char *line = usage, *eol;
	fputs(".SH SYNOPSIS\n.nf\n", out);
	for (; *line; line = *eol ? eol + 1 : eol) {
		eol = strchrnul(line, '\n');
		size_t n = (size_t)(eol - line);
		const char *p = line;
		if (!strncmp(p, "Usage:", 6))
			p += 6;
		else if (n == 0 || *p != ' ')
			break;
		while (p < eol && *p == ' ')
			p++;
		roff(out, p, (size_t)(eol - p));
		fputc('\n', out);
	}
	fputs(".fi\n.SH DESCRIPTION\n", out);
	bool in_pre = false, in_flag = false, para = false;
	for (; *line; line = *eol ? eol + 1 : eol) {
		eol = strchrnul(line, '\n');
		size_t n = (size_t)(eol - line), ind = strspn(line, " ");
		if (ind == n) {
			if (in_pre)
				fputs(".fi\n", out);
			in_pre = in_flag = false;
			para = true;
			continue;
		}
		if (ind && line[ind] == '-') {
			in_flag = true;
			continue;
		}
		if (in_flag && ind > 2)
			continue; /* a flag's continuation line */
		in_flag = false;
		if (!ind && is_header(line, n)) {
			if (in_pre)
				fputs(".fi\n", out);
			in_pre = false;
			para = false;
			/* Options: and Global options: come from the tables, in OPTIONS; a header
			 * with nothing under it (kapsel's Commands:, printed from the table) goes.
			 */
			if ((strstr(line, "ptions:") && strstr(line, "ptions:") < eol) || !*eol ||
			    eol[1] == '\n' || !eol[1])
				continue;
			fputs(".SS ", out);
			roff(out, line, n - 1);
			fputc('\n', out);
			continue;
		}
		if (para) {
			if (in_pre)
				fputs(".fi\n", out);
			in_pre = false;
			fputs(".PP\n", out);
			para = false;
		}
		if (ind && !in_pre) {
			fputs(".nf\n", out);
			in_pre = true;
		} else if (!ind && in_pre) {
			fputs(".fi\n", out);
			in_pre = false;
		}
		roff(out, line + ind - (in_pre ? ind : 0), n - ind + (in_pre ? ind : 0));
		fputc('\n', out);
	}
	if (in_pre)
		fputs(".fi\n", out);
}

/* Whether a and b are aliases: one value in the same table (--net, --network). */
static bool aliases(const struct cli_command *cmd, const struct option *a, const struct option *b)
{
	if (a->val != b->val || a->val < 0x80 || a->has_arg != b->has_arg)
		return false;
	int in_a = 0, in_b = 0;
	for (const struct option *t = cmd->options; t && t->name; t++) {
		in_a |= t == a;
		in_b |= t == b;
	}
	return in_a == in_b;
}

/* OPTIONS: every flag of the tables, aliases (--net, --network) on one entry. */
static void put_options(FILE *out, const struct cli_command *cmd, const char *title)
{
	const struct option *o, *p;
	bool any = false;
	for (size_t i = 0; (o = cli_flag_at(cmd, i)); i++) {
		/* An alias of an earlier flag of the same table: listed with it. */
		bool alias = false;
		for (size_t j = 0; j < i && !alias; j++) {
			p = cli_flag_at(cmd, j);
			alias = aliases(cmd, p, o);
		}
		if (alias)
			continue;
		if (!any)
			fprintf(out, ".SH %s\n", title);
		any = true;
		struct cli_flag_doc d;
		cli_flag_doc(cmd->usage, o->name, &d);
		fputs(".TP\n\\fB", out);
		roff(out, "--", 2);
		roff_str(out, o->name);
		fputs("\\fR", out);
		for (size_t j = i + 1; (p = cli_flag_at(cmd, j)); j++)
			if (aliases(cmd, p, o)) {
				fputs(", \\fB", out);
				roff(out, "--", 2);
				roff_str(out, p->name);
				fputs("\\fR", out);
				if (!d.help[0])
					cli_flag_doc(cmd->usage, p->name, &d);
			}
		int s = cli_flag_short(cmd, o);
		if (s)
			fprintf(out, ", \\fB\\-%c\\fR", s);
		if (o->has_arg != no_argument) {
			fputs(o->has_arg == optional_argument ? "[=\\fI" : " \\fI", out);
			roff_str(out, d.arg[0] ? d.arg : "VALUE");
			fputs(o->has_arg == optional_argument ? "\\fR]" : "\\fR", out);
		}
		fputc('\n', out);
		if (d.help[0])
			roff_str(out, d.help);
		else if (!strcmp(o->name, "help"))
			fputs("print the command's help", out);
		else
			fputs("(see SYNOPSIS and DESCRIPTION)", out);
		fputc('\n', out);
	}
}

struct page_list {
	char names[256][64];
	size_t n;
};

static int write_page(const char *dir, const char *cmd_path, const struct cli_command *cmd,
		      const char *parent_page, struct page_list *pages);

/* The pages below cmd (cmd_path "" for kapsel itself), each command once. */
static int write_subpages(const char *dir, const char *cmd_path, const struct cli_command *cmd,
			  const char *page, struct page_list *pages)
{
	const char *name;
	const struct cli_command *sub;
	for (size_t i = 0; cli_sub_at(cmd, i, &name, &sub); i++) {
		bool dup = false, top = false;
		const char *n2;
		const struct cli_command *s2;
		for (size_t j = 0; j < i && !dup && cli_sub_at(cmd, j, &n2, &s2); j++)
			dup = s2 == sub;
		/* image ls is images: its page is kapsel-images(1). */
		for (size_t k = 0; cmd != &cli_main && cli_commands[k] && !top; k++)
			top = cli_commands[k] == sub;
		if (dup || top)
			continue;
		char sub_path[256];
		snprintf(sub_path, sizeof(sub_path), "%s%s%s", cmd_path, *cmd_path ? " " : "",
			 name);
		int r = write_page(dir, sub_path, sub, page, pages);
		if (r)
			return r;
	}
	return 0;
}

/* COMMANDS: what runs below cmd, with the page that tells more. */
static void put_commands(FILE *out, const char *cmd_path, const struct cli_command *cmd)
{
	const char *name;
	const struct cli_command *sub;
	if (!cli_sub_at(cmd, 0, &name, &sub))
		return;
	fputs(".SH COMMANDS\n", out);
	for (size_t i = 0; cli_sub_at(cmd, i, &name, &sub); i++) {
		char page[300];
		bool top = false;
		for (size_t k = 0; cmd != &cli_main && cli_commands[k] && !top; k++)
			top = cli_commands[k] == sub;
		if (top) {
			page_name(sub->name, page, sizeof(page));
		} else {
			/* An alias shares the page of the first name of its command. */
			const char *first = name, *n2;
			const struct cli_command *s2;
			for (size_t j = 0; j < i && cli_sub_at(cmd, j, &n2, &s2); j++)
				if (s2 == sub) {
					first = n2;
					break;
				}
			char p[256];
			snprintf(p, sizeof(p), "%.120s%s%.120s", cmd_path, *cmd_path ? " " : "",
				 first);
			page_name(p, page, sizeof(page));
		}
		fputs(".TP\n\\fB", out);
		roff_str(out, name);
		fputs("\\fR\n", out);
		roff_str(out, sub->summary);
		fputs(" (\\fB", out);
		roff_str(out, page);
		fputs("\\fR(1))\n", out);
	}
}

/* Whether cmd's errors exit 125: its own flag or, for a subcommand, its top command's. */
static bool podman_status(const char *cmd_path, const struct cli_command *cmd)
{
	if (cmd->podman_status)
		return true;
	size_t n = strcspn(cmd_path, " ");
	for (size_t i = 0; n && cli_commands[i]; i++)
		if (strlen(cli_commands[i]->name) == n &&
		    !strncmp(cli_commands[i]->name, cmd_path, n))
			return cli_commands[i]->podman_status;
	return false;
}

static int write_page(const char *dir, const char *cmd_path, const struct cli_command *cmd,
		      const char *parent_page, struct page_list *pages)
{
	char page[300], file[4096];
	page_name(cmd_path, page, sizeof(page));
	if (pages->n >= sizeof(pages->names) / sizeof(pages->names[0]) ||
	    strlen(page) >= sizeof(pages->names[0]))
		return cli_fail("__man: %s: too many pages or too long a name", page);
	snprintf(pages->names[pages->n++], sizeof(pages->names[0]), "%s", page);
	snprintf(file, sizeof(file), "%s/%s.1", dir, page);
	FILE *out = fopen(file, "we");
	if (!out)
		return cli_fail("__man: %s: %s", file, strerror(errno));

	char upper[300];
	size_t k = 0;
	for (; page[k] && k + 1 < sizeof(upper); k++)
		upper[k] = (char)(page[k] >= 'a' && page[k] <= 'z' ? page[k] - 32 : page[k]);
	upper[k] = '\0';
	fputs(".\\\" Written by 'kapsel __man' from kapsel's command tables; do not edit.\n", out);
	fputs(".TH ", out);
	roff_str(out, upper);
	fprintf(out, " 1 \"\" \"kapsel %s\" \"kapsel Manual\"\n.SH NAME\n", KAPSEL_VERSION);
	roff_str(out, page);
	fputs(" \\- ", out);
	roff_str(out, cmd->summary);
	fputc('\n', out);
	put_usage(out, cmd->usage);
	put_options(out, cmd, cmd == &cli_main ? "GLOBAL OPTIONS" : "OPTIONS");
	put_commands(out, cmd_path, cmd);
	fputs(".SH EXIT STATUS\n", out);
	if (podman_status(cmd_path, cmd))
		fputs("0 when the command succeeds; 125 when kapsel fails, usage errors included, "
		      "as\n"
		      "podman's commands do.\n",
		      out);
	else
		fputs("0 when the command succeeds, non\\-zero when it fails; where the command "
		      "gives a\n"
		      "status its own meaning (a container's exit status, podman's 125, 126 and "
		      "127),\n"
		      "DESCRIPTION says so.\n",
		      out);
	fputs(".SH SEE ALSO\n", out);
	if (cmd == &cli_main) {
		const char *name;
		const struct cli_command *sub;
		for (size_t i = 0; cli_sub_at(cmd, i, &name, &sub); i++) {
			char p[300];
			page_name(name, p, sizeof(p));
			fprintf(out, "%s\\fB", i ? ",\n" : "");
			roff_str(out, p);
			fputs("\\fR(1)", out);
		}
		fputc('\n', out);
	} else {
		fputs("\\fBkapsel\\fR(1)", out);
		if (parent_page && strcmp(parent_page, "kapsel")) {
			fputs(", \\fB", out);
			roff_str(out, parent_page);
			fputs("\\fR(1)", out);
		}
		fputc('\n', out);
	}
	bool failed = ferror(out);
	if (fclose(out) != 0 || failed)
		return cli_fail("__man: %s: %s", file, strerror(errno));
	return write_subpages(dir, cmd_path, cmd, page, pages);
}

static int man_helper(const struct cli_globals *g, int argc, char **argv)
{
	if (argc != 3)
		return cli_fail("__man: expected DIR STAMP");
	if (mkdir(argv[1], 0755) < 0 && errno != EEXIST)
		return cli_fail("__man: %s: %s", argv[1], strerror(errno));
	struct page_list *pages = calloc(1, sizeof(*pages));
	if (!pages)
		return cli_fail("__man: out of memory");
	int r = write_page(argv[1], "", &cli_main, NULL, pages);
	if (!r) {
		/* The stamp lists the pages: meson's output, and what `meson install` copies. */
		FILE *stamp = fopen(argv[2], "we");
		if (!stamp) {
			r = cli_fail("__man: %s: %s", argv[2], strerror(errno));
		} else {
			for (size_t i = 0; i < pages->n; i++)
				fprintf(stamp, "%s.1\n", pages->names[i]);
			if (fclose(stamp) != 0)
				r = cli_fail("__man: %s: %s", argv[2], strerror(errno));
		}
	}
	free(pages);
	return r;
}

const struct cli_command cmd_man_helper = {
    .name = "__man",
    .summary = "write the man pages",
    .run = man_helper,
    .hidden = true,
    .usage = "Usage: kapsel __man DIR STAMP\n",
};
