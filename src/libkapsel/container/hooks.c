/* SPDX-License-Identifier: Apache-2.0 */
/*
 * OCI hooks (runtime-spec config.md#posix-platform-hooks): each hook is executed with the
 * container state on stdin, its own args/env, and an optional timeout after which it is killed.
 * prestart, createRuntime, createContainer and startContainer failures fail the operation; a
 * failing poststart or poststop hook is only a warning and the hooks after it still run
 * (config.md#posix-platform-hooks: "the runtime MUST log a warning, but the remaining hooks and
 * lifecycle continue as if the hook had succeeded").
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "core/syscalls.h"

static const char *const hook_names[] = {"prestart",	   "createRuntime", "createContainer",
					 "startContainer", "poststart",	    "poststop"};

static int run_one(const struct kap_hook *h, const char *kind, size_t idx, const char *state,
		   struct kapsel_error **err)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return kap_error(err, errno, "hooks.%s[%zu]: pipe", kind, idx);
	pid_t pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return kap_error(err, errno, "hooks.%s[%zu]: fork", kind, idx);
	}
	if (pid == 0) {
		/* An earlier hook's write may have left SIGPIPE ignored in this process (see
		 * below). */
		signal(SIGPIPE, SIG_DFL);
		dup2(pipefd[0], STDIN_FILENO);
		char *const default_args[] = {(char *)h->path, NULL};
		execve(h->path, h->args && h->args[0] ? h->args : default_args,
		       h->env ? h->env : (char *[]){NULL});
		_exit(127);
	}
	close(pipefd[0]);
	if (state) {
		/* The hook may not read stdin at all: a failed write is not its failure. The
		 * disposition is restored at once: this process may be the container's init, and an
		 * ignored signal survives execve into the container's program. */
		struct sigaction ign = {.sa_handler = SIG_IGN}, old;
		sigaction(SIGPIPE, &ign, &old);
		ssize_t w = write(pipefd[1], state, strlen(state));
		(void)w;
		sigaction(SIGPIPE, &old, NULL);
	}
	close(pipefd[1]);

	int status = 0;
	int pidfd = kap_pidfd_open(pid, 0);
	if (h->has_timeout && pidfd >= 0) {
		struct pollfd p = {.fd = pidfd, .events = POLLIN};
		int r;
		do
			r = poll(&p, 1, h->timeout * 1000);
		while (r < 0 && errno == EINTR);
		if (r == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			close(pidfd);
			return kap_error_plain(err, ETIMEDOUT,
					       "hooks.%s[%zu] %s: timed out after %d s", kind, idx,
					       h->path, h->timeout);
		}
	}
	if (pidfd >= 0)
		close(pidfd);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && access(h->path, X_OK) < 0)
		return kap_error(err, errno, "hooks.%s[%zu]: exec %s", kind, idx, h->path);
	if (WIFSIGNALED(status))
		return kap_error_plain(err, EIO, "hooks.%s[%zu] %s: killed by signal %d", kind, idx,
				       h->path, WTERMSIG(status));
	return kap_error_plain(err, EIO, "hooks.%s[%zu] %s: exit status %d", kind, idx, h->path,
			       WEXITSTATUS(status));
}

int kap_hooks_run(const struct kap_hooks *hooks, enum kap_hook_kind kind, const char *state_json,
		  struct kapsel_error **err)
{
	bool warn_only = kind == KAP_HOOK_POSTSTART || kind == KAP_HOOK_POSTSTOP;
	for (size_t i = 0; i < hooks->n[kind]; i++) {
		struct kapsel_error *e = NULL;
		int r = run_one(&hooks->list[kind][i], hook_names[kind], i, state_json, &e);
		if (r < 0 && !warn_only) {
			if (err)
				*err = e;
			else
				kapsel_error_free(e);
			return r;
		}
		if (r < 0) {
			kap_warn("%s", e->msg);
			kapsel_error_free(e);
		}
	}
	return 0;
}
