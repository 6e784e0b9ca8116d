/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Short-name resolution, containers-registries.conf(5) "SHORT-NAME RESOLUTION" and
 * containers-registries.conf.d(5). The files are TOML (core/toml.c); only the keys that decide
 * short names are read here (the insecure flags stay with registry.c). Values are checked as
 * containers/image checks them: an alias maps a short name without tag or digest to a fully
 * qualified name without tag or digest; a search registry is a host[:port].
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/toml.h"
#include "image/image.h"
#include "image/shortnames.h"

#define CONF_MAX    (1 << 20)
#define SYSTEM_CONF "/etc/containers/registries.conf"
#define SYSTEM_DIR  "/etc/containers/registries.conf.d"

void kap_strv_free(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

static void alias_clear(struct kap_alias *a)
{
	free(a->name);
	free(a->value);
	free(a->where);
}

void kap_registries_conf_clear(struct kap_registries_conf *c)
{
	kap_strv_free(c->search);
	free(c->search_where);
	free(c->mode_where);
	for (size_t i = 0; i < c->n_aliases; i++)
		alias_clear(&c->aliases[i]);
	free(c->aliases);
	memset(c, 0, sizeof(*c));
}

bool kap_ref_is_short(const char *name)
{
	const char *slash = strchr(name, '/');
	if (!slash)
		return true;
	size_t n = (size_t)(slash - name);
	if (memchr(name, '.', n) || memchr(name, ':', n) ||
	    (n == 9 && !strncmp(name, "localhost", 9)))
		return false;
	/* reference.go splitDockerDomain: an upper-case first component is a host too. */
	for (size_t i = 0; i < n; i++)
		if (name[i] >= 'A' && name[i] <= 'Z')
			return false;
	return true;
}

/* Where the tag or digest of a name starts (its end when it has neither). */
static size_t name_len(const char *name)
{
	const char *at = strchr(name, '@');
	size_t end = at ? (size_t)(at - name) : strlen(name);
	const char *slash = memrchr(name, '/', end);
	const char *colon =
	    memrchr(slash ? slash : name, ':', end - (size_t)(slash ? slash - name : 0));
	return colon ? (size_t)(colon - name) : end;
}

static int check_alias(const char *where, const char *key, const char *value,
		       struct kapsel_error **err)
{
	struct kap_ref ref;
	cleanup_error struct kapsel_error *e = NULL;
	if (!kap_ref_is_short(key) || name_len(key) != strlen(key) ||
	    kap_ref_parse(key, &ref, &e) < 0)
		return kap_error_plain(err, EINVAL,
				       "%s: alias \"%s\": the key must be a short name without "
				       "registry, tag or digest",
				       where, key);
	kap_ref_clear(&ref);
	if (kap_ref_is_short(value) || name_len(value) != strlen(value) ||
	    kap_ref_parse(value, &ref, &e) < 0)
		return kap_error_plain(
		    err, EINVAL,
		    "%s: alias \"%s\" = \"%s\": the value must be a registry and "
		    "repository without tag or digest",
		    where, key, value);
	kap_ref_clear(&ref);
	return 0;
}

/* host[:port] as a reference's domain: "HOST/x" must parse with HOST as its registry. */
static bool registry_ok(const char *reg)
{
	if (!*reg || strchr(reg, '/') || strchr(reg, '@'))
		return false;
	cleanup_free char *probe = NULL;
	if (asprintf(&probe, "%s/x", reg) < 0)
		return false;
	struct kap_ref ref;
	if (kap_ref_parse(probe, &ref, NULL) < 0)
		return false;
	bool ok = !kap_ref_is_short(probe) && !strcmp(ref.registry, reg);
	kap_ref_clear(&ref);
	return ok;
}

/* The strings of a TOML array value, or an error naming key and line. */
static int string_array(const char *file, const char *key, const struct kap_toml *v, char ***out,
			size_t *n, struct kapsel_error **err)
{
	if (v->type != KAP_TOML_ARRAY)
		return kap_error_plain(err, EINVAL,
				       "%s:%u: %s: expected an array of strings, not %s", file,
				       v->line, key, kap_toml_type_name(v->type));
	cleanup_strv char **list = calloc(v->n + 1, sizeof(char *));
	if (!list)
		return kap_error(err, ENOMEM, "%s", file);
	for (size_t i = 0; i < v->n; i++) {
		const struct kap_toml *s = v->items[i];
		if (s->type != KAP_TOML_STRING)
			return kap_error_plain(err, EINVAL,
					       "%s:%u: %s: expected an array of strings, found %s",
					       file, s->line, key, kap_toml_type_name(s->type));
		if (!registry_ok(s->str))
			return kap_error_plain(err, EINVAL,
					       "%s:%u: %s: \"%s\" is not a registry (HOST[:PORT])",
					       file, s->line, key, s->str);
		if (!(list[i] = strdup(s->str)))
			return kap_error(err, ENOMEM, "%s", file);
	}
	*out = steal_ptr(list);
	*n = v->n;
	return 0;
}

static char *where(const char *file, unsigned line)
{
	char *s = NULL;
	return asprintf(&s, "%s:%u", file, line) < 0 ? NULL : s;
}

static int parse_merge(struct kap_registries_conf *c, const char *text, size_t len,
		       const char *file, struct kapsel_error **err)
{
	cleanup_toml struct kap_toml *doc = NULL;
	int r = kap_toml_parse(text, len, file, &doc, err);
	if (r < 0)
		return r;

	/* Read and check everything first: a bad file changes nothing. */
	cleanup_strv char **search = NULL;
	size_t n_search = 0;
	const struct kap_toml *v = kap_toml_get(doc, "unqualified-search-registries");
	const struct kap_toml *v1 = kap_toml_get(kap_toml_get(doc, "registries"), "search");
	if (v && v1)
		return kap_error_plain(
		    err, EINVAL,
		    "%s:%u: unqualified-search-registries and [registries.search] "
		    "(version 1) cannot be mixed",
		    file, v1->line);
	if (v1) {
		/* Version 1's [registries.search] registries = [...] means the same. */
		v = kap_toml_get(v1, "registries");
		if (v && (r = string_array(file, "registries.search.registries", v, &search,
					   &n_search, err)) < 0)
			return r;
	} else if (v && (r = string_array(file, "unqualified-search-registries", v, &search,
					  &n_search, err)) < 0) {
		return r;
	}
	const struct kap_toml *m = kap_toml_get(doc, "short-name-mode");
	enum kap_short_name_mode mode = c->mode;
	if (m) {
		static const char *const names[] = {"permissive", "enforcing", "disabled"};
		size_t i = 0;
		while (m->type == KAP_TOML_STRING && i < KAP_ARRAY_SIZE(names) &&
		       strcmp(m->str, names[i]))
			i++;
		if (m->type != KAP_TOML_STRING || i == KAP_ARRAY_SIZE(names))
			return kap_error_plain(err, EINVAL,
					       "%s:%u: short-name-mode: expected \"enforcing\", "
					       "\"permissive\" or \"disabled\"",
					       file, m->line);
		mode = (enum kap_short_name_mode)i;
	}
	const struct kap_toml *al = kap_toml_get(doc, "aliases");
	if (al && al->type != KAP_TOML_TABLE)
		return kap_error_plain(err, EINVAL, "%s:%u: aliases: expected a table, not %s",
				       file, al->line, kap_toml_type_name(al->type));
	size_t n_al = al ? al->n : 0;
	for (size_t i = 0; i < n_al; i++) {
		const struct kap_toml *a = al->items[i];
		cleanup_free char *w = where(file, a->line);
		if (!w)
			return kap_error(err, ENOMEM, "%s", file);
		if (a->type != KAP_TOML_STRING)
			return kap_error_plain(err, EINVAL,
					       "%s: alias \"%s\": expected a string, not %s", w,
					       a->key, kap_toml_type_name(a->type));
		if ((r = check_alias(w, a->key, a->str, err)) < 0)
			return r;
	}

	/* Merge. */
	struct kap_alias *grown = realloc(c->aliases, (c->n_aliases + n_al + 1) * sizeof(*grown));
	if (!grown)
		return kap_error(err, ENOMEM, "%s", file);
	c->aliases = grown;
	for (size_t i = 0; i < n_al; i++) {
		const struct kap_toml *a = al->items[i];
		struct kap_alias na = {strdup(a->key), strdup(a->str), where(file, a->line)};
		if (!na.name || !na.value || !na.where) {
			alias_clear(&na);
			return kap_error(err, ENOMEM, "%s", file);
		}
		size_t k = 0;
		while (k < c->n_aliases && strcmp(c->aliases[k].name, na.name))
			k++;
		if (k < c->n_aliases)
			alias_clear(&c->aliases[k]);
		else
			c->n_aliases++;
		c->aliases[k] = na;
	}
	if (v) {
		char *w = where(file, v->line);
		if (!w)
			return kap_error(err, ENOMEM, "%s", file);
		kap_strv_free(c->search);
		free(c->search_where);
		c->search = steal_ptr(search);
		c->n_search = n_search;
		c->search_where = w;
	}
	if (m) {
		char *w = where(file, m->line);
		if (!w)
			return kap_error(err, ENOMEM, "%s", file);
		free(c->mode_where);
		c->mode_where = w;
		c->mode = mode;
	}
	return 0;
}

int kap_registries_conf_parse(struct kap_registries_conf *c, const char *text, size_t len,
			      const char *file, struct kapsel_error **err)
{
	int r = parse_merge(c, text, len, file, err);
	/* One line: keys and values quoted in a message may hold escaped control characters. */
	for (char *m = r < 0 && err && *err ? (*err)->msg : NULL; m && *m; m++)
		if ((unsigned char)*m < 0x20 || *m == 0x7f)
			*m = '?';
	return r;
}

static int load_file(struct kap_registries_conf *c, int dirfd, const char *path,
		     const char *display, struct kapsel_error **err)
{
	cleanup_free char *text = NULL;
	size_t len = 0;
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_fs_read_file(dirfd, path, CONF_MAX, &text, &len, &e);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		*err = steal_ptr(e);
		return r;
	}
	return kap_registries_conf_parse(c, text, len, display, err);
}

