/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What shell completion and the man pages read besides the option tables: the help each
 * command's usage text gives a flag. The tables say which flags exist and which take a value;
 * the usage (what --help prints) says what they mean, in lines of the form
 *
 *   --time, -t SECONDS      grace period before SIGKILL (default 10)
 *                           continued here, indented to the help column
 *
 * so --help, completion and man pages describe a flag with the same words.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

/* Appends [s, s + n) to buf (size len), cut to fit. */
static void append(char *buf, size_t len, const char *s, size_t n)
{
	size_t used = strlen(buf);
	if (used + 1 >= len)
		return;
	if (n > len - used - 1)
		n = len - used - 1;
	memcpy(buf + used, s, n);
	buf[used + n] = '\0';
}

/* Whether the flag column [p, e) names --name (or runc's -name). */
static bool names_flag(const char *p, const char *e, const char *name)
{
	size_t n = strlen(name);
	for (const char *q = p; q < e; q++) {
		if (*q != '-' || (q > p && q[-1] != ' ' && q[-1] != ',' && q[-1] != '['))
			continue;
		const char *f = q + 1 + (q + 1 < e && q[1] == '-');
		if ((size_t)(e - f) >= n && !strncmp(f, name, n) &&
		    (f + n == e || strchr(" ,=[]|", f[n])))
			return true;
	}
	return false;
}

static bool flag_line(const char *usage, const char *name, size_t help_col, int pass,
		      struct cli_flag_doc *d)
{
	const char *line = usage;
	while (line && *line) {
		const char *eol = strchrnul(line, '\n');
		const char *p = line;
		while (p < eol && *p == ' ')
			p++;
		if (p == line || p == eol || *p != '-') {
			line = *eol ? eol + 1 : NULL;
			continue;
		}
		/* The flag column ends at two spaces; the help column starts after them. */
		const char *end = strstr(p, "  ");
		if (!end || end > eol) {
			end = eol;
			if (help_col && (size_t)(eol - line) > help_col &&
			    line[help_col - 1] == ' ' && line[help_col] != ' ' &&
			    p < line + help_col - 1)
				end = line + help_col - 1;
		}
		char also[128];
		snprintf(also, sizeof(also), "also: --%s", name);
		const char *a = pass ? strstr(p, also) : NULL;
		if (pass ? !a || a > eol || !strchr(")], ", a[strlen(also)])
			 : !names_flag(p, end, name)) {
			line = *eol ? eol + 1 : NULL;
			continue;
		}
		/* The value's name: what follows the last flag in the column. */
		const char *arg = p;
		for (const char *q = p; q < end; q++)
			if (*q == '-' && (q == p || q[-1] == ' ')) {
				arg = q;
				while (arg < end && *arg != ' ')
					arg++;
			}
		while (arg < end && *arg == ' ')
			arg++;
		append(d->arg, sizeof(d->arg), arg, (size_t)(end - arg));
		const char *h = end;
		while (h < eol && *h == ' ')
			h++;
		append(d->help, sizeof(d->help), h, (size_t)(eol - h));
		size_t col = (size_t)(h - line), flag_ind = (size_t)(p - line);
		if (h == eol)
			col = 0; /* help starts on the next line, at its own column */
		/* Continuation lines: deeper than the flag, not another flag. */
		for (line = *eol ? eol + 1 : NULL; line && *line; line = *eol ? eol + 1 : NULL) {
			eol = strchrnul(line, '\n');
			size_t ind = strspn(line, " ");
			if (line + ind == eol || ind <= flag_ind || line[ind] == '-' ||
			    (col && ind < col))
				break;
			if (d->help[0])
				append(d->help, sizeof(d->help), " ", 1);
			append(d->help, sizeof(d->help), line + ind, (size_t)(eol - line - ind));
		}
		return true;
	}
	return false;
}

/*
 * The column help starts at: where the first flag line with a two-space gap puts it. A flag
 * column that fills it leaves one space ("--net none|host|NETWORK own network ...").
 */
static size_t help_column(const char *usage)
{
	for (const char *line = usage; *line;) {
		const char *eol = strchrnul(line, '\n');
		size_t ind = strspn(line, " ");
		const char *gap = strstr(line + ind, "  ");
		if (ind && line[ind] == '-' && gap && gap < eol) {
			gap += strspn(gap, " ");
			if (gap < eol)
				return (size_t)(gap - line);
		}
		line = *eol ? eol + 1 : eol;
	}
	return 0;
}

void cli_flag_doc(const char *usage, const char *name, struct cli_flag_doc *d)
{
	d->arg[0] = d->help[0] = '\0';
	size_t help_col = help_column(usage);
	/* Pass 0: the flag column names it; pass 1: another flag's help says "also: --name". */
	for (int pass = 0; pass < 2; pass++)
		if (flag_line(usage, name, help_col, pass, d))
			return;
	/* Only the synopsis has it: "[--subnet CIDR]" gives the value's name. */
	char pat[128];
	snprintf(pat, sizeof(pat), "[--%s ", name);
	const char *m = strstr(usage, pat);
	if (m) {
		m += strlen(pat);
		append(d->arg, sizeof(d->arg), m, strcspn(m, "]\n"));
	}
}

int cli_flag_short(const struct cli_command *cmd, const struct option *o)
{
	if (o->val <= 0 || o->val >= 0x80 || !isalnum(o->val))
		return 0;
	/* Only flags of the parser's own table are in cmd->shortopts. */
	for (const struct option *t = cmd->options; t && t->name; t++)
		if (t == o)
			return cmd->shortopts && strchr(cmd->shortopts, o->val) ? o->val : 0;
	/* A second form's table (run's runc form): runc gives each such letter a flag. */
	return o->val;
}

bool cli_flag_is_path(const struct cli_flag_doc *d)
{
	static const char *const words[] = {"FILE", "DIR", "PATH"};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		size_t n = strlen(words[i]);
		if (!strncmp(d->arg, words[i], n) && !isalnum((unsigned char)d->arg[n]))
			return true;
	}
	return false;
}

bool cli_sub_at(const struct cli_command *cmd, size_t i, const char **name,
		const struct cli_command **sub)
{
	if (cmd == &cli_main) {
		for (size_t k = 0; cli_commands[k]; k++) {
			if (cli_commands[k]->hidden)
				continue;
			if (i-- == 0) {
				*name = cli_commands[k]->name;
				*sub = cli_commands[k];
				return true;
			}
		}
		return false;
	}
	for (const struct cli_subcommand *s = cmd->subcommands; s && s->name; s++)
		if (i-- == 0) {
			*name = s->name;
			*sub = s->cmd;
			return true;
		}
	return false;
}

const struct option *cli_flag_at(const struct cli_command *cmd, size_t i)
{
	const struct option *tables[] = {cmd->options, cmd->more_options};
	for (size_t t = 0; t < 2; t++)
		for (const struct option *o = tables[t]; o && o->name; o++) {
			/* The second table repeats the first's --help and --detach: list each once.
			 */
			bool seen = false;
			for (const struct option *p = t ? cmd->options : NULL; p && p->name; p++)
				seen |= !strcmp(p->name, o->name);
			if (!seen && i-- == 0)
				return o;
		}
	return NULL;
}
