/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kapsel's command line: runc 1.1's global options and command set. main() parses the global
 * options, starts logging, and hands the rest of argv to one command; the helpers below are what
 * every command shares (flag parsing, argument counts, error reporting).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/log.h>
#include <kapsel/run.h>

#include "commands.h"

const struct cli_command *const cli_commands[] = {
    // clang-format off
    /* one line per group: adding a command touches one line */
    /* runc's runtime commands */
    &cmd_create, &cmd_delete, &cmd_events, &cmd_exec, &cmd_features, &cmd_kill, &cmd_list,
    &cmd_pause, &cmd_ps, &cmd_resume, &cmd_run, &cmd_spec, &cmd_start, &cmd_state, &cmd_update,
    /* micro-VMs */
    &cmd_vm,
    /* images and registries */
    &cmd_pull, &cmd_login, &cmd_logout, &cmd_images, &cmd_rmi, &cmd_image, &cmd_prune,
    &cmd_load, &cmd_save, &cmd_build, &cmd_tag, &cmd_untag, &cmd_history, &cmd_push, &cmd_commit,
    &cmd_manifest,
    /* image containers, podman style */
    &cmd_stop, &cmd_rm, &cmd_logs,
    &cmd_cp, &cmd_top, &cmd_stats, &cmd_system,
    &cmd_wait, &cmd_rename, &cmd_restart, &cmd_attach,
    &cmd_inspect, &cmd_version, &cmd_info,
    /* networks */
    &cmd_network, &cmd_port,
    /* storage */
    &cmd_volume,
    /* shell completion and man pages, from this table */
    &cmd_completion, &cmd_complete_helper, &cmd_man_helper,
    // clang-format on
    NULL,
};

static const char usage[] =
    "Usage: kapsel [global options] <command> [command options] [arguments...]\n"
    "\n"
    "kapsel is an OCI container runtime with the runc command line.\n"
    "\n"
    "Global options:\n"
    "  --root DIR              state directory (default: " KAPSEL_DEFAULT_ROOT
    ", or $XDG_RUNTIME_DIR/kapsel for non-root users)\n"
    "  --store DIR             image store (default: /var/lib/kapsel)\n"
    "  --log FILE              write log lines to FILE instead of stderr\n"
    "  --log-format FORMAT     log format: text (default) or json\n"
    "  --debug                 also log debug messages\n"
    "  --systemd-cgroup        use the systemd cgroup driver (not supported: cgroupfs only)\n"
    "  --rootless VALUE        accepted for compatibility (true, false, auto); ignored\n"
    "  --criu PATH             accepted for compatibility; ignored\n"
    "  --version, -v           print the version\n"
    "  --help, -h              print this help\n"
    "\n"
    "Commands:\n";

static void print_usage(void)
{
	fputs(usage, stdout);
	for (size_t i = 0; cli_commands[i]; i++)
		if (!cli_commands[i]->hidden)
			printf("  %-10s  %s\n", cli_commands[i]->name, cli_commands[i]->summary);
	printf("  %-10s  %s\n", "help", "show help for kapsel or one command");
	puts("\nRun 'kapsel <command> --help' for a command's options.");
}

static const struct cli_command *find_command(const char *name)
{
	for (size_t i = 0; cli_commands[i]; i++)
		if (!strcmp(cli_commands[i]->name, name))
			return cli_commands[i];
	return NULL;
}

/* runc's status for errors until main knows the command (global flag errors included). */
static int fail_status = 1;

int cli_fail_status(void)
{
	return fail_status;
}

void cli_set_fail_status(int status)
{
	fail_status = status;
}

int cli_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct kapsel_error e = {.code = EINVAL, .msg = msg};
	kapsel_log_error_exit(&e);
	return fail_status;
}

int cli_fail_err(struct kapsel_error *err)
{
	kapsel_log_error_exit(err);
	kapsel_error_free(err);
	return fail_status;
}

/*
 * The positional arguments cli_getopt has passed in this parse, kept together at
 * argv[pos_start, pos_start + npos): each time options follow one, they move in front of it.
 */
static int pos_start, npos;

