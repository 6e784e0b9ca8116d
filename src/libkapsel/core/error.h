/* SPDX-License-Identifier: Apache-2.0 */
#pragma once
#include <errno.h>
#include <kapsel/error.h>

/*
 * kap_error(err, errno, fmt...) sets *err (if err and *err is still NULL) and returns -errno.
 * The message is "<fmt>: strerror(errno)" when errno != 0 and no ": " suffix is wanted use
 * kap_error_plain. Usage: return kap_error(err, errno, "open %s", path);
 */
int kap_error(struct kapsel_error **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int kap_error_plain(struct kapsel_error **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix an existing error with context: "create foo: <old>". Returns -code. */
int kap_error_wrap(struct kapsel_error **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
