/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <kapsel/registry.h>

#include "commands.h"

#define PASSWORD_MAX 4096

/* Read a password from stream: all of it (--password-stdin) or one line, without the newline. */
static char *read_password(FILE *f, bool one_line)
{
	char *buf = calloc(1, PASSWORD_MAX + 1);
	size_t n = 0;
	int ch;
	if (!buf)
		return NULL;
	while (n < PASSWORD_MAX && (ch = fgetc(f)) != EOF) {
		if (one_line && ch == '\n')
			break;
		buf[n++] = (char)ch;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return buf;
}

/* Prompt on the terminal with echo off. */
static char *prompt_password(void)
{
	FILE *tty = fopen("/dev/tty", "r+");
	if (!tty)
		return NULL;
	struct termios old, quiet;
	bool saved = tcgetattr(fileno(tty), &old) == 0;
	if (saved) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
	}
	fputs("Password: ", tty);
	fflush(tty);
	char *pw = read_password(tty, true);
	if (saved)
		tcsetattr(fileno(tty), TCSAFLUSH, &old);
	fputc('\n', tty);
	fclose(tty);
	return pw;
}

enum { OPT_TLS_VERIFY = 0x100, OPT_AUTHFILE, OPT_PASSWORD_STDIN, OPT_INSECURE };

static const struct option options[] = {
    {"username", required_argument, NULL, 'u'},
    {"password", required_argument, NULL, 'p'},
    {"password-stdin", no_argument, NULL, OPT_PASSWORD_STDIN},
    {"authfile", required_argument, NULL, OPT_AUTHFILE},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"tls-verify", optional_argument, NULL, OPT_TLS_VERIFY},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int login_cmd(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_login_options o = {0};
	const char *user = NULL, *password_arg = NULL;
	bool from_stdin = false;
	struct kapsel_error *err = NULL;
	int c;

	while ((c = cli_getopt_cmd(&cmd_login, argc, argv)) != -1) {
		switch (c) {
		case 'u':
			user = optarg;
			break;
		case 'p':
			password_arg = optarg;
			break;
		case OPT_PASSWORD_STDIN:
			from_stdin = true;
			break;
		case OPT_AUTHFILE:
			o.auth_file = optarg;
			break;
		case OPT_INSECURE:
			o.insecure = true;
			break;
		case OPT_TLS_VERIFY:
			if (!optarg || !strcmp(optarg, "true"))
				o.insecure = false;
			else if (!strcmp(optarg, "false"))
				o.insecure = true;
			else
				return cli_fail("login: --tls-verify: expected true or false, not "
						"\"%s\"",
						optarg);
			break;
		default:
			return cli_opt_status(c);
		}
	}
	if (!cli_nargs(&cmd_login, argc - optind, 1, 1, "registry"))
		return cli_fail_status();
	if (!user)
		return cli_fail("login: --username (-u) is required");
	if (password_arg && from_stdin)
		return cli_fail("login: --password and --password-stdin exclude each other");

	char *password;
	if (password_arg)
		password = strdup(password_arg);
	else if (from_stdin)
		password = read_password(stdin, false);
	else if (isatty(STDIN_FILENO))
		password = prompt_password();
	else
		return cli_fail("login: no password: use --password-stdin");
	if (!password)
		return cli_fail("login: cannot read the password");

	int r = kapsel_login(argv[optind], user, password, &o, &err);
	explicit_bzero(password, strlen(password));
	free(password);
	if (r < 0)
		return cli_fail_err(err);
	puts("Login Succeeded!");
	return 0;
}

const struct cli_command cmd_login = {
    .podman_status = true,
    .name = "login",
    .shortopts = "u:p:h",
    .options = options,
    .summary = "log in to a registry (store its credentials)",
    .run = login_cmd,
    .usage = "Usage: kapsel login [options] -u USER REGISTRY\n"
	     "\n"
	     "Check USER's password against REGISTRY and store the credentials (mode 0600) in\n"
	     "the containers auth file podman and skopeo also read: $REGISTRY_AUTH_FILE, else\n"
	     "${XDG_RUNTIME_DIR}/containers/auth.json.\n"
	     "\n"
	     "Options:\n"
	     "  --username, -u USER     user name\n"
	     "  --password-stdin        read the password from standard input\n"
	     "  --password, -p PASS     the password (visible to other users: prefer stdin)\n"
	     "  --authfile FILE         credentials file to write\n"
	     "  --tls-verify=false      allow plain HTTP and unverified TLS (also: --insecure)\n"
	     "  --help, -h              print this help\n",
};
