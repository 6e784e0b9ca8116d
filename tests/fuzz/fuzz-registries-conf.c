/* SPDX-License-Identifier: Apache-2.0 */
/*
 * registries.conf and its drop-ins as a hostile user writes them (CONTAINERS_REGISTRIES_CONF
 * points anywhere): the TOML subset parser (core/toml.c), then the short-name semantics over
 * what it accepted (shortnames.c), merged twice as two drop-ins would be, and the candidate
 * lists a short name gets from the result.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/toml.h"
#include "image/shortnames.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_candidates(char **v)
{
	/* Every candidate is a qualified name; the list is never empty. */
	if (!v || !v[0])
		__builtin_trap();
	for (char **p = v; *p; p++)
		if (kap_ref_is_short(*p))
			__builtin_trap();
	kap_strv_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct kap_toml *t = NULL;
	struct kapsel_error *err = NULL;
	if (kap_toml_parse(text, size, "fuzz.conf", &t, &err) < 0) {
		/* Every failure says why, on one line, and leaves nothing behind. */
		if (!err || !err->msg || !err->code || t || strchr(err->msg, '\n') ||
		    strncmp(err->msg, "fuzz.conf:", 10))
			__builtin_trap();
		kapsel_error_free(err);
		err = NULL;
	} else {
		if (err || !t || t->type != KAP_TOML_TABLE)
			__builtin_trap();
		kap_toml_free(t);
	}

	struct kap_registries_conf c = {0};
	for (int i = 0; i < 2; i++) {
		if (kap_registries_conf_parse(&c, text, size, "fuzz.conf", &err) < 0) {
			if (!err || !err->msg || strchr(err->msg, '\n'))
				__builtin_trap();
			kapsel_error_free(err);
			err = NULL;
		}
	}
	static const char *const names[] = {"demo", "demo:1",
					    "fedora@sha256:"
					    "0123456789abcdef0123456789abcdef0123456789abcdef"
					    "0123456789abcdef",
					    "a/b"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char **v = NULL;
		if (kap_shortname_local(&c, names[i], &v, NULL) == 0)
			check_candidates(v);
		const char *alias = NULL;
		if (kap_shortname_pull(&c, names[i], &v, &alias, &err) == 0)
			check_candidates(v);
		kapsel_error_free(err);
		err = NULL;
	}
	kap_registries_conf_clear(&c);
	return 0;
}
