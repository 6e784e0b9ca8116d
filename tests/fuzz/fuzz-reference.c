/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references typed by users or found in archives (RepoTags, ref.name annotations): every
 * input either fails with a message or parses into a canonical name that parses back to itself.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	struct kap_ref r;
	struct kapsel_error *err = NULL;
	if (kap_ref_parse(s, &r, &err) < 0) {
		if (!err || !err->msg || !err->code)
			__builtin_trap();
		kapsel_error_free(err);
		free(s);
		return 0;
	}
	if (err || !r.registry || !r.repository || (!r.tag && !r.digest))
		__builtin_trap();
	char *canon = kap_ref_string(&r);
	struct kap_ref again;
	if (!canon || kap_ref_parse(canon, &again, NULL) < 0)
		__builtin_trap();
	char *canon2 = kap_ref_string(&again);
	if (!canon2 || strcmp(canon, canon2))
		__builtin_trap();
	free(canon2);
	free(canon);
	kap_ref_clear(&again);
	kap_ref_clear(&r);
	free(s);
	return 0;
}
