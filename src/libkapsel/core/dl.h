/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lazy binding of the heavy optional libraries (libcurl, libarchive, libcrypto, libzstd, ISA-L).
 * Linking them costs every kapsel process ~5 ms and ~10 MiB RSS at start (measured: a trivial
 * program linked against them, 200 runs); the container start path must not pay that. Image code
 * declares a table of typed function pointers and binds it on first use:
 *
 *   static struct { void *h; __typeof__(curl_easy_init) *easy_init; } curl;
 *   if (!curl.h && (r = kap_dl_bind("libcurl.so.4", &curl.h, syms, n, err)) < 0) ...
 */
#pragma once
#include <stddef.h>

#include <kapsel/error.h>

struct kap_dl_sym {
	const char *name;
	void **slot; /* where to store the address */
};

#define KAP_DL_SYM(name, slot)                                                                     \
	{                                                                                          \
		name, (void **)&(slot)                                                             \
	}

/*
 * dlopen(soname) once and resolve every symbol; on failure nothing is bound and the error names
 * the library (and the Debian package hint, when given in `package`).
 */
int kap_dl_bind(const char *soname, const char *package, void **handle,
		const struct kap_dl_sym *syms, size_t n, struct kapsel_error **err);