static void reverse(char **argv, int i, int j)
{
	for (j--; i < j; i++, j--) {
		char *t = argv[i];
		argv[i] = argv[j];
		argv[j] = t;
	}
}

/* [a, b)[b, e) -> [b, e)[a, b): moves the options that followed positionals in front. */
static void rotate(char **argv, int a, int b, int e)
{
	reverse(argv, a, b);
	reverse(argv, b, e);
	reverse(argv, a, e);
}

/*
 * "-e=A=1" is pflag's (podman's) spelling of "-e A=1"; getopt would take "=A=1" as the value,
 * and getopt_long_only may even read it as an ambiguous long-option prefix (-e: --env or
 * --entrypoint). Rewrites it in place (argv strings are writable, C11 5.1.2.2.1) to "-eA=1".
 */
static void short_equals(int argc, char **argv, const char *shortopts)
{
	int i = optind ? optind : 1;
	if (i >= argc)
		return;
	char *a = argv[i];
	if (a[0] != '-' || !a[1] || a[1] == '-' || a[1] == ':' || a[2] != '=' || !a[3])
		return;
	const char *s = strchr(shortopts, a[1]);
	if (s && s[1] == ':')
		memmove(a + 2, a + 3, strlen(a + 3) + 1);
}

int cli_not_running(const struct cli_globals *g, const char *name, struct kapsel_error *err)
{
	if (err->code != ENOENT)
		return 0;
	/*
	 * An image container that has exited keeps its store entry (ps -a lists it) but has no
	 * runtime state left: the runtime can only say it does not exist.
	 */
	char *status = NULL;
	struct kapsel_error *serr = NULL;
	int r = kapsel_image_container_status(g->store, name, &status, &serr);
	kapsel_error_free(serr);
	if (r <= 0 || !strcmp(status, "running") || !strcmp(status, "paused")) {
		free(status);
		return 0;
	}
	char msg[512];
	snprintf(msg, sizeof(msg), "container %s is not running (%s)", name, status);
	free(status);
	free(err->msg);
	err->msg = strdup(msg);
	err->code = EINVAL;
	return 1;
}

int cli_fail_podman(struct kapsel_error *err)
{
	/*
	 * The runtime refuses a process it cannot exec before it starts the container, with
	 * "exec ..." naming the program (container/init.c); podman tells these apart from its
	 * own errors the same way, by what the runtime said.
	 */
	int status = EXIT_ENGINE;
	if (err->msg && !strncmp(err->msg, "exec", 4) && (err->msg[4] == ' ' || err->msg[4] == ':'))
		status = err->code == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_INVOKE;
	cli_fail_err(err);
	return status;
}

int cli_getopt(const struct cli_command *cmd, int argc, char **argv, const char *shortopts,
	       const struct option *longopts)
{
	/*
	 * "-": options anywhere, as podman's commands take them (stop NAME -t 1), with getopt
	 * handing us each positional argument (as option 1) so that after cmd->argv_after of
	 * them the rest stays the command's own argv (run IMAGE ls -l). "--" ends options.
	 * ":": report missing values.
	 */
	char spec[64];
	snprintf(spec, sizeof(spec), "-:%s", shortopts);
	opterr = 0;
	if (optind == 0) {
		pos_start = 1;
		npos = 0;
	}
	int c;
	for (;;) {
		short_equals(argc, argv, shortopts);
		c = getopt_long_only(argc, argv, spec, longopts, NULL);
		if (c != 1)
			break;
		/* Every argument before this one is fully parsed: safe to reorder. */
		int q = optind - 1;
		rotate(argv, pos_start, pos_start + npos, q);
		pos_start = q - npos;
		npos++;
		if (cmd->argv_after && npos == cmd->argv_after) {
			optind = pos_start;
			return -1;
		}
	}
	switch (c) {
	case -1:
		/* optind: the first argument after "--", or argc; positionals go right before. */
		rotate(argv, pos_start, pos_start + npos, optind);
		optind -= npos;
		return -1;
	case 'h':
		fputs(cmd->usage, stdout);
		return CLI_OPT_HELP;
	case ':':
		cli_fail("%s: flag %s needs a value", cmd->name, argv[optind - 1]);
		return CLI_OPT_ERROR;
	case '?':
		/* optopt: an unknown short flag, or a known flag given a value (--detach=x). */
		if (optopt > 0 && optopt < 0x80 && !strchr(shortopts, optopt))
			cli_fail("%s: unknown flag -%c (see 'kapsel %s --help')", cmd->name, optopt,
				 cmd->name);
		else if (optopt)
			cli_fail("%s: flag %s takes no value", cmd->name, argv[optind - 1]);
		else
			cli_fail("%s: unknown flag %s (see 'kapsel %s --help')", cmd->name,
				 argv[optind - 1], cmd->name);
		return CLI_OPT_ERROR;
	default:
		return c;
	}
}

