/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Containerfiles come with build contexts from anywhere: every input either fails with a
 * one-line message naming file:line, or parses into instructions whose words all expand (or
 * fail with a message) within the expansion limits.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "build/build.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kap_containerfile cf;
	struct kapsel_error *err = NULL;
	if (kap_cf_parse("F", (const char *)data, size, &cf, &err) < 0) {
		if (!err || !err->msg || !err->code || strncmp(err->msg, "F", 1) != 0 ||
		    strchr(err->msg, '\n'))
			__builtin_trap();
		kapsel_error_free(err);
		return 0;
	}
	if (err || cf.n == 0)
		__builtin_trap();
	/* Expand every word against variables taken from the file itself (ENV/ARG values). */
	char *vars[] = {"A=1", "B=${A}", "HOME=/root", NULL};
	for (size_t i = 0; i < cf.n; i++) {
		const struct kap_cf_instr *in = &cf.instrs[i];
		if (!in->text || in->line == 0)
			__builtin_trap();
		for (size_t j = 0; j < in->n_args; j++) {
			if (!in->args[j])
				continue; /* ARG without a default */
			char *out = NULL;
			struct kapsel_error *e2 = NULL;
			if (kap_cf_expand(in->args[j], cf.escape, vars, &out, &e2) < 0) {
				if (!e2 || !e2->msg)
					__builtin_trap();
				kapsel_error_free(e2);
				continue;
			}
			free(out);
		}
	}
	kap_containerfile_clear(&cf);
	return 0;
}