static int load_dir(struct kap_registries_conf *c, const char *dir, struct kapsel_error **err)
{
	struct dirent **names = NULL;
	int n = scandir(dir, &names, NULL, alphasort);
	if (n < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0
							   : kap_error(err, errno, "read %s", dir);
	cleanup_close int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	int r = dfd < 0 ? kap_error(err, errno, "open %s", dir) : 0;
	for (int i = 0; i < n; i++) {
		const char *d = names[i]->d_name;
		size_t l = strlen(d);
		/* containers-registries.conf.d(5): only files ending in .conf. */
		if (r == 0 && l > 5 && !strcmp(d + l - 5, ".conf")) {
			cleanup_free char *display = NULL;
			if (asprintf(&display, "%s/%s", dir, d) < 0)
				r = kap_error(err, ENOMEM, "%s", dir);
			else
				r = load_file(c, dfd, d, display, err);
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int kap_registries_conf_load(struct kap_registries_conf *c, struct kapsel_error **err)
{
	memset(c, 0, sizeof(*c));
	const char *env = getenv("CONTAINERS_REGISTRIES_CONF");
	const char *dir = getenv("KAPSEL_REGISTRIES_CONF_DIR");
	int r;
	if (env && *env)
		r = load_file(c, AT_FDCWD, env, env, err);
	else if ((r = load_file(c, AT_FDCWD, SYSTEM_CONF, SYSTEM_CONF, err)) == 0)
		r = load_dir(c, SYSTEM_DIR, err);
	if (r == 0 && dir && *dir)
		r = load_dir(c, dir, err);
	if (r < 0)
		kap_registries_conf_clear(c);
	return r;
}

/* ---- candidates ---- */

struct strv {
	char **v;
	size_t n;
};

/* Append the canonical form of "prefix/rest" (or rest alone); duplicates are skipped. */
static int add(struct strv *l, const char *prefix, const char *rest, struct kapsel_error **err)
{
	cleanup_free char *s = NULL;
	if (asprintf(&s, "%s%s%s", prefix ? prefix : "", prefix ? "/" : "", rest) < 0)
		return kap_error(err, ENOMEM, "%s", rest);
	struct kap_ref ref;
	int r = kap_ref_parse(s, &ref, err);
	if (r < 0)
		return r;
	char *canon = kap_ref_string(&ref);
	kap_ref_clear(&ref);
	if (!canon)
		return kap_error(err, ENOMEM, "%s", rest);
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i], canon)) {
			free(canon);
			return 0;
		}
	char **v = realloc(l->v, (l->n + 2) * sizeof(char *));
	if (!v) {
		free(canon);
		return kap_error(err, ENOMEM, "%s", rest);
	}
	l->v = v;
	l->v[l->n++] = canon;
	l->v[l->n] = NULL;
	return 0;
}

static const struct kap_alias *find_alias(const struct kap_registries_conf *c, const char *name)
{
	size_t n = name_len(name);
	for (size_t i = 0; i < c->n_aliases; i++)
		if (strlen(c->aliases[i].name) == n && !strncmp(c->aliases[i].name, name, n))
			return &c->aliases[i];
	return NULL;
}

/* alias value + the tag or digest the user gave. */
static int add_alias(struct strv *l, const struct kap_alias *a, const char *name,
		     struct kapsel_error **err)
{
	cleanup_free char *s = NULL;
	if (asprintf(&s, "%s%s", a->value, name + name_len(name)) < 0)
		return kap_error(err, ENOMEM, "%s", name);
	return add(l, NULL, s, err);
}

int kap_shortname_local(const struct kap_registries_conf *c, const char *name, char ***out,
			struct kapsel_error **err)
{
	struct strv l = {0};
	const struct kap_alias *a = find_alias(c, name);
	int r = a ? add_alias(&l, a, name, err) : 0;
	if (r == 0)
		r = add(&l, "localhost", name, err);
	for (size_t i = 0; r == 0 && i < c->n_search; i++)
		r = add(&l, c->search[i], name, err);
	if (r == 0)
		r = add(&l, NULL, name, err);
	if (r < 0) {
		kap_strv_free(l.v);
		return r;
	}
	*out = l.v;
	return 0;
}

int kap_shortname_pull(const struct kap_registries_conf *c, const char *name, char ***out,
		       const char **alias, struct kapsel_error **err)
{
	struct strv l = {0};
	const struct kap_alias *a = kap_ref_is_short(name) ? find_alias(c, name) : NULL;
	int r = 0;
	if (alias)
		*alias = a ? a->where : NULL;
	if (!kap_ref_is_short(name))
		r = add(&l, NULL, name, err);
	else if (a)
		r = add_alias(&l, a, name, err);
	else if (c->n_search > 1 && c->mode == KAP_SHORT_NAME_ENFORCING)
		r = kap_error_plain(err, EINVAL,
				    "short name \"%s\": short-name-mode is \"enforcing\" (%s) and "
				    "%zu unqualified-search registries could serve it; kapsel does "
				    "not prompt: use a fully qualified name or an alias",
				    name, c->mode_where, c->n_search);
	else if (c->n_search == 0)
		r = add(&l, NULL, name, err);
	for (size_t i = 0; r == 0 && !a && kap_ref_is_short(name) && i < c->n_search; i++)
		r = add(&l, c->search[i], name, err);
	if (r < 0) {
		kap_strv_free(l.v);
		return r;
	}
	*out = l.v;
	return 0;
}

int kap_image_resolve_local(struct kap_store *s, const char *image, char **name,
			    char *manifest_digest, struct kapsel_error **err)
{
	*name = NULL;
	if (!image || !*image)
		return kap_error_plain(err, EINVAL, "empty image name");
	if (kap_store_resolve(s, image, manifest_digest, NULL) == 0)
		return (*name = strdup(image)) ? 0 : kap_error(err, ENOMEM, "image %s", image);
	if (kap_ref_is_short(image)) {
		struct kap_registries_conf c;
		cleanup_strv char **cands = NULL;
		int r = kap_registries_conf_load(&c, err);
		if (r < 0)
			return r;
		struct kap_ref ref;
		/* Only a valid reference has candidates; an ID prefix goes on to the lookup. */
		if (kap_ref_parse(image, &ref, NULL) == 0) {
			kap_ref_clear(&ref);
			r = kap_shortname_local(&c, image, &cands, err);
		}
		kap_registries_conf_clear(&c);
		if (r < 0)
			return r;
		for (char **p = cands; p && *p; p++)
			if (kap_store_resolve(s, *p, manifest_digest, NULL) == 0) {
				*name = strdup(*p);
				return *name ? 0 : kap_error(err, ENOMEM, "image %s", image);
			}
	}
	int r = kap_store_lookup(s, image, name, manifest_digest, err);
	if (r == 0 && !*name && !(*name = strdup(manifest_digest)))
		return kap_error(err, ENOMEM, "image %s", image);
	return r;
}
