/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Two sinks: text ("time=... level=... msg=...", logrus style as runc writes it) and JSON
 * lines {"level":"error","msg":"...","time":"RFC3339"}. containerd's shim and podman read the
 * last JSON line of --log to show the user why the runtime failed.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"

#define API __attribute__((visibility("default")))

static int log_fd = STDERR_FILENO;
static enum kapsel_log_format log_format = KAPSEL_LOG_TEXT;
int kap_log_debug_enabled;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

API int kapsel_log_init(const char *file, enum kapsel_log_format format, bool debug,
			struct kapsel_error **err)
{
	log_format = format;
	kap_log_debug_enabled = debug;
	if (file && *file) {
		int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return kap_error(err, errno, "open log file %s", file);
		log_fd = fd;
	}
	return 0;
}

int kap_log_fd(void)
{
	return log_fd;
}

static void write_line(int level, const char *msg)
{
	char ts[64];
	struct timespec now;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof(ts) - n, ".%09ldZ", now.tv_nsec);

	char *line = NULL;
	int len;
	if (log_format == KAPSEL_LOG_JSON) {
		char *esc = kap_json_quote(msg);
		len = asprintf(&line, "{\"level\":\"%s\",\"msg\":%s,\"time\":\"%s\"}\n",
			       level_names[level], esc ? esc : "\"\"", ts);
		free(esc);
	} else if (log_fd == STDERR_FILENO) {
		if (level == KAPSEL_LOG_ERROR)
			len = asprintf(&line, "kapsel: %s\n", msg);
		else
			len = asprintf(&line, "kapsel: %s: %s\n", level_names[level], msg);
	} else {
		char *esc = kap_json_quote(msg);
		len = asprintf(&line, "time=\"%s\" level=%s msg=%s\n", ts, level_names[level],
			       esc ? esc : "\"\"");
		free(esc);
	}
	if (len < 0)
		return;
	/* One write(2) per line so concurrent writers (shim, runtime) never interleave lines. */
	ssize_t r = write(log_fd, line, (size_t)len);
	(void)r;
	free(line);
}

API void kapsel_log(enum kapsel_log_level level, const char *fmt, ...)
{
	if (level == KAPSEL_LOG_DEBUG && !kap_log_debug_enabled)
		return;
	char *msg = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	write_line(level, msg);
	free(msg);
}

API void kapsel_log_error_exit(const struct kapsel_error *err)
{
	const char *msg = err && err->msg ? err->msg : "unknown error";
	write_line(KAPSEL_LOG_ERROR, msg);
	/* runc prints the fatal error to stderr even when logging to a file. */
	if (log_fd != STDERR_FILENO)
		dprintf(STDERR_FILENO, "kapsel: %s\n", msg);
}
