/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kapsel's JSON layer: the only interface to json-c (core/json.c is the only file that includes
 * it). Readers get typed accessors that report the JSON path of a bad field; writers build
 * documents and serialise them.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

struct kap_json; /* a json-c object; NULL is JSON null / absent */

enum kap_json_type {
	KAP_JSON_NULL,
	KAP_JSON_BOOL,
	KAP_JSON_INT,
	KAP_JSON_DOUBLE,
	KAP_JSON_STRING,
	KAP_JSON_ARRAY,
	KAP_JSON_OBJECT,
};

/* Parse with a nesting limit (hostile input). what names the source in errors. */
int kap_json_parse(const char *buf, size_t len, const char *what, struct kap_json **out,
		   struct kapsel_error **err);
int kap_json_parse_file(const char *path, struct kap_json **out, struct kapsel_error **err);
void kap_json_put(struct kap_json *j);
static inline void kap_json_putp(struct kap_json **j)
{
	kap_json_put(*j);
}
#define cleanup_json __attribute__((cleanup(kap_json_putp)))

enum kap_json_type kap_json_type(const struct kap_json *j);
const char *kap_json_type_name(enum kap_json_type t);
/* Object member or NULL. */
struct kap_json *kap_json_get(const struct kap_json *obj, const char *key);
size_t kap_json_array_len(const struct kap_json *arr);
struct kap_json *kap_json_array_at(const struct kap_json *arr, size_t i);
/* Iterate an object's members: for (it = kap_json_iter(o); kap_json_iter_next(&it, &k, &v);) */
struct kap_json_iter {
	void *priv[4];
};
struct kap_json_iter kap_json_iter(const struct kap_json *obj);
bool kap_json_iter_next(struct kap_json_iter *it, const char **key, struct kap_json **val);

/*
 * Typed readers of member `key` of `obj`; `path` is the JSON path of obj ("process.user").
 * Absent members leave *out untouched and return 0 (found=false); type errors return -EINVAL
 * with "<path>.<key>: expected <type>".
 */
int kap_json_read_string(const struct kap_json *obj, const char *path, const char *key, char **out,
			 struct kapsel_error **err);
int kap_json_read_bool(const struct kap_json *obj, const char *path, const char *key, bool *out,
		       struct kapsel_error **err);
int kap_json_read_int64(const struct kap_json *obj, const char *path, const char *key, int64_t *out,
			struct kapsel_error **err);
int kap_json_read_uint64(const struct kap_json *obj, const char *path, const char *key,
			 uint64_t *out, struct kapsel_error **err);
/* Array of strings into a NULL-terminated vector. */
int kap_json_read_strv(const struct kap_json *obj, const char *path, const char *key, char ***out,
		       struct kapsel_error **err);
/* Member must be of type t (when present); returns it or NULL (absent). */
int kap_json_read_member(const struct kap_json *obj, const char *path, const char *key,
			 enum kap_json_type t, struct kap_json **out, struct kapsel_error **err);

/* Value helpers for already-fetched nodes. */
const char *kap_json_string(const struct kap_json *j);
int64_t kap_json_int64(const struct kap_json *j);
uint64_t kap_json_uint64(const struct kap_json *j);
bool kap_json_bool(const struct kap_json *j);

/* Writers. All return NULL only on ENOMEM. */
struct kap_json *kap_json_new_object(void);
struct kap_json *kap_json_new_array(void);
struct kap_json *kap_json_new_string(const char *s);
struct kap_json *kap_json_new_int64(int64_t v);
/* Above INT64_MAX too (rlimits' RLIM_INFINITY is UINT64_MAX in config.json). */
struct kap_json *kap_json_new_uint64(uint64_t v);
struct kap_json *kap_json_new_bool(bool v);
/* Takes ownership of val. */
void kap_json_set(struct kap_json *obj, const char *key, struct kap_json *val);
void kap_json_append(struct kap_json *arr, struct kap_json *val);
struct kap_json *kap_json_get_ref(struct kap_json *j); /* +1 reference */
/* Serialise; pretty adds two-space indentation. Caller frees. */
char *kap_json_dump(const struct kap_json *j, bool pretty);
/* A JSON string literal (with quotes) for s. Caller frees. */
char *kap_json_quote(const char *s);
