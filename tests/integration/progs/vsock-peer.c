/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A static vsock peer for the Linux-guest tests (busybox has no AF_VSOCK):
 *   vsock-peer listen PORT          accepts one connection, reads a line, answers
 *                                   "pong: LINE", closes
 *   vsock-peer connect CID PORT MSG connects, sends "MSG\n", prints what comes back until
 *                                   the peer closes
 *   vsock-peer echo PORT            accepts one connection and answers every line with
 *                                   "echo: LINE" until the peer closes
 *   vsock-peer dial CID PORT        connects to CID:PORT and answers every line as echo
 *                                   does, until the peer closes
 * Exit status 0 on success; a failure prints one line naming the step.
 */
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int die(const char *what)
{
	perror(what);
	return 1;
}

static int do_listen(unsigned int port)
{
	int s = socket(AF_VSOCK, SOCK_STREAM, 0);
	struct sockaddr_vm a = {
	    .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
	if (s < 0)
		return die("vsock-peer: socket");
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		return die("vsock-peer: bind");
	if (listen(s, 1) < 0)
		return die("vsock-peer: listen");
	printf("vsock-peer: listening on %u\n", port);
	fflush(stdout);
	int c = accept(s, NULL, NULL);
	if (c < 0)
		return die("vsock-peer: accept");
	char line[256];
	size_t n = 0;
	while (n < sizeof(line) - 1) {
		ssize_t r = read(c, line + n, 1);
		if (r <= 0 || line[n] == '\n')
			break;
		n++;
	}
	line[n] = 0;
	char reply[300];
	int len = snprintf(reply, sizeof(reply), "pong: %s\n", line);
	if (write(c, reply, (size_t)len) != len)
		return die("vsock-peer: write");
	close(c);
	close(s);
	return 0;
}

static int do_connect(unsigned int cid, unsigned int port, const char *msg)
{
	int s = socket(AF_VSOCK, SOCK_STREAM, 0);
	struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
	if (s < 0)
		return die("vsock-peer: socket");
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		return die("vsock-peer: connect");
	char out[300];
	int len = snprintf(out, sizeof(out), "%s\n", msg);
	if (write(s, out, (size_t)len) != len)
		return die("vsock-peer: write");
	char buf[256];
	ssize_t r;
	while ((r = read(s, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)r, stdout);
	if (r < 0)
		return die("vsock-peer: read");
	close(s);
	return 0;
}

/* Answers every line on c with "echo: LINE" until the peer closes; closes c. */
static int serve_echo(int c)
{
	char line[512];
	size_t n = 0;
	unsigned long lines = 0;
	for (;;) {
		ssize_t r = read(c, line + n, 1);
		if (r < 0)
			return die("vsock-peer: read");
		if (r == 0)
			break;
		if (line[n] != '\n' && n < sizeof(line) - 2) {
			n++;
			continue;
		}
		line[n + 1] = 0;
		char reply[600];
		int len = snprintf(reply, sizeof(reply), "echo: %s", line);
		if (write(c, reply, (size_t)len) != len)
			return die("vsock-peer: write");
		n = 0;
		lines++;
	}
	printf("vsock-peer: closed after %lu lines\n", lines);
	fflush(stdout);
	close(c);
	return 0;
}

static int do_echo(unsigned int port)
{
	int s = socket(AF_VSOCK, SOCK_STREAM, 0);
	struct sockaddr_vm a = {
	    .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
	if (s < 0)
		return die("vsock-peer: socket");
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 1) < 0)
		return die("vsock-peer: bind");
	printf("vsock-peer: echoing on %u\n", port);
	fflush(stdout);
	int c = accept(s, NULL, NULL);
	if (c < 0)
		return die("vsock-peer: accept");
	close(s);
	return serve_echo(c);
}

/* Connects to CID:PORT and echoes on that connection. */
static int do_dial(unsigned int cid, unsigned int port)
{
	int s = socket(AF_VSOCK, SOCK_STREAM, 0);
	struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
	if (s < 0)
		return die("vsock-peer: socket");
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		return die("vsock-peer: connect");
	printf("vsock-peer: dialed %u\n", port);
	fflush(stdout);
	return serve_echo(s);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "echo") == 0)
		return do_echo((unsigned int)strtoul(argv[2], NULL, 10));
	if (argc == 4 && strcmp(argv[1], "dial") == 0)
		return do_dial((unsigned int)strtoul(argv[2], NULL, 10),
			       (unsigned int)strtoul(argv[3], NULL, 10));
	if (argc == 3 && strcmp(argv[1], "listen") == 0)
		return do_listen((unsigned int)strtoul(argv[2], NULL, 10));
	if (argc == 5 && strcmp(argv[1], "connect") == 0)
		return do_connect((unsigned int)strtoul(argv[2], NULL, 10),
				  (unsigned int)strtoul(argv[3], NULL, 10), argv[4]);
	fprintf(
	    stderr,
	    "usage: vsock-peer listen PORT | echo PORT | dial CID PORT | connect CID PORT MSG\n");
	return 2;
}
