/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel completion bash|zsh|fish`: a completion script written at run time from the command
 * tables the parser uses (cli_commands, each command's options and subcommands), as cobra does
 * for podman. Each script carries the tables as data (keyed by the command's path,
 * "kapsel/network/create") and one function that walks the words typed so far; names of
 * containers, images, networks and volumes come from the hidden `kapsel __complete KIND`, run by
 * the same kapsel the user is completing (with the --root and --store given before the command).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/container.h>
#include <kapsel/image.h>
#include <kapsel/network.h>
#include <kapsel/run.h>
#include <kapsel/volume.h>

#include "commands.h"

static const char *const operand_kinds[] = {
    [CLI_OPERAND_NONE] = "",
    [CLI_OPERAND_CONTAINER] = "containers",
    [CLI_OPERAND_IMAGE] = "images",
    [CLI_OPERAND_NETWORK] = "networks",
    [CLI_OPERAND_FILE] = "files",
    [CLI_OPERAND_VOLUME] = "volumes",
    [CLI_OPERAND_CONTAINER_OR_IMAGE] = "containers+images",
};

/* Writes s single-quoted for a POSIX shell (fish reads the same quoting for our text). */
static void put_quoted(FILE *out, const char *s)
{
	fputc('\'', out);
	for (; *s; s++)
		if (*s == '\'')
			fputs("'\\''", out);
		else
			fputc(*s, out);
	fputc('\'', out);
}

/* fish has no '\'' splice inside quotes: it takes \' there. */
static void put_fish_quoted(FILE *out, const char *s)
{
	fputc('\'', out);
	for (; *s; s++) {
		if (*s == '\'' || *s == '\\')
			fputc('\\', out);
		fputc(*s, out);
	}
	fputc('\'', out);
}

/* A flag's help for a one-line description: the first sentence-ish part of it. */
static void flag_help(const struct cli_command *cmd, const struct option *o, char *buf, size_t len)
{
	struct cli_flag_doc d;
	cli_flag_doc(cmd->usage, o->name, &d);
	snprintf(buf, len, "%s", d.help);
}

static bool flag_takes_path(const struct cli_command *cmd, const struct option *o)
{
	struct cli_flag_doc d;
	cli_flag_doc(cmd->usage, o->name, &d);
	return o->has_arg != no_argument && cli_flag_is_path(&d);
}

/*
 * The data every script needs, one command at a time: its subcommands, flags, flags taking
 * a value (and those whose value is a path), operand kind and argv_after. put(kind, path,
 * value) writes one entry; value is a space-separated list.
 */
struct emitter {
	FILE *out;
	void (*put)(FILE *out, const char *table, const char *path, const char *value);
	/* Descriptions (zsh, fish): key is path/word, e.g. kapsel/run/--memory. */
	void (*desc)(FILE *out, const char *key, const char *text);
};

struct list {
	char buf[8192];
};

static void list_add(struct list *l, const char *prefix, const char *word)
{
	size_t n = strlen(l->buf);
	snprintf(l->buf + n, sizeof(l->buf) - n, "%s%s%s", n ? " " : "", prefix, word);
}

static void emit(const struct emitter *e, const char *path, const struct cli_command *cmd,
		 int depth)
{
	struct list subs = {{0}}, flags = {{0}}, valued = {{0}}, paths = {{0}};
	const char *name;
	const struct cli_command *sub;
	char key[512], help[1024];

	for (size_t i = 0; cli_sub_at(cmd, i, &name, &sub); i++) {
		list_add(&subs, "", name);
		snprintf(key, sizeof(key), "%s/%s", path, name);
		if (e->desc)
			e->desc(e->out, key, sub->summary);
	}
	if (cmd == &cli_main) {
		list_add(&subs, "", "help");
		if (e->desc)
			e->desc(e->out, "kapsel/help", "show help for kapsel or one command");
	}
	const struct option *o;
	for (size_t i = 0; (o = cli_flag_at(cmd, i)); i++) {
		int s = cli_flag_short(cmd, o);
		char sbuf[3] = {'-', (char)s, 0};
		list_add(&flags, "--", o->name);
		if (s)
			list_add(&flags, "", sbuf);
		if (o->has_arg == required_argument) {
			list_add(&valued, "--", o->name);
			if (s)
				list_add(&valued, "", sbuf);
			if (flag_takes_path(cmd, o)) {
				list_add(&paths, "--", o->name);
				if (s)
					list_add(&paths, "", sbuf);
			}
		}
		if (e->desc) {
			flag_help(cmd, o, help, sizeof(help));
			snprintf(key, sizeof(key), "%s/--%s", path, o->name);
			e->desc(e->out, key, help);
			if (s) {
				snprintf(key, sizeof(key), "%s/%s", path, sbuf);
				e->desc(e->out, key, help);
			}
		}
	}
	e->put(e->out, "subs", path, subs.buf);
	e->put(e->out, "flags", path, flags.buf);
	e->put(e->out, "valued", path, valued.buf);
	e->put(e->out, "paths", path, paths.buf);
	e->put(e->out, "operands", path, operand_kinds[cmd->operands]);
	char after[16];
	snprintf(after, sizeof(after), "%d", cmd->argv_after);
	e->put(e->out, "argv_after", path, after);

	/* Subcommand tables are shallow; the bound only guards against a table naming itself. */
	if (depth > 4)
		return;
	for (size_t i = 0; cli_sub_at(cmd, i, &name, &sub); i++) {
		snprintf(key, sizeof(key), "%s/%s", path, name);
		emit(e, key, sub, depth + 1);
	}
}

static void sh_put(FILE *out, const char *table, const char *path, const char *value)
{
	if (!*value)
		return;
	fprintf(out, "_kapsel_%s[%s]=", table, path);
	put_quoted(out, value);
	fputc('\n', out);
}

static void sh_desc(FILE *out, const char *key, const char *text)
{
	if (!*text)
		return;
	fprintf(out, "_kapsel_desc[%s]=", key);
	put_quoted(out, text);
	fputc('\n', out);
}

static const char tables_decl[] =
    "_kapsel_subs _kapsel_flags _kapsel_valued _kapsel_paths _kapsel_operands "
    "_kapsel_argv_after";

static const char bash_function[] =
    "_kapsel() {\n"
    "\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
    "\tlocal cmdpath=kapsel w i=1 npos=0 after\n"
    "\tlocal -a globals=()\n"
    "\tCOMPREPLY=()\n"
    "\twhile (( i < COMP_CWORD )); do\n"
    "\t\tw=${COMP_WORDS[i]}\n"
    "\t\tafter=${_kapsel_argv_after[$cmdpath]:-0}\n"
    "\t\tif (( after > 0 && npos >= after )); then\n"
    "\t\t\tbreak\n"
    "\t\telif [[ $w == -- ]]; then\n"
    "\t\t\tnpos=$((npos + 1))\n"
    "\t\telif [[ $w == -* ]]; then\n"
    "\t\t\tif [[ \" ${_kapsel_valued[$cmdpath]} \" == *\" $w \"* ]]; then\n"
    "\t\t\t\tif [[ $cmdpath == kapsel && ( $w == --root || $w == --store ) ]]; then\n"
    "\t\t\t\t\tglobals+=(\"$w\" \"${COMP_WORDS[i+1]}\")\n"
    "\t\t\t\tfi\n"
    "\t\t\t\ti=$((i + 1))\n"
    "\t\t\tfi\n"
    "\t\telif (( npos == 0 )) && [[ $cmdpath == kapsel && $w == help ]]; then\n"
    "\t\t\tcmdpath=kapsel/help\n"
    "\t\telif (( npos == 0 )) && [[ \" ${_kapsel_subs[$cmdpath]} \" == *\" $w \"* ]]; then\n"
    "\t\t\tcmdpath=$cmdpath/$w\n"
    "\t\telse\n"
    "\t\t\tnpos=$((npos + 1))\n"
    "\t\tfi\n"
    "\t\ti=$((i + 1))\n"
    "\tdone\n"
    "\tafter=${_kapsel_argv_after[$cmdpath]:-0}\n"
    "\tif (( after > 0 && npos >= after )); then\n"
    "\t\tcompopt -o default 2>/dev/null\n"
    "\t\treturn 0\n"
    "\tfi\n"
    "\tif [[ $cmdpath == kapsel/help ]]; then\n"
    "\t\t(( npos == 0 )) && COMPREPLY=($(compgen -W \"${_kapsel_subs[kapsel]}\" -- \"$cur\"))\n"
    "\t\treturn 0\n"
    "\tfi\n"
    "\tif [[ $prev == -* && \" ${_kapsel_valued[$cmdpath]} \" == *\" $prev \"* ]]; then\n"
    "\t\tif [[ \" ${_kapsel_paths[$cmdpath]} \" == *\" $prev \"* ]]; then\n"
    "\t\t\tcompopt -o default 2>/dev/null\n"
    "\t\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n"
    "\t\tfi\n"
    "\t\treturn 0\n"
    "\tfi\n"
    "\tif [[ $cur == -* ]]; then\n"
    "\t\tCOMPREPLY=($(compgen -W \"${_kapsel_flags[$cmdpath]}\" -- \"$cur\"))\n"
    "\t\treturn 0\n"
    "\tfi\n"
    "\tif (( npos == 0 )) && [[ -n ${_kapsel_subs[$cmdpath]} ]]; then\n"
    "\t\tCOMPREPLY=($(compgen -W \"${_kapsel_subs[$cmdpath]}\" -- \"$cur\"))\n"
    "\t\treturn 0\n"
    "\tfi\n"
    "\tcase ${_kapsel_operands[$cmdpath]} in\n"
    "\tfiles)\n"
    "\t\tcompopt -o default 2>/dev/null\n"
    "\t\tCOMPREPLY=($(compgen -f -- \"$cur\"));;\n"
    "\t?*)\n"
    "\t\tlocal IFS=$'\\n'\n"
    "\t\tCOMPREPLY=($(compgen -W \"$(\"${COMP_WORDS[0]}\" \"${globals[@]}\" __complete "
    "\"${_kapsel_operands[$cmdpath]}\" 2>/dev/null)\" -- \"$cur\"));;\n"
    "\tesac\n"
    "\treturn 0\n"
    "}\n"
    "complete -F _kapsel kapsel\n";

static void bash_script(FILE *out)
{
	fputs("# bash completion for kapsel, written by 'kapsel completion bash' from the tables\n"
	      "# its parser uses. Load it with: source <(kapsel completion bash)\n",
	      out);
	fprintf(out, "declare -gA %s\n", tables_decl);
	struct emitter e = {.out = out, .put = sh_put};
	emit(&e, "kapsel", &cli_main, 0);
	fputs(bash_function, out);
}

static const char zsh_function[] =
    "_kapsel() {\n"
    "\tlocal cmdpath=kapsel w i=2 npos=0 after cur=${words[CURRENT]} prev=${words[CURRENT-1]}\n"
    "\tlocal -a globals list\n"
    "\twhile (( i < CURRENT )); do\n"
    "\t\tw=${words[i]}\n"
    "\t\tafter=${_kapsel_argv_after[$cmdpath]:-0}\n"
    "\t\tif (( after > 0 && npos >= after )); then\n"
    "\t\t\tbreak\n"
    "\t\telif [[ $w == -- ]]; then\n"
    "\t\t\t(( npos++ ))\n"
    "\t\telif [[ $w == -* ]]; then\n"
    "\t\t\tif [[ \" ${_kapsel_valued[$cmdpath]} \" == *\" $w \"* ]]; then\n"
    "\t\t\t\tif [[ $cmdpath == kapsel && ( $w == --root || $w == --store ) ]]; then\n"
    "\t\t\t\t\tglobals+=(\"$w\" \"${words[i+1]}\")\n"
    "\t\t\t\tfi\n"
    "\t\t\t\t(( i++ ))\n"
    "\t\t\tfi\n"
    "\t\telif (( npos == 0 )) && [[ $cmdpath == kapsel && $w == help ]]; then\n"
    "\t\t\tcmdpath=kapsel/help\n"
    "\t\telif (( npos == 0 )) && [[ \" ${_kapsel_subs[$cmdpath]} \" == *\" $w \"* ]]; then\n"
    "\t\t\tcmdpath=$cmdpath/$w\n"
    "\t\telse\n"
    "\t\t\t(( npos++ ))\n"
    "\t\tfi\n"
    "\t\t(( i++ ))\n"
    "\tdone\n"
    "\tafter=${_kapsel_argv_after[$cmdpath]:-0}\n"
    "\tif (( after > 0 && npos >= after )); then\n"
    "\t\t_files\n"
    "\t\treturn\n"
    "\tfi\n"
    "\tif [[ $cmdpath == kapsel/help ]]; then\n"
    "\t\t(( npos == 0 )) && compadd -- ${=_kapsel_subs[kapsel]}\n"
    "\t\treturn\n"
    "\tfi\n"
    "\tif [[ $prev == -* && \" ${_kapsel_valued[$cmdpath]} \" == *\" $prev \"* ]]; then\n"
    "\t\t[[ \" ${_kapsel_paths[$cmdpath]} \" == *\" $prev \"* ]] && _files\n"
    "\t\treturn\n"
    "\tfi\n"
    "\tif [[ $cur == -* ]]; then\n"
    "\t\tfor w in ${=_kapsel_flags[$cmdpath]}; do\n"
    "\t\t\tlist+=(\"$w:${_kapsel_desc[$cmdpath/$w]}\")\n"
    "\t\tdone\n"
    "\t\t_describe -t flags flag list\n"
    "\t\treturn\n"
    "\tfi\n"
    "\tif (( npos == 0 )) && [[ -n ${_kapsel_subs[$cmdpath]} ]]; then\n"
    "\t\tfor w in ${=_kapsel_subs[$cmdpath]}; do\n"
    "\t\t\tlist+=(\"$w:${_kapsel_desc[$cmdpath/$w]}\")\n"
    "\t\tdone\n"
    "\t\t_describe -t commands command list\n"
    "\t\treturn\n"
    "\tfi\n"
    "\tcase ${_kapsel_operands[$cmdpath]} in\n"
    "\tfiles) _files ;;\n"
    "\t?*)\n"
    "\t\tlist=(${(f)\"$(${words[1]} $globals __complete ${_kapsel_operands[$cmdpath]} "
    "2>/dev/null)\"})\n"
    "\t\tcompadd -a list ;;\n"
    "\tesac\n"
    "}\n"
    "if [[ $funcstack[1] == _kapsel ]]; then\n"
    "\t_kapsel \"$@\"\n"
    "else\n"
    "\tcompdef _kapsel kapsel\n"
    "fi\n";

static void zsh_script(FILE *out)
{
	fputs(
	    "#compdef kapsel\n"
	    "# zsh completion for kapsel, written by 'kapsel completion zsh' from the tables its\n"
	    "# parser uses. Save it as _kapsel in a directory on $fpath, or: source <(kapsel "
	    "completion zsh)\n",
	    out);
	fprintf(out, "typeset -gA %s _kapsel_desc\n", tables_decl);
	struct emitter e = {.out = out, .put = sh_put, .desc = sh_desc};
	emit(&e, "kapsel", &cli_main, 0);
	fputs(zsh_function, out);
}

/*
 * fish: the walker's data as variables named by the mangled path (fish names hold neither '/'
 * nor '-'), then one `complete` line per subcommand, flag and operand.
 */
static void fish_mangle(const char *path, char *buf, size_t len)
{
	size_t i = 0;
	for (; *path && i + 1 < len; path++)
		buf[i++] = (*path == '/' || *path == '-') ? '_' : *path;
	buf[i] = '\0';
}

static void fish_emit(FILE *out, const char *path, const struct cli_command *cmd, int depth)
{
	const char *name;
	const struct cli_command *sub;
	char var[512], key[512], help[1024];
	fish_mangle(path, var, sizeof(var));

	/* The walker's data. */
	fprintf(out, "set -g __kapsel_subs_%s", var);
	for (size_t i = 0; cli_sub_at(cmd, i, &name, &sub); i++)
		fprintf(out, " %s", name);
	fprintf(out, "\nset -g __kapsel_valued_%s", var);
	const struct option *o;
	for (size_t i = 0; (o = cli_flag_at(cmd, i)); i++) {
		int s = cli_flag_short(cmd, o);
		if (o->has_arg != required_argument)
			continue;
		fprintf(out, " --%s", o->name);
		if (s)
			fprintf(out, " -%c", s);
	}
	fprintf(out, "\nset -g __kapsel_after_%s %d\n", var, cmd->argv_after);

	/* Subcommands only before any operand; flags until argv_after operands. */
	for (size_t i = 0; cli_sub_at(cmd, i, &name, &sub); i++) {
		fprintf(out, "complete -c kapsel -n '__kapsel_at %s 1' -a %s -d ", path, name);
		put_fish_quoted(out, sub->summary);
		fputc('\n', out);
	}
	if (cmd == &cli_main)
		fputs("complete -c kapsel -n '__kapsel_at kapsel 1' -a help "
		      "-d 'show help for kapsel or one command'\n",
		      out);
	for (size_t i = 0; (o = cli_flag_at(cmd, i)); i++) {
		int s = cli_flag_short(cmd, o);
		fprintf(out, "complete -c kapsel -n '__kapsel_at %s %d' -l %s", path,
			cmd->argv_after, o->name);
		if (s)
			fprintf(out, " -s %c", s);
		if (o->has_arg == required_argument)
			fputs(flag_takes_path(cmd, o) ? " -r -F" : " -r -f", out);
		flag_help(cmd, o, help, sizeof(help));
		if (*help) {
			fputs(" -d ", out);
			put_fish_quoted(out, help);
		}
		fputc('\n', out);
	}
	if (cmd->operands == CLI_OPERAND_FILE)
		fprintf(out, "complete -c kapsel -n '__kapsel_at %s %d' -F\n", path,
			cmd->argv_after);
	else if (cmd->operands != CLI_OPERAND_NONE)
		fprintf(out, "complete -c kapsel -n '__kapsel_at %s %d' -a '(__kapsel_names %s)'\n",
			path, cmd->argv_after, operand_kinds[cmd->operands]);

	if (depth > 4)
		return;
	for (size_t i = 0; cli_sub_at(cmd, i, &name, &sub); i++) {
		snprintf(key, sizeof(key), "%s/%s", path, name);
		fish_emit(out, key, sub, depth + 1);
	}
}

static const char fish_functions[] =
    "# Sets __kapsel_path (kapsel/network/create) and __kapsel_npos from the words typed.\n"
    "function __kapsel_walk\n"
    "\tset -g __kapsel_path kapsel\n"
    "\tset -g __kapsel_npos 0\n"
    "\tset -l skip 0\n"
    "\tfor w in (commandline -opc)[2..-1]\n"
    "\t\tset -l var (string replace -a -r '[/-]' _ $__kapsel_path)\n"
    "\t\tset -l after __kapsel_after_$var\n"
    "\t\tif test \"$$after\" -gt 0 2>/dev/null; and test $__kapsel_npos -ge \"$$after\"\n"
    "\t\t\treturn\n"
    "\t\tend\n"
    "\t\tif test $skip = 1\n"
    "\t\t\tset skip 0\n"
    "\t\t\tcontinue\n"
    "\t\tend\n"
    "\t\tset -l valued __kapsel_valued_$var\n"
    "\t\tset -l subs __kapsel_subs_$var\n"
    "\t\tif string match -q -- '-*' $w\n"
    "\t\t\tif contains -- $w $$valued\n"
    "\t\t\t\tset skip 1\n"
    "\t\t\tend\n"
    "\t\telse if test $__kapsel_npos = 0; and contains -- $w $$subs\n"
    "\t\t\tset -g __kapsel_path $__kapsel_path/$w\n"
    "\t\telse\n"
    "\t\t\tset -g __kapsel_npos (math $__kapsel_npos + 1)\n"
    "\t\tend\n"
    "\tend\n"
    "end\n"
    "\n"
    "# True when the words typed are at command PATH with fewer than MAX operands (0: any).\n"
    "function __kapsel_at -a path max\n"
    "\t__kapsel_walk\n"
    "\ttest \"$__kapsel_path\" = \"$path\"; or return 1\n"
    "\ttest \"$max\" = 0; or test $__kapsel_npos -lt $max\n"
    "end\n"
    "\n"
    "function __kapsel_names -a kind\n"
    "\tset -l kapsel (commandline -opc)[1]\n"
    "\ttype -q $kapsel; or return\n"
    "\t$kapsel __complete $kind 2>/dev/null\n"
    "end\n"
    "\n"
    "complete -c kapsel -f\n";

static void fish_script(FILE *out)
{
	fputs("# fish completion for kapsel, written by 'kapsel completion fish' from the tables "
	      "its\n"
	      "# parser uses. Save it as ~/.config/fish/completions/kapsel.fish, or:\n"
	      "# kapsel completion fish | source\n",
	      out);
	fputs(fish_functions, out);
	fish_emit(out, "kapsel", &cli_main, 0);
}

static int completion(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_completion, argc, argv)) != -1)
		return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
	if (!cli_nargs(&cmd_completion, argc - optind, 1, 1, "SHELL"))
		return EXIT_ENGINE;
	const char *shell = argv[optind];
	if (!strcmp(shell, "bash"))
		bash_script(stdout);
	else if (!strcmp(shell, "zsh"))
		zsh_script(stdout);
	else if (!strcmp(shell, "fish"))
		fish_script(stdout);
	else {
		cli_fail("completion: unknown shell \"%s\" (bash, zsh or fish)", shell);
		return EXIT_ENGINE;
	}
	return fflush(stdout) == 0 ? 0 : EXIT_ENGINE;
}

const struct cli_command cmd_completion = {
    .podman_status = true,
    .name = "completion",
    .summary = "print a shell completion script (bash, zsh, fish)",
    .run = completion,
    .shortopts = "h",
    .options = cli_help_options,
    .usage = "Usage: kapsel completion bash|zsh|fish\n"
	     "\n"
	     "Print a script that completes kapsel's commands, subcommands and flags, and the\n"
	     "names of containers, images and networks where a command takes them, in the\n"
	     "given shell. It is made from the same tables kapsel parses its command line\n"
	     "with. To load it now: source <(kapsel completion bash) (or zsh); in fish:\n"
	     "kapsel completion fish | source. To load it in every shell, save it where the\n"
	     "shell looks: /usr/share/bash-completion/completions/kapsel, a directory on zsh's\n"
	     "$fpath as _kapsel, or ~/.config/fish/completions/kapsel.fish.\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
};

/* `kapsel __complete KIND`: the names completion offers, one a line; silent on errors. */
static void names_containers(const struct cli_globals *g)
{
	struct kapsel_error *err = NULL;
	struct kapsel_ps_entry *e = NULL;
	size_t n = 0;
	if (kapsel_image_ps(g->store, g->root, true, &e, &n, &err) == 0) {
		for (size_t i = 0; i < n; i++)
			puts(e[i].name);
	}
	kapsel_error_free(err);
	err = NULL;
	/* Runtime containers (runc's commands) that are not image containers too. */
	struct kapsel_container_info *c = NULL;
	size_t m = 0;
	if (kapsel_container_list(g->root, &c, &m, &err) == 0)
		for (size_t i = 0; i < m; i++) {
			bool dup = false;
			for (size_t j = 0; j < n && !dup; j++)
				dup = !strcmp(e[j].name, c[i].id);
			if (!dup)
				puts(c[i].id);
		}
	kapsel_error_free(err);
	kapsel_container_info_free(c, m);
	kapsel_ps_entries_free(e, n);
}

static void names_images(const struct cli_globals *g)
{
	struct kapsel_error *err = NULL;
	struct kapsel_image_info *v = NULL;
	size_t n = 0;
	if (kapsel_image_list(g->store, &v, &n, &err) == 0)
		for (size_t i = 0; i < n; i++)
			puts(v[i].name);
	kapsel_error_free(err);
	kapsel_image_info_free(v, n);
}

static void names_networks(const struct cli_globals *g)
{
	struct kapsel_error *err = NULL;
	struct kapsel_network_info *v = NULL;
	size_t n = 0;
	if (kapsel_network_list(g->store, &v, &n, &err) == 0)
		for (size_t i = 0; i < n; i++)
			puts(v[i].name);
	kapsel_error_free(err);
	kapsel_network_infos_free(v, n);
}

static void names_volumes(const struct cli_globals *g)
{
	struct kapsel_error *err = NULL;
	struct kapsel_volume_info *v = NULL;
	size_t n = 0;
	if (kapsel_volume_list(g->store, &v, &n, &err) == 0)
		for (size_t i = 0; i < n; i++)
			puts(v[i].name);
	kapsel_error_free(err);
	kapsel_volume_infos_free(v, n);
}

static int complete_helper(const struct cli_globals *g, int argc, char **argv)
{
	if (argc != 2)
		return cli_fail("__complete: expected containers, images, networks, volumes or "
				"containers+images");
	if (!strcmp(argv[1], "containers"))
		names_containers(g);
	else if (!strcmp(argv[1], "images"))
		names_images(g);
	else if (!strcmp(argv[1], "networks"))
		names_networks(g);
	else if (!strcmp(argv[1], "volumes"))
		names_volumes(g);
	else if (!strcmp(argv[1], "containers+images")) {
		names_containers(g);
		names_images(g);
	} else
		return cli_fail("__complete: unknown kind \"%s\" (containers, images, networks, "
				"volumes or containers+images)",
				argv[1]);
	return 0;
}

const struct cli_command cmd_complete_helper = {
    .name = "__complete",
    .summary = "names for shell completion",
    .run = complete_helper,
    .hidden = true,
    .usage = "Usage: kapsel __complete containers|images|networks|volumes|containers+images\n",
};
