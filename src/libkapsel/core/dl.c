/* SPDX-License-Identifier: Apache-2.0 */
#include <dlfcn.h>
#include <pthread.h>

#include "core/dl.h"
#include "core/error.h"

static pthread_mutex_t dl_lock = PTHREAD_MUTEX_INITIALIZER;

int kap_dl_bind(const char *soname, const char *package, void **handle,
		const struct kap_dl_sym *syms, size_t n, struct kapsel_error **err)
{
	int r = 0;
	pthread_mutex_lock(&dl_lock);
	if (*handle)
		goto out;
	void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		if (package)
			r = kap_error_plain(err, ENOENT, "load %s: %s (install Debian's %s)",
					    soname, dlerror(), package);
		else
			r = kap_error_plain(err, ENOENT, "load %s: %s", soname, dlerror());
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		void *p = dlsym(h, syms[i].name);
		if (!p) {
			dlclose(h);
			for (size_t k = 0; k < i; k++)
				*syms[k].slot = NULL;
			r = kap_error_plain(err, ENOENT, "%s: missing symbol %s", soname,
					    syms[i].name);
			goto out;
		}
		*syms[i].slot = p;
	}
	*handle = h;
out:
	pthread_mutex_unlock(&dl_lock);
	return r;
}
