/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The console backend behind the UART: stdio (a tty goes into raw mode, restored on every exit
 * path of kapsel_vm_run; Ctrl-A x quits and Ctrl-A a sends a literal Ctrl-A, as in QEMU),
 * file:PATH (output only) or none.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <termios.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "vmm/vmm.h"

#define CTRL_A 0x01

int kap_console_open(struct kap_console *c, const struct kapsel_vm_config *cfg,
		     struct kapsel_error **err)
{
	*c = (struct kap_console){.out_fd = -1, .in_fd = -1};
	switch (cfg->console) {
	case KAPSEL_VM_CONSOLE_NONE:
		return 0;
	case KAPSEL_VM_CONSOLE_FILE:
		c->out_fd = open(cfg->console_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (c->out_fd < 0)
			return kap_error(err, errno, "open console file %s", cfg->console_path);
		return 0;
	case KAPSEL_VM_CONSOLE_STDIO:
		break;
	}
	c->out_fd = STDOUT_FILENO;
	c->in_fd = STDIN_FILENO;
	if (isatty(STDIN_FILENO)) {
		struct termios *saved = malloc(sizeof(*saved));
		if (!saved)
			return kap_error(err, ENOMEM, "console");
		if (tcgetattr(STDIN_FILENO, saved) < 0) {
			free(saved);
			return kap_error(err, errno, "tcgetattr stdin");
		}
		struct termios raw = *saved;
		cfmakeraw(&raw);
		/* Keep output post-processing: the guest sends \n and expects a newline. */
		raw.c_oflag |= OPOST | ONLCR;
		if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) < 0) {
			free(saved);
			return kap_error(err, errno, "tcsetattr stdin (raw mode)");
		}
		c->termios_saved = saved;
		c->raw = true;
	}
	return 0;
}

void kap_console_close(struct kap_console *c)
{
	if (c->raw)
		tcsetattr(STDIN_FILENO, TCSANOW, (struct termios *)c->termios_saved);
	free(c->termios_saved);
	c->termios_saved = NULL;
	c->raw = false;
	if (c->out_fd > STDERR_FILENO)
		close(c->out_fd);
	c->out_fd = -1;
	c->in_fd = -1;
}

void kap_console_write(struct kap_console *c, const void *buf, size_t len)
{
	const char *p = buf;
	while (c->out_fd >= 0 && len > 0) {
		/*
		 * A vCPU writes the guest's output here. With a reader that stopped reading, a
		 * blocking write would hold the vCPU, and with it the exit after SIGTERM, for
		 * good: wait for room in short polls that look at vm->stop (the kick's signal
		 * ends a poll at once; the timeout covers a kick landing just before it), then
		 * write no more than a pipe takes whole once it polls writable (PIPE_BUF, pipe(7)).
		 */
		if (c->vm && atomic_load(&c->vm->stop))
			return;
		struct pollfd pfd = {.fd = c->out_fd, .events = POLLOUT};
		int pr = poll(&pfd, 1, 20);
		if (pr == 0 || (pr < 0 && errno == EINTR))
			continue;
		ssize_t n = pr < 0 ? -1 : write(c->out_fd, p, len < PIPE_BUF ? len : PIPE_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* A closed pipe must not stop the guest: drop output from now on. */
			kap_debug("console write: %s; dropping guest output", strerror(errno));
			c->out_fd = -1;
			return;
		}
		p += n;
		len -= (size_t)n;
	}
}

static void console_input(void *opaque, uint32_t events)
{
	struct kap_console *c = opaque;
	uint8_t buf[256], out[256];
	ssize_t n = read(c->in_fd, buf, sizeof(buf));
	if (n <= 0) {
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		/* EOF (or error) on stdin: the guest keeps running, without input. */
		kap_loop_del(&c->vm->loop, c->in_fd);
		c->in_fd = -1;
		return;
	}
	size_t m = 0;
	for (ssize_t i = 0; i < n; i++) {
		uint8_t ch = buf[i];
		if (!c->raw) {
			out[m++] = ch;
			continue;
		}
		if (c->escape) {
			c->escape = false;
			if (ch == 'x' || ch == 'X') {
				kap_vm_request_exit(c->vm, KAP_VM_QUIT, 0, NULL);
				return;
			}
			if (ch != CTRL_A)
				continue; /* unknown escape: swallowed, as QEMU does */
			out[m++] = CTRL_A;
		} else if (ch == CTRL_A) {
			c->escape = true;
		} else {
			out[m++] = ch;
		}
	}
	if (m && c->input)
		c->input(c->input_dev, out, m);
}

int kap_console_attach(struct kap_console *c, struct kap_loop *l, struct kapsel_error **err)
{
	if (c->in_fd < 0)
		return 0;
	int r = kap_loop_add(l, c->in_fd, EPOLLIN, console_input, c, err);
	if (r == -EPERM) {
		/* epoll refuses regular files (stdin redirected from a file): read it at once. */
		if (err && *err) {
			kapsel_error_free(*err);
			*err = NULL;
		}
		uint8_t buf[4096];
		ssize_t n;
		while ((n = read(c->in_fd, buf, sizeof(buf))) > 0)
			if (c->input)
				c->input(c->input_dev, buf, (size_t)n);
		c->in_fd = -1;
		return 0;
	}
	return r;
}
