/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"

/* Deep enough for any real config.json or manifest, shallow enough to bound recursion. */
#define KAP_JSON_MAX_DEPTH 64

#define JO(j) ((struct json_object *)(j))
#define KJ(j) ((struct kap_json *)(j))

int kap_json_parse(const char *buf, size_t len, const char *what, struct kap_json **out,
		   struct kapsel_error **err)
{
	struct json_tokener *tok = json_tokener_new_ex(KAP_JSON_MAX_DEPTH);
	if (!tok)
		return kap_error(err, ENOMEM, "parse %s", what);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	if (len > INT32_MAX) {
		json_tokener_free(tok);
		return kap_error_plain(err, EFBIG, "%s: document too large", what);
	}
	struct json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	if (!o && jerr == json_tokener_continue)
		jerr = json_tokener_error_parse_eof;
	if (o && jerr == json_tokener_success && (size_t)json_tokener_get_parse_end(tok) < len) {
		/* Trailing bytes: only whitespace is allowed. */
		for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
			if (!strchr(" \t\r\n", buf[i])) {
				json_object_put(o);
				json_tokener_free(tok);
				return kap_error_plain(
				    err, EINVAL, "%s: invalid JSON: trailing data at offset %zu",
				    what, i);
			}
		}
	}
	if (!o || jerr != json_tokener_success) {
		size_t off = json_tokener_get_parse_end(tok);
		json_object_put(o);
		json_tokener_free(tok);
		return kap_error_plain(err, EINVAL, "%s: invalid JSON at offset %zu: %s", what, off,
				       json_tokener_error_desc(jerr));
	}
	json_tokener_free(tok);
	*out = KJ(o);
	return 0;
}

int kap_json_parse_file(const char *path, struct kap_json **out, struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = kap_fs_read_file(AT_FDCWD, path, 16 << 20, &buf, &len, err);
	if (r < 0)
		return r;
	return kap_json_parse(buf, len, path, out, err);
}

void kap_json_put(struct kap_json *j)
{
	json_object_put(JO(j));
}

enum kap_json_type kap_json_type(const struct kap_json *j)
{
	switch (json_object_get_type(JO(j))) {
	case json_type_boolean:
		return KAP_JSON_BOOL;
	case json_type_int:
		return KAP_JSON_INT;
	case json_type_double:
		return KAP_JSON_DOUBLE;
	case json_type_string:
		return KAP_JSON_STRING;
	case json_type_array:
		return KAP_JSON_ARRAY;
	case json_type_object:
		return KAP_JSON_OBJECT;
	default:
		return KAP_JSON_NULL;
	}
}

const char *kap_json_type_name(enum kap_json_type t)
{
	static const char *const names[] = {"null",   "boolean", "integer", "number",
					    "string", "array",	 "object"};
	return names[t];
}

struct kap_json *kap_json_get(const struct kap_json *obj, const char *key)
{
	struct json_object *v = NULL;
	if (!obj || !json_object_is_type(JO(obj), json_type_object))
		return NULL;
	if (!json_object_object_get_ex(JO(obj), key, &v))
		return NULL;
	return KJ(v);
}

size_t kap_json_array_len(const struct kap_json *arr)
{
	if (!arr || !json_object_is_type(JO(arr), json_type_array))
		return 0;
	return json_object_array_length(JO(arr));
}

struct kap_json *kap_json_array_at(const struct kap_json *arr, size_t i)
{
	return KJ(json_object_array_get_idx(JO(arr), i));
}

struct kap_json_iter kap_json_iter(const struct kap_json *obj)
{
	struct kap_json_iter it = {0};
	if (obj && json_object_is_type(JO(obj), json_type_object))
		it.priv[0] = json_object_get_object(JO(obj))->head;
	return it;
}

bool kap_json_iter_next(struct kap_json_iter *it, const char **key, struct kap_json **val)
{
	struct lh_entry *e = it->priv[0];
	if (!e)
		return false;
	*key = lh_entry_k(e);
	*val = KJ(lh_entry_v(e));
	it->priv[0] = e->next;
	return true;
}

static int type_error(struct kapsel_error **err, const char *path, const char *key,
		      enum kap_json_type want)
{
	return kap_error_plain(err, EINVAL, "%s%s%s: expected %s", path ? path : "",
			       path && *path ? "." : "", key, kap_json_type_name(want));
}

int kap_json_read_member(const struct kap_json *obj, const char *path, const char *key,
			 enum kap_json_type t, struct kap_json **out, struct kapsel_error **err)
{
	struct kap_json *v = kap_json_get(obj, key);
	*out = NULL;
	if (!v)
		return 0;
	enum kap_json_type have = kap_json_type(v);
	if (have != t && !(t == KAP_JSON_DOUBLE && have == KAP_JSON_INT))
		return type_error(err, path, key, t);
	*out = v;
	return 1;
}

