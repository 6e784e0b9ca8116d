/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/log.h>
#include <kapsel/oci-vm.h>
#include <kapsel/run.h>

#include "commands.h"

enum {
	OPT_CONSOLE_SOCKET = 0x100,
	OPT_PID_FILE,
	OPT_CWD,
	OPT_NO_NEW_PRIVS,
	OPT_PRESERVE_FDS,
	OPT_PROCESS_LABEL,
	OPT_APPARMOR,
};

/* runc 1.1 exec.go flag names. */
static const struct option options[] = {
    {"process", required_argument, NULL, 'p'},
    {"tty", no_argument, NULL, 't'},
    {"interactive", no_argument, NULL, 'i'},
    {"console-socket", required_argument, NULL, OPT_CONSOLE_SOCKET},
    {"detach", no_argument, NULL, 'd'},
    {"pid-file", required_argument, NULL, OPT_PID_FILE},
    {"cwd", required_argument, NULL, OPT_CWD},
    {"env", required_argument, NULL, 'e'},
    {"user", required_argument, NULL, 'u'},
    {"additional-gids", required_argument, NULL, 'g'},
    {"cap", required_argument, NULL, 'c'},
    {"no-new-privs", no_argument, NULL, OPT_NO_NEW_PRIVS},
    {"preserve-fds", required_argument, NULL, OPT_PRESERVE_FDS},
    {"process-label", required_argument, NULL, OPT_PROCESS_LABEL},
    {"apparmor", required_argument, NULL, OPT_APPARMOR},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* A NULL-terminated vector that --env and --cap grow. */
struct strv {
	char **v;
	size_t n;
};

static bool strv_push(struct strv *s, char *item)
{
	char **v = realloc(s->v, (s->n + 2) * sizeof(*v));
	if (!v)
		return false;
	v[s->n++] = item;
	v[s->n] = NULL;
	s->v = v;
	return true;
}

/*
 * Parses the flags into o; returns -1 to go on, else the exit status. Two forms share the
 * command: runc's, with --process (how podman's conmon and containerd's shim call it), keeps
 * runc's stdin and exit status 1 on errors; podman's (a command) gets podman's: stdin only with
 * -i, and 125, 126 or 127 (commands.h).
 */
static int parse(int argc, char **argv, struct kapsel_exec_options *o, struct strv *env,
		 struct strv *caps, bool *interactive)
{
	long long n;
	int c;

	while ((c = cli_getopt_cmd(&cmd_exec, argc, argv)) != -1) {
		switch (c) {
		case 'p':
			o->process_file = optarg;
			break;
		case 't':
			o->tty = true;
			break;
		case 'i':
			*interactive = true;
			break;
		case 'd':
			o->detach = true;
			break;
		case 'e':
		case 'c':
			if (!strv_push(c == 'e' ? env : caps, optarg))
				return cli_fail("exec: out of memory");
			break;
		case 'u':
			o->user = optarg;
			break;
		case 'g':
			return cli_fail("exec: --additional-gids is not supported yet; set "
					"user.additionalGids in a --process file");
		case OPT_CONSOLE_SOCKET:
			o->console_socket = optarg;
			break;
		case OPT_PID_FILE:
			o->pid_file = optarg;
			break;
		case OPT_CWD:
			o->cwd = optarg;
			break;
		case OPT_NO_NEW_PRIVS:
			o->no_new_privs = true;
			break;
		case OPT_PRESERVE_FDS:
			if (!cli_parse_int(&cmd_exec, "--preserve-fds", optarg, 0, INT_MAX - 3, &n))
				return 1;
			o->preserve_fds = (int)n;
			break;
		case OPT_PROCESS_LABEL:
		case OPT_APPARMOR:
			/* Neither LSM is supported (see `kapsel features`). */
			kapsel_log(KAPSEL_LOG_DEBUG, "exec: %s %s: ignored",
				   c == OPT_APPARMOR ? "--apparmor" : "--process-label", optarg);
			break;
		default:
			return c == CLI_OPT_HELP ? 0 : EXIT_ENGINE;
		}
	}
	if (!cli_nargs(&cmd_exec, argc - optind, 1, -1, "container ID [COMMAND [ARG...]]"))
		return o->process_file ? 1 : EXIT_ENGINE;
	o->id = argv[optind];
	o->args = argv + optind + 1;
	if (!o->process_file && !o->args[0]) {
		cli_fail("exec: requires a command or --process");
		return EXIT_ENGINE;
	}
	if (!o->process_file && *interactive && o->tty && !isatty(STDIN_FILENO)) {
		cli_fail("exec: the input device is not a TTY");
		return EXIT_ENGINE;
	}
	o->env = env->v;
	o->caps = caps->v;
	return -1;
}

static int exec_cmd(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_exec_options o = {.root = g->root};
	struct strv env = {0}, caps = {0};
	struct kapsel_error *err = NULL;
	bool interactive = false;

	int r = parse(argc, argv, &o, &env, &caps, &interactive);
	if (r < 0 && !o.process_file && !interactive) {
		/* podman exec without -i: the process reads nothing of ours. */
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null < 0 || dup2(null, STDIN_FILENO) < 0)
			r = (cli_fail("exec: stdin: /dev/null: %m"), EXIT_ENGINE);
		if (null >= 0)
			close(null);
	}
	char *ids = NULL;
	int vm = 0;
	if (r < 0) {
		/* A `run --vm` container: the guest agent starts the process. */
		vm = kapsel_image_vm_exec(g->store, &o, &r, &err);
		if (vm < 0)
			r = cli_fail_podman(err);
	}
	if (r < 0 && !vm) {
		/* A container of the runtime's VM handler (run.oci.handler=vm). */
		vm = kapsel_oci_vm_exec(&o, &r, &err);
		if (vm < 0)
			r = o.process_file ? cli_fail_err(err) : cli_fail_podman(err);
	}
	if (r < 0 && !vm && !o.process_file && o.user) {
		/* podman resolves -u in the container: names, and a UID's passwd gid. */
		int u = kapsel_image_exec_user(g->root, o.id, o.user, &ids, &err);
		if (u < 0)
			r = cli_fail_podman(err);
		else if (u > 0)
			o.user = ids;
	}
	if (r < 0 && !vm) {
		/* The process's exit status is ours, like a shell's; 0 with --detach. */
		r = kapsel_container_exec(&o, &err);
		if (r < 0 && o.process_file)
			r = cli_fail_err(err);
		else if (r < 0)
			r = (cli_not_running(g, o.id, err), cli_fail_podman(err));
	}
	free(ids);
	free(env.v);
	free(caps.v);
	return r;
}

