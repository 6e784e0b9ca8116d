/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: text or runc-style JSON lines ({"level","msg","time"}) to stderr or a file. */
#pragma once
#include <stdbool.h>
#include <kapsel/error.h>

enum kapsel_log_level {
	KAPSEL_LOG_ERROR,
	KAPSEL_LOG_WARNING,
	KAPSEL_LOG_INFO,
	KAPSEL_LOG_DEBUG,
};

enum kapsel_log_format {
	KAPSEL_LOG_TEXT,
	KAPSEL_LOG_JSON,
};

/* file NULL: stderr. Returns -errno when the file cannot be opened. */
int kapsel_log_init(const char *file, enum kapsel_log_format format, bool debug,
		    struct kapsel_error **err);
void kapsel_log(enum kapsel_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Where errors go when the log is a file: also to stderr, so a terminal user sees them. */
void kapsel_log_error_exit(const struct kapsel_error *err);

/*
 * Re-execute the calling program through a read-only view of its binary (a detached read-only
 * bind mount made in scratch_dir, else a sealed memfd copy) unless it already runs from one:
 * the CVE-2019-5736 defence for commands that enter containers. Returns only on failure.
 */
int kapsel_runtime_seal(char **argv, const char *scratch_dir, struct kapsel_error **err);
