/* SPDX-License-Identifier: Apache-2.0 */
/* The error object every kapsel call reports through. */
#pragma once

/* Set once, where the failing call happened; msg names the object ("mount proc on /proc: ..."). */
struct kapsel_error {
	int code; /* positive errno */
	char *msg;
};

void kapsel_error_free(struct kapsel_error *err);