const struct cli_command cmd_exec = {
    .name = "exec",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "p:tide:u:g:c:h",
    .options = options,
    .summary = "run a new process inside a container",
    .run = exec_cmd,
    .argv_after = 1,
    .usage = "Usage: kapsel exec [options] <container-id> [COMMAND [ARG...]]\n"
	     "\n"
	     "Run a process in a running container, given as a command or as a runtime-spec\n"
	     "process JSON file. Without --detach, exit with the process's status. Options go\n"
	     "before the container; what follows it is the command.\n"
	     "With a command (podman's exec): stdin only with -i; exit status 125 for kapsel's\n"
	     "errors, 126 when the command cannot be invoked, 127 when it is not found.\n"
	     "With --process (runc's exec): stdin is the process's; errors exit 1.\n"
	     "\n"
	     "Options:\n"
	     "  --process, -p FILE      the process as runtime-spec JSON (overrides the rest)\n"
	     "  --tty, -t               allocate a pseudo-terminal\n"
	     "  --interactive, -i       pass stdin to the process (with a command)\n"
	     "  --console-socket PATH   send the pseudo-terminal's master fd to this socket\n"
	     "  --detach, -d            return once the process has started\n"
	     "  --pid-file FILE         write the process's pid to FILE\n"
	     "  --cwd DIR               working directory in the container\n"
	     "  --env, -e K=V           set an environment variable (repeatable)\n"
	     "  --user, -u USER[:GROUP] run as this user and group: names or ids, looked up\n"
	     "                          in the container (a UID alone: its passwd gid)\n"
	     "  --additional-gids, -g   not supported yet (use --process)\n"
	     "  --cap, -c CAP           add a capability (repeatable)\n"
	     "  --no-new-privs          set no_new_privs for the process\n"
	     "  --preserve-fds N        pass N more file descriptors (3 .. 3+N-1)\n"
	     "  --process-label LABEL   accepted for compatibility; ignored (no SELinux)\n"
	     "  --apparmor PROFILE      accepted for compatibility; ignored (no AppArmor)\n"
	     "  --help, -h              print this help\n",
};