int kap_json_read_string(const struct kap_json *obj, const char *path, const char *key, char **out,
			 struct kapsel_error **err)
{
	struct kap_json *v;
	int r = kap_json_read_member(obj, path, key, KAP_JSON_STRING, &v, err);
	if (r <= 0)
		return r;
	char *s = strdup(json_object_get_string(JO(v)));
	if (!s)
		return kap_error(err, ENOMEM, "%s.%s", path, key);
	free(*out);
	*out = s;
	return 1;
}

int kap_json_read_bool(const struct kap_json *obj, const char *path, const char *key, bool *out,
		       struct kapsel_error **err)
{
	struct kap_json *v;
	int r = kap_json_read_member(obj, path, key, KAP_JSON_BOOL, &v, err);
	if (r <= 0)
		return r;
	*out = json_object_get_boolean(JO(v));
	return 1;
}

int kap_json_read_int64(const struct kap_json *obj, const char *path, const char *key, int64_t *out,
			struct kapsel_error **err)
{
	struct kap_json *v;
	int r = kap_json_read_member(obj, path, key, KAP_JSON_INT, &v, err);
	if (r <= 0)
		return r;
	errno = 0;
	int64_t x = json_object_get_int64(JO(v));
	/* json-c stores numbers above INT64_MAX as uint64 and clamps get_int64. */
	if (x == INT64_MAX && json_object_get_uint64(JO(v)) > (uint64_t)INT64_MAX)
		return kap_error_plain(err, ERANGE, "%s.%s: value out of range", path, key);
	*out = x;
	return 1;
}

int kap_json_read_uint64(const struct kap_json *obj, const char *path, const char *key,
			 uint64_t *out, struct kapsel_error **err)
{
	struct kap_json *v;
	int r = kap_json_read_member(obj, path, key, KAP_JSON_INT, &v, err);
	if (r <= 0)
		return r;
	if (json_object_get_int64(JO(v)) < 0)
		return kap_error_plain(err, ERANGE, "%s.%s: expected a non-negative integer", path,
				       key);
	*out = json_object_get_uint64(JO(v));
	return 1;
}

int kap_json_read_strv(const struct kap_json *obj, const char *path, const char *key, char ***out,
		       struct kapsel_error **err)
{
	struct kap_json *v;
	int r = kap_json_read_member(obj, path, key, KAP_JSON_ARRAY, &v, err);
	if (r <= 0)
		return r;
	size_t n = kap_json_array_len(v);
	char **vec = calloc(n + 1, sizeof(char *));
	if (!vec)
		return kap_error(err, ENOMEM, "%s.%s", path, key);
	for (size_t i = 0; i < n; i++) {
		struct kap_json *e = kap_json_array_at(v, i);
		if (kap_json_type(e) != KAP_JSON_STRING) {
			kap_strvp(&vec);
			return kap_error_plain(err, EINVAL, "%s.%s[%zu]: expected string", path,
					       key, i);
		}
		vec[i] = strdup(json_object_get_string(JO(e)));
		if (!vec[i]) {
			kap_strvp(&vec);
			return kap_error(err, ENOMEM, "%s.%s", path, key);
		}
	}
	kap_strvp(out);
	*out = vec;
	return 1;
}

const char *kap_json_string(const struct kap_json *j)
{
	return json_object_get_string(JO(j));
}
int64_t kap_json_int64(const struct kap_json *j)
{
	return json_object_get_int64(JO(j));
}
uint64_t kap_json_uint64(const struct kap_json *j)
{
	return json_object_get_uint64(JO(j));
}
bool kap_json_bool(const struct kap_json *j)
{
	return json_object_get_boolean(JO(j));
}

struct kap_json *kap_json_new_object(void)
{
	return KJ(json_object_new_object());
}
struct kap_json *kap_json_new_array(void)
{
	return KJ(json_object_new_array());
}
struct kap_json *kap_json_new_string(const char *s)
{
	return KJ(json_object_new_string(s ? s : ""));
}
struct kap_json *kap_json_new_int64(int64_t v)
{
	return KJ(json_object_new_int64(v));
}
struct kap_json *kap_json_new_uint64(uint64_t v)
{
	return KJ(json_object_new_uint64(v));
}
struct kap_json *kap_json_new_bool(bool v)
{
	return KJ(json_object_new_boolean(v));
}
void kap_json_set(struct kap_json *obj, const char *key, struct kap_json *val)
{
	json_object_object_add(JO(obj), key, JO(val));
}
void kap_json_append(struct kap_json *arr, struct kap_json *val)
{
	json_object_array_add(JO(arr), JO(val));
}
struct kap_json *kap_json_get_ref(struct kap_json *j)
{
	return KJ(json_object_get(JO(j)));
}

char *kap_json_dump(const struct kap_json *j, bool pretty)
{
	int flags =
	    JSON_C_TO_STRING_NOSLASHESCAPE |
	    (pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN);
	const char *s = json_object_to_json_string_ext(JO(j), flags);
	return s ? strdup(s) : NULL;
}

char *kap_json_quote(const char *s)
{
	struct json_object *o = json_object_new_string(s ? s : "");
	if (!o)
		return NULL;
	char *r = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return r;
}
