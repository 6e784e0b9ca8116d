/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build cache: <store>/build-cache/<key hex> names the layer a step made, keyed by
 * everything that decides its content (build.c computes the key: the parent chain, the
 * instruction text, the ARG and ENV values in scope, the digest of the files COPY reads).
 * An entry whose blob is gone (pruned) is a miss, so the cache never outlives the store's
 * content; entries are written atomically and read as hostile JSON like any store file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build/build.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"

#define CACHE_DIR "build-cache"

static int cache_dir(struct kap_store *s, bool create, struct kapsel_error **err)
{
	cleanup_close int sfd = open(kap_store_path(s), O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return kap_error(err, errno, "open %s", kap_store_path(s));
	if (create && mkdirat(sfd, CACHE_DIR, 0700) < 0 && errno != EEXIST)
		return kap_error(err, errno, "create %s/%s", kap_store_path(s), CACHE_DIR);
	int fd = openat(sfd, CACHE_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return fd;
}

int kap_build_cache_get(struct kap_store *s, const char *key, struct kap_built_layer *out)
{
	if (kap_digest_validate(key, "key", NULL) < 0)
		return -EINVAL;
	cleanup_close int dfd = cache_dir(s, false, NULL);
	if (dfd < 0)
		return -ENOENT;
	cleanup_free char *buf = NULL;
	size_t len;
	if (kap_fs_read_file(dfd, key + 7, 4096, &buf, &len, NULL) < 0)
		return -ENOENT;
	cleanup_json struct kap_json *j = NULL;
	cleanup_free char *digest = NULL, *diff_id = NULL;
	int64_t size;
	if (kap_json_parse(buf, len, "cache entry", &j, NULL) < 0 ||
	    kap_json_read_string(j, "cache", "digest", &digest, NULL) < 0 ||
	    kap_json_read_string(j, "cache", "diff_id", &diff_id, NULL) < 0 ||
	    kap_json_read_int64(j, "cache", "size", &size, NULL) < 0 || !digest || !diff_id ||
	    kap_digest_validate(digest, "digest", NULL) < 0 ||
	    kap_digest_validate(diff_id, "diff_id", NULL) < 0 || size < 0)
		return -ENOENT;
	if (!kap_store_has_blob(s, digest))
		return -ENOENT;
	memcpy(out->digest, digest, KAP_DIGEST_LEN + 1);
	memcpy(out->diff_id, diff_id, KAP_DIGEST_LEN + 1);
	out->size = size;
	struct kap_json *z = kap_json_get(j, "zstd");
	out->zstd = z && kap_json_type(z) == KAP_JSON_BOOL && kap_json_bool(z);
	return 0;
}

int kap_build_cache_put(struct kap_store *s, const char *key, const struct kap_built_layer *l,
			struct kapsel_error **err)
{
	cleanup_close int dfd = cache_dir(s, true, err);
	if (dfd < 0)
		return dfd;
	char text[256];
	int n =
	    snprintf(text, sizeof(text), "{\"digest\":\"%s\",\"diff_id\":\"%s\",\"size\":%lld%s}",
		     l->digest, l->diff_id, (long long)l->size, l->zstd ? ",\"zstd\":true" : "");
	return kap_fs_write_atomic(dfd, key + 7, text, (size_t)n, 0600, false, err);
}
