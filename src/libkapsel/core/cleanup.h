/* SPDX-License-Identifier: Apache-2.0 */
/* Scope-bound ownership: __attribute__((cleanup)) helpers, as crun and bubblewrap use them. */
#pragma once
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <kapsel/error.h>

static inline void kap_freep(void *p)
{
	free(*(void **)p);
}
static inline void kap_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
static inline void kap_fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}
static inline void kap_closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}
static inline void kap_errorp(struct kapsel_error **e)
{
	kapsel_error_free(*e);
}
/* A NULL-terminated array of strings. */
static inline void kap_strvp(char ***v)
{
	if (!*v)
		return;
	for (char **p = *v; *p; p++)
		free(*p);
	free(*v);
}

#define cleanup_free   __attribute__((cleanup(kap_freep)))
#define cleanup_close  __attribute__((cleanup(kap_closep)))
#define cleanup_fclose __attribute__((cleanup(kap_fclosep)))
#define cleanup_dir    __attribute__((cleanup(kap_closedirp)))
#define cleanup_error  __attribute__((cleanup(kap_errorp)))
#define cleanup_strv   __attribute__((cleanup(kap_strvp)))

#define steal_ptr(p)                                                                               \
	({                                                                                         \
		__typeof__(p) _tmp = (p);                                                          \
		(p) = NULL;                                                                        \
		_tmp;                                                                              \
	})
#define steal_fd(fd)                                                                               \
	({                                                                                         \
		int _tmp = (fd);                                                                   \
		(fd) = -EBADF;                                                                     \
		_tmp;                                                                              \
	})

#define KAP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