int cli_getopt_cmd(const struct cli_command *cmd, int argc, char **argv)
{
	return cli_getopt(cmd, argc, argv, cmd->shortopts, cmd->options);
}

int cli_dispatch(const struct cli_command *cmd, const struct cli_globals *g, int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(cmd->usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? fail_status : 0;
	}
	for (const struct cli_subcommand *s = cmd->subcommands; s->name; s++)
		if (!strcmp(argv[1], s->name)) {
			optind = 0;
			return s->cmd->run(g, argc - 1, argv + 1);
		}
	return cli_fail("%s: unknown subcommand \"%s\" (see 'kapsel %s --help')", cmd->name,
			argv[1], cmd->name);
}

const struct option cli_help_options[] = {{"help", no_argument, NULL, 'h'}, {0}};

int cli_opt_status(int c)
{
	return c == CLI_OPT_HELP ? 0 : fail_status;
}

bool cli_nargs(const struct cli_command *cmd, int n, int min, int max, const char *what)
{
	if (n >= min && (max < 0 || n <= max))
		return true;
	if (min == max)
		cli_fail("%s: requires exactly %d argument%s (%s)", cmd->name, min,
			 min == 1 ? "" : "s", what);
	else if (max < 0)
		cli_fail("%s: requires at least %d argument%s (%s)", cmd->name, min,
			 min == 1 ? "" : "s", what);
	else
		cli_fail("%s: requires %d to %d arguments (%s)", cmd->name, min, max, what);
	return false;
}

bool cli_parse_int(const struct cli_command *cmd, const char *flag, const char *s, long long min,
		   long long max, long long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		cli_fail("%s: %s: invalid value \"%s\" (expected an integer from %lld to %lld)",
			 cmd->name, flag, s, min, max);
		return false;
	}
	*out = v;
	return true;
}

int cli_parse_id_only(const struct cli_command *cmd, int argc, char **argv, const char **id)
{
	int c = cli_getopt_cmd(cmd, argc, argv);
	if (c != -1)
		return cli_opt_status(c);
	if (!cli_nargs(cmd, argc - optind, 1, 1, "container ID"))
		return fail_status;
	*id = argv[optind];
	return -1;
}

int cli_check_systemd_cgroup(const struct cli_command *cmd, const struct cli_globals *g)
{
	if (!g->systemd_cgroup)
		return 0;
	if (access("/run/systemd/system", F_OK) != 0)
		return cli_fail("%s: --systemd-cgroup: systemd is not running on this host",
				cmd->name);
	return cli_fail("%s: --systemd-cgroup: not supported by kapsel yet, use cgroupfs",
			cmd->name);
}

/*
 * A time as podman reads --since and --until (podman-logs(1)): an RFC 3339 time
 * ("2026-12-02T14:00:00Z", "...+01:00", fractions allowed), a date ("2026-12-02", UTC), Unix
 * seconds ("1796222704.5"), or a duration before now ("10m", "1h30m", "90s"). Nanoseconds
 * since the epoch; false when it is none of these.
 */
