/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A hostile registry's WWW-Authenticate header (RFC 7235 §4.1): the challenge parser, then the
 * token URL built from whatever it accepted (realm, service and scope are percent-encoded into
 * a query). Also the auth.json "auth" field decoder, which sees user-edited bytes.
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

	struct kap_auth_challenge c = {0};
	struct kapsel_error *err = NULL;
	if (kap_auth_challenge_parse(s, &c, &err) < 0) {
		/* Every failure must say why, and leave nothing behind. */
		if (!err || !err->msg || !err->code || c.scheme)
			__builtin_trap();
		kapsel_error_free(err);
	} else {
		if (err || !c.scheme || !*c.scheme)
			__builtin_trap();
		char *url = kap_registry_token_url(&c, "repository:a/b:pull");
		if (url && (!c.realm || strncmp(url, c.realm, strlen(c.realm))))
			__builtin_trap();
		free(url);
		kap_auth_challenge_clear(&c);
	}

	char *plain = NULL;
	size_t len = 0;
	if (kap_base64_decode(s, &plain, &len) == 0) {
		char *again = kap_base64_encode(plain, len);
		free(again);
		free(plain);
	}
	free(s);
	return 0;
}
