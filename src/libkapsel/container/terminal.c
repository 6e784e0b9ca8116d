/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container terminals. The pty is allocated inside the container (its own devpts instance) and
 * the master travels to the runtime; with --console-socket the runtime passes it on over
 * SCM_RIGHTS, which is the protocol conmon and containerd's shim implement.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/proc.h"

int kap_terminal_open(const struct kap_process *p, int *master, struct kapsel_error **err)
{
	cleanup_close int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return kap_error(err, errno, "process.terminal: open /dev/ptmx");
	if (unlockpt(m) < 0)
		return kap_error(err, errno, "process.terminal: unlockpt");
	char name[64];
	if (ptsname_r(m, name, sizeof(name)) != 0)
		return kap_error(err, errno, "process.terminal: ptsname");
	int s = open(name, O_RDWR | O_NOCTTY);
	if (s < 0)
		return kap_error(err, errno, "process.terminal: open %s", name);
	if (p->console_height || p->console_width) {
		struct winsize ws = {.ws_row = (unsigned short)p->console_height,
				     .ws_col = (unsigned short)p->console_width};
		ioctl(s, TIOCSWINSZ, &ws);
	}
	/* /dev/console is the container's terminal (runtime-spec config-linux.md#devices). */
	if (mount(name, "/dev/console", NULL, MS_BIND, NULL) < 0 && errno != ENOENT) {
		close(s);
		return kap_error(err, errno, "bind %s onto /dev/console", name);
	}
	if (ioctl(s, TIOCSCTTY, 0) < 0) {
		close(s);
		return kap_error(err, errno, "process.terminal: set controlling terminal");
	}
	if (dup2(s, 0) < 0 || dup2(s, 1) < 0 || dup2(s, 2) < 0) {
		close(s);
		return kap_error(err, errno, "process.terminal: dup");
	}
	if (s > 2)
		close(s);
	*master = steal_fd(m);
	return 0;
}

int kap_terminal_send_to_socket(const char *socket_path, int master, struct kapsel_error **err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return kap_error_plain(err, ENAMETOOLONG, "--console-socket %s: path too long",
				       socket_path);
	strcpy(sa.sun_path, socket_path);
	cleanup_close int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return kap_error(err, errno, "--console-socket: socket");
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return kap_error(err, errno, "--console-socket: connect %s", socket_path);
	int r = kap_send_fd(s, master, "/dev/ptmx");
	if (r < 0)
		return kap_error(err, -r, "--console-socket: send pty master to %s", socket_path);
	return 0;
}

void kap_terminal_size_of_stdio(struct kap_process *p)
{
	struct winsize ws;
	if ((ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 ||
	     ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) &&
	    ws.ws_row && ws.ws_col) {
		p->console_height = ws.ws_row;
		p->console_width = ws.ws_col;
	}
}

static struct termios saved_tio;
static volatile sig_atomic_t winch;

static void on_winch(int sig)
{
	winch = 1;
}
static bool tio_saved;

static void restore_tty(void)
{
	if (tio_saved)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
}

static bool copy_fd(int from, int to)
{
	char buf[8192];
	ssize_t n = read(from, buf, sizeof(buf));
	if (n <= 0)
		return false;
	for (ssize_t off = 0; off < n;) {
		ssize_t w = write(to, buf + off, (size_t)(n - off));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		off += w;
	}
	return true;
}

void kap_terminal_relay(int master)
{
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
		struct termios raw = saved_tio;
		cfmakeraw(&raw);
		tio_saved = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
		atexit(restore_tty);
	}
	/*
	 * Follow our terminal's size: the kernel sends SIGWINCH to its foreground process group,
	 * which we are in. It stays blocked but while ppoll waits, so none is lost between the
	 * check of the flag and the wait.
	 */
	int in = isatty(STDIN_FILENO) ? STDIN_FILENO : STDOUT_FILENO;
	struct sigaction sa = {.sa_handler = on_winch};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGWINCH, &sa, NULL);
	sigset_t block, waitmask;
	sigemptyset(&block);
	sigaddset(&block, SIGWINCH);
	sigprocmask(SIG_BLOCK, &block, &waitmask);
	sigdelset(&waitmask, SIGWINCH);
	winch = 1;
	struct pollfd fds[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
				{.fd = master, .events = POLLIN}};
	for (;;) {
		if (winch) {
			winch = 0;
			struct winsize ws;
			if (ioctl(in, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col)
				ioctl(master, TIOCSWINSZ, &ws);
		}
		int r = ppoll(fds, 2, NULL, &waitmask);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		if (fds[1].revents & POLLIN) {
			if (!copy_fd(master, STDOUT_FILENO))
				break;
		} else if (fds[1].revents & (POLLHUP | POLLERR)) {
			break;
		}
		if (fds[0].revents & POLLIN) {
			if (!copy_fd(STDIN_FILENO, master))
				fds[0].fd = -1; /* stdin closed: keep relaying output */
		} else if (fds[0].revents & (POLLHUP | POLLERR)) {
			fds[0].fd = -1;
		}
	}
	restore_tty();
}