bool cli_parse_time(const char *s, int64_t *ns)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	char *end;
	/* A duration: one or more NUMBER UNIT pairs (h, m, s, ms). */
	double total = 0;
	const char *p = s;
	bool any = false;
	while (*p) {
		double v = strtod(p, &end);
		if (end == p || v < 0)
			break;
		double unit = !strncmp(end, "ms", 2) ? 1e-3
			      : *end == 'h'	     ? 3600
			      : *end == 'm'	     ? 60
			      : *end == 's'	     ? 1
						     : 0;
		if (!unit)
			break;
		total += v * unit;
		p = end + (unit == 1e-3 ? 2 : 1);
		any = true;
	}
	if (any && !*p) {
		*ns = now_ns - (int64_t)(total * 1e9);
		return true;
	}
	/* Unix seconds, with an optional fraction. */
	double secs = strtod(s, &end);
	if (end != s && !*end && secs >= 0 && strspn(s, "0123456789.") == strlen(s)) {
		*ns = secs >= 9.2e9 ? INT64_MAX : (int64_t)(secs * 1e9);
		return true;
	}
	struct tm tm = {0};
	const char *rest = strptime(s, "%Y-%m-%d", &tm);
	if (!rest)
		return false;
	int64_t frac = 0;
	long off = 0;
	if (*rest == 'T' || *rest == 't' || *rest == ' ') {
		rest = strptime(rest + 1, "%H:%M:%S", &tm);
		if (!rest)
			return false;
		if (*rest == '.') {
			int digits = 0;
			for (rest++; *rest >= '0' && *rest <= '9'; rest++, digits++)
				if (digits < 9)
					frac = frac * 10 + (*rest - '0');
			for (; digits < 9; digits++)
				frac *= 10;
		}
		if (*rest == 'Z' || *rest == 'z') {
			rest++;
		} else if (*rest == '+' || *rest == '-') {
			int hh, mm, n = 0;
			if (sscanf(rest + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 || n != 5)
				return false;
			off = (hh * 3600L + mm * 60L) * (*rest == '-' ? -1 : 1);
			rest += 6;
		}
	}
	if (*rest)
		return false;
	int64_t t = (int64_t)timegm(&tm) - off;
	/* Past 2262 nanoseconds overflow 64 bits: such a time is "never" either way. */
	*ns = t >= INT64_MAX / 1000000000 ? INT64_MAX : t * 1000000000 + frac;
	return true;
}

void cli_human_ago(int64_t secs, char *buf, size_t len)
{
	/* docker/go-units HumanDuration, which podman prints with " ago". */
	int64_t m = secs / 60, h = (secs + 1800) / 3600;
	if (secs < 1)
		snprintf(buf, len, "Less than a second ago");
	else if (secs == 1)
		snprintf(buf, len, "1 second ago");
	else if (secs < 60)
		snprintf(buf, len, "%lld seconds ago", (long long)secs);
	else if (m == 1)
		snprintf(buf, len, "About a minute ago");
	else if (m < 60)
		snprintf(buf, len, "%lld minutes ago", (long long)m);
	else if (h == 1)
		snprintf(buf, len, "About an hour ago");
	else if (h < 48)
		snprintf(buf, len, "%lld hours ago", (long long)h);
	else if (h < 24 * 7 * 2)
		snprintf(buf, len, "%lld days ago", (long long)(h / 24));
	else if (h < 24 * 30 * 2)
		snprintf(buf, len, "%lld weeks ago", (long long)(h / 24 / 7));
	else if (h < 24 * 365 * 2)
		snprintf(buf, len, "%lld months ago", (long long)(h / 24 / 30));
	else
		snprintf(buf, len, "%lld years ago", (long long)(h / 24 / 365));
}

void cli_json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

enum {
	OPT_ROOT = 0x100,
	OPT_LOG,
	OPT_LOG_FORMAT,
	OPT_DEBUG,
	OPT_SYSTEMD_CGROUP,
	OPT_ROOTLESS,
	OPT_CRIU,
	OPT_STORE,
};

