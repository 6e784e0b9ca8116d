/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

__attribute__((visibility("default"))) void kapsel_error_free(struct kapsel_error *err)
{
	if (!err)
		return;
	free(err->msg);
	free(err);
}

__attribute__((format(printf, 4, 0))) static int
set_error(struct kapsel_error **err, int errnum, bool with_strerror, const char *fmt, va_list ap)
{
	if (errnum <= 0)
		errnum = EINVAL;
	if (!err || *err)
		return -errnum;
	struct kapsel_error *e = calloc(1, sizeof(*e));
	char *msg = NULL;
	if (!e)
		return -errnum;
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	if (msg && with_strerror) {
		char *full = NULL;
		if (asprintf(&full, "%s: %s", msg, strerror(errnum)) >= 0) {
			free(msg);
			msg = full;
		}
	}
	e->code = errnum;
	e->msg = msg ? msg : strdup(strerror(errnum));
	*err = e;
	return -errnum;
}

int kap_error(struct kapsel_error **err, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = set_error(err, errnum, true, fmt, ap);
	va_end(ap);
	return r;
}

int kap_error_plain(struct kapsel_error **err, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = set_error(err, errnum, false, fmt, ap);
	va_end(ap);
	return r;
}

int kap_error_wrap(struct kapsel_error **err, const char *fmt, ...)
{
	if (!err || !*err)
		return -EINVAL;
	char *prefix = NULL, *full = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&prefix, fmt, ap);
	va_end(ap);
	if (n >= 0 && asprintf(&full, "%s: %s", prefix, (*err)->msg ? (*err)->msg : "") >= 0) {
		free((*err)->msg);
		(*err)->msg = full;
	}
	free(prefix);
	return -(*err)->code;
}
