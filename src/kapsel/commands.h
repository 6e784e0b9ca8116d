/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The command-line front end: one cmd-<name>.c per command, each parsing its own flags with
 * getopt_long_only (so runc's single-dash long flags like -bundle work) and calling the public
 * API. Helpers shared by the commands live in main.c.
 */
#pragma once
#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <kapsel/error.h>

struct cli_subcommand;

enum cli_operand {
	CLI_OPERAND_NONE,
	CLI_OPERAND_CONTAINER, /* image containers and runtime container IDs */
	CLI_OPERAND_IMAGE,
	CLI_OPERAND_NETWORK,
	CLI_OPERAND_FILE,
	CLI_OPERAND_VOLUME,
	CLI_OPERAND_CONTAINER_OR_IMAGE, /* inspect: either, as it looks them up */
};

/* Global options, given before the command. */
struct cli_globals {
	const char *root;
	bool debug;
	bool systemd_cgroup;
	const char *store; /* --store: the image store (NULL: the default) */
};

struct cli_command {
	const char *name;
	const char *summary;
	const char *usage; /* the full --help text */
	int (*run)(const struct cli_globals *g, int argc, char **argv);
	/*
	 * Options are taken anywhere up to this many positional arguments; what follows is the
	 * command's own argv (run IMAGE CMD..., exec NAME CMD...). 0: options anywhere.
	 */
	int argv_after;
	/*
	 * The flags the parser takes (cli_getopt_cmd), which shell completion and the man pages
	 * read too: one table, so the three cannot disagree.
	 */
	const char *shortopts;
	const struct option *options;
	/* A second form's flags, for completion and man pages only (run's runc form). */
	const struct option *more_options;
	/* Subcommands, ended by {0}: cli_dispatch runs them; completion and man pages list them. */
	const struct cli_subcommand *subcommands;
	/* Not listed in help, completion or man pages (the completion helper). */
	bool hidden;
	/* What the positional arguments name, for completion (up to argv_after of them). */
	enum cli_operand operands;
	/*
	 * podman's command (not one of runc's): kapsel's own errors, usage errors included, exit
	 * EXIT_ENGINE as podman's do (podman(1) "Exit Codes"), not runc's 1, which podman,
	 * containerd and CRI-O read from runc's commands. Subcommands take their parent's.
	 */
	bool podman_status;
};

/* One name a command answers to under its parent: several names may share one command. */
struct cli_subcommand {
	const char *name;
	const struct cli_command *cmd;
};

/* Every top-level command, ended by NULL (main.c's table). */
extern const struct cli_command *const cli_commands[];
/* kapsel itself: its global flags and usage, with cli_commands below it. */
extern const struct cli_command cli_main;

extern const struct cli_command cmd_create, cmd_start, cmd_run, cmd_state, cmd_kill, cmd_delete,
    cmd_list, cmd_ps, cmd_exec, cmd_pause, cmd_resume, cmd_events, cmd_update, cmd_features,
    cmd_spec;
extern const struct cli_command cmd_vm;
extern const struct cli_command cmd_pull, cmd_login, cmd_logout;
extern const struct cli_command cmd_stop, cmd_rm, cmd_logs;
extern const struct cli_command cmd_images, cmd_rmi, cmd_image, cmd_prune, cmd_load, cmd_save;
extern const struct cli_command cmd_build, cmd_tag, cmd_untag, cmd_history, cmd_push, cmd_commit,
    cmd_manifest;
extern const struct cli_command cmd_network, cmd_port;
extern const struct cli_command cmd_cp, cmd_top, cmd_stats, cmd_system;
extern const struct cli_command cmd_wait, cmd_rename, cmd_restart, cmd_attach;
extern const struct cli_command cmd_inspect, cmd_version, cmd_info;
extern const struct cli_command cmd_volume;
extern const struct cli_command cmd_completion, cmd_complete_helper, cmd_man_helper;

/*
 * Returned by cli_getopt after printing --help (exit 0) or a usage error (exit
 * cli_fail_status()).
 */
#define CLI_OPT_HELP  0x10000
#define CLI_OPT_ERROR 0x10001

/*
 * getopt_long_only over argv (argv[0] is the command name), with options anywhere before "--"
 * and before cmd->argv_after positional arguments; at -1 the positional arguments are
 * argv[optind..argc), in order. "-e=V" means "-e V". Handles -h/--help and unknown or
 * incomplete flags itself; the caller's switch passes those (and anything else unexpected) to
 * cli_opt_status().
 */
int cli_getopt(const struct cli_command *cmd, int argc, char **argv, const char *shortopts,
	       const struct option *longopts);
/* cli_getopt with the command's own tables (cmd->shortopts, cmd->options). */
int cli_getopt_cmd(const struct cli_command *cmd, int argc, char **argv);
int cli_opt_status(int c);
/*
 * Runs the subcommand argv[1] names from cmd->subcommands; with none or --help prints
 * cmd->usage (to stderr and exit 1 when none was given, as podman does).
 */
int cli_dispatch(const struct cli_command *cmd, const struct cli_globals *g, int argc, char **argv);
/* The table for commands whose only flag is --help. */
extern const struct option cli_help_options[];

/*
 * What a command's usage text says about one of its flags, found by its long name: the value's
 * name ("SECONDS", "" for none) and the help, continuation lines joined ("" when the usage does
 * not describe the flag). Both are NUL-terminated and cut to fit.
 */
struct cli_flag_doc {
	char arg[128];
	char help[1024];
};
void cli_flag_doc(const char *usage, const char *name, struct cli_flag_doc *d);
/* The short letter for o in cmd's table (from cmd->shortopts), or 0. */
int cli_flag_short(const struct cli_command *cmd, const struct option *o);
/* Whether a flag's value is a path, going by its name in the usage (FILE, DIR, PATH). */
bool cli_flag_is_path(const struct cli_flag_doc *d);
/*
 * The i-th name below cmd and the command it runs: the visible cli_commands below cli_main,
 * else cmd->subcommands. False past the last.
 */
bool cli_sub_at(const struct cli_command *cmd, size_t i, const char **name,
		const struct cli_command **sub);
/* The i-th flag of cmd (its table, then more_options, each name once); NULL past the last. */
const struct option *cli_flag_at(const struct cli_command *cmd, size_t i);

/*
 * The exit status for kapsel's own errors in this command: 1 (runc's) or EXIT_ENGINE for a
 * command with podman_status, which main sets before the command runs. A command with both
 * forms (ps: podman's list, runc's ps ID) sets it once it knows which form it has.
 */
int cli_fail_status(void);
void cli_set_fail_status(int status);
/*
 * Prints "kapsel: <msg>" through the log (and to stderr when logging to a file); returns
 * cli_fail_status().
 */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reports an API error and frees it; returns cli_fail_status(). */
int cli_fail_err(struct kapsel_error *err);
/*
 * podman's exit statuses (podman-run(1) "Exit Status") for its image-level run and exec: 125
 * for kapsel's own errors, usage included; 126 when the command cannot be invoked; 127 when it
 * is not found; otherwise the container's.
 */
#define EXIT_ENGINE	   125
#define EXIT_CANNOT_INVOKE 126
#define EXIT_NOT_FOUND	   127
/*
 * When err is the runtime's "does not exist" for name and name is an image container that
 * has exited, rewrites err to say it is not running. Returns 1 when it did.
 */
int cli_not_running(const struct cli_globals *g, const char *name, struct kapsel_error *err);
/* Reports err like cli_fail_err and returns the podman exit status for it. */
int cli_fail_podman(struct kapsel_error *err);
/* Checks the count of positional arguments; reports "<cmd>: requires ..." and returns false. */
bool cli_nargs(const struct cli_command *cmd, int n, int min, int max, const char *what);
/* Parses a decimal integer in [min, max] for flag; reports and returns false when invalid. */
bool cli_parse_int(const struct cli_command *cmd, const char *flag, const char *s, long long min,
		   long long max, long long *out);
/* create and run refuse --systemd-cgroup with a reason; returns 0 when it was not given. */
int cli_check_systemd_cgroup(const struct cli_command *cmd, const struct cli_globals *g);
/* A time as podman's --since takes it (RFC 3339, a date, Unix seconds, a duration before
 * now), in nanoseconds since the epoch; false when it is none of these. */
bool cli_parse_time(const char *s, int64_t *ns);
/* "5 minutes ago", "About an hour ago": podman's (go-units') words for secs in the past. */
void cli_human_ago(int64_t secs, char *buf, size_t len);
/* Writes s as a JSON string literal. */
void cli_json_string(FILE *out, const char *s);

struct kapsel_create_options;
/*
 * The flags create and run share (run adds --detach and --keep); fills *o from argv and the
 * globals. Returns -1 to go on, else the exit status (after --help or a usage error).
 */
/* runc run's flags (cmd-create.c), which run's runc form parses. */
extern const struct option cli_run_runc_options[];
int cli_parse_create(const struct cli_command *cmd, const struct cli_globals *g, int argc,
		     char **argv, struct kapsel_create_options *o);
/* For commands whose only argument is the container ID: returns -1 to go on with *id set. */
int cli_parse_id_only(const struct cli_command *cmd, int argc, char **argv, const char **id);
