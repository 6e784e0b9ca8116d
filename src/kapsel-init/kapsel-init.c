/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kapsel-init: the PID 1 of `kapsel run --init` (what catatonit is to podman and tini to
 * docker). Usage: kapsel-init [--] COMMAND [ARG...]
 *
 * PID 1 of a PID namespace has two duties a normal program does not know about:
 *   - orphans are reparented to it (pid_namespaces(7)); a PID 1 that never waits for them
 *     leaves zombies that fill the pid table (and the pids cgroup);
 *   - the kernel delivers it only the signals it has handlers for, so the SIGTERM of
 *     `kapsel stop` is lost on a program that did not install one.
 * So: block every signal, fork the command (signals unblocked again in the child, which gets
 * its own process group and, on a terminal, the foreground), and loop in sigwaitinfo():
 * SIGCHLD reaps every child that exited; any other signal is forwarded to the command. When
 * the command exits, so do we, with its status (128+N for a signal, as a shell reports it).
 *
 * Linked statically and bind-mounted read-only from the host, it needs nothing from the
 * image. It must stay tiny and must not allocate after the fork.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what, int err)
{
	fprintf(stderr, "kapsel-init: %s: %s\n", what, strerror(err));
	exit(125);
}

/* The signals never forwarded: SIGCHLD is ours; the synchronous ones are our own faults. */
static int forwardable(int sig)
{
	switch (sig) {
	case SIGCHLD:
	case SIGSEGV:
	case SIGBUS:
	case SIGILL:
	case SIGFPE:
	case SIGABRT:
	case SIGTRAP:
	case SIGSYS:
		return 0;
	default:
		return 1;
	}
}

static void run_child(char **argv, const sigset_t *old)
{
	/* Its own process group, in the terminal's foreground when there is one: ^C reaches the
	 * command, not us. SIGTTOU is still blocked here, so tcsetpgrp does not stop us. */
	setpgid(0, 0);
	if (isatty(STDIN_FILENO))
		tcsetpgrp(STDIN_FILENO, getpgrp());
	sigprocmask(SIG_SETMASK, old, NULL);
	execvp(argv[0], argv);
	int e = errno;
	fprintf(stderr, "kapsel-init: exec %s: %s\n", argv[0], strerror(e));
	/* podman's statuses: 127 for a command not found, 126 for one that cannot run. */
	_exit(e == ENOENT ? 127 : 126);
}

int main(int argc, char **argv)
{
	int first = 1;
	if (first < argc && !strcmp(argv[first], "--"))
		first++;
	if (first >= argc) {
		fputs("usage: kapsel-init [--] COMMAND [ARG...]\n", stderr);
		return 125;
	}
	sigset_t all, old;
	sigfillset(&all);
	if (sigprocmask(SIG_BLOCK, &all, &old) < 0)
		die("sigprocmask", errno);
	/* Not PID 1 (a nested use): become the reaper of our descendants anyway. */
	if (getpid() != 1)
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	pid_t child = fork();
	if (child < 0)
		die("fork", errno);
	if (child == 0)
		run_child(argv + first, &old);

	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&all, &si);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			die("sigwaitinfo", errno);
		}
		if (sig != SIGCHLD) {
			if (forwardable(sig))
				kill(child, sig);
			continue;
		}
		/* One SIGCHLD may stand for many exits: reap until none is left. */
		for (;;) {
			int status;
			pid_t p = waitpid(-1, &status, WNOHANG);
			if (p <= 0)
				break;
			if (p != child)
				continue;
			if (WIFEXITED(status))
				return WEXITSTATUS(status);
			return 128 + WTERMSIG(status);
		}
	}
}