static const struct option global_options[] = {
    {"root", required_argument, NULL, OPT_ROOT},
    {"log", required_argument, NULL, OPT_LOG},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"debug", no_argument, NULL, OPT_DEBUG},
    {"systemd-cgroup", no_argument, NULL, OPT_SYSTEMD_CGROUP},
    {"rootless", required_argument, NULL, OPT_ROOTLESS},
    {"criu", required_argument, NULL, OPT_CRIU},
    {"store", required_argument, NULL, OPT_STORE},
    {"version", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

const struct cli_command cli_main = {
    .name = "kapsel",
    .summary = "OCI container runtime, image tool and micro-VM monitor",
    .usage = usage,
    .shortopts = "vh",
    .options = global_options,
};

static char **saved_argv;

/* Where the read-only view of the binary is mounted for a moment: the state root (ours). */
static const char *seal_scratch(const char *root)
{
	if (mkdir(root, 0700) < 0 && errno != EEXIST)
		return NULL; /* the memfd fallback needs no directory */
	return root;
}

int main(int argc, char **argv)
{
	struct cli_globals g = {.root = kapsel_default_root()};
	const char *log_file = NULL, *rootless = NULL;
	enum kapsel_log_format format = KAPSEL_LOG_TEXT;
	int c;
	/* getopt may permute argv; the sealed re-exec needs it as given (kept reachable). */
	saved_argv = calloc((size_t)argc + 1, sizeof(char *));
	if (!saved_argv)
		return cli_fail("out of memory");
	memcpy(saved_argv, argv, sizeof(char *) * (size_t)argc);

	opterr = 0;
	while ((c = getopt_long_only(argc, argv, "+:vh", global_options, NULL)) != -1) {
		switch (c) {
		case OPT_ROOT:
			g.root = optarg;
			break;
		case OPT_LOG:
			log_file = optarg;
			break;
		case OPT_LOG_FORMAT:
			if (!strcmp(optarg, "json"))
				format = KAPSEL_LOG_JSON;
			else if (strcmp(optarg, "text"))
				return cli_fail(
				    "--log-format: unknown format \"%s\" (text or json)", optarg);
			break;
		case OPT_DEBUG:
			g.debug = true;
			break;
		case OPT_SYSTEMD_CGROUP:
			g.systemd_cgroup = true;
			break;
		case OPT_ROOTLESS:
			rootless = optarg;
			break;
		case OPT_CRIU:
			break;
		case OPT_STORE:
			g.store = optarg;
			break;
		case 'v':
			printf("kapsel version %s\nspec: %s\n", KAPSEL_VERSION, KAPSEL_OCI_VERSION);
			return 0;
		case 'h':
			print_usage();
			return 0;
		case ':':
			return cli_fail("flag %s needs a value", argv[optind - 1]);
		default:
			return cli_fail("%s global flag %s (see 'kapsel --help')",
					optopt ? "invalid" : "unknown", argv[optind - 1]);
		}
	}

	struct kapsel_error *err = NULL;
	if (kapsel_log_init(log_file, format, g.debug, &err) < 0)
		return cli_fail_err(err);
	if (rootless)
		kapsel_log(KAPSEL_LOG_DEBUG, "--rootless=%s: ignored", rootless);

	if (optind >= argc) {
		print_usage();
		return 0;
	}
	const char *name = argv[optind];
	if (!strcmp(name, "help")) {
		if (optind + 1 >= argc || !strcmp(argv[optind + 1], "--help") ||
		    !strcmp(argv[optind + 1], "-h")) {
			print_usage();
			return 0;
		}
		const struct cli_command *cmd = find_command(argv[optind + 1]);
		if (!cmd)
			return cli_fail("help: unknown command \"%s\"", argv[optind + 1]);
		fputs(cmd->usage, stdout);
		return 0;
	}
	const struct cli_command *cmd = find_command(name);
	if (!cmd)
		return cli_fail("unknown command \"%s\" (see 'kapsel --help')", name);

	if (cmd->podman_status)
		fail_status = EXIT_ENGINE;
	/* Commands that put processes into a container run from a sealed copy of kapsel. */
	if ((!strcmp(name, "create") || !strcmp(name, "run") || !strcmp(name, "exec") ||
	     !strcmp(name, "restart")) &&
	    kapsel_runtime_seal(saved_argv, seal_scratch(g.root), &err) < 0)
		return cli_fail_err(err);

	/* Commands parse argv from their own name on; optind = 0 re-initialises getopt. */
	int first = optind;
	optind = 0;
	return cmd->run(&g, argc - first, argv + first);
}
