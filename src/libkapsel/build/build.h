/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build engine's internal interfaces: `kapsel build` (Containerfile -> OCI image in the
 * store). It sits beside image/ and uses it (store, overlay, the runtime path of `kapsel run`).
 * Files: containerfile.c (parsing and word expansion: hostile input), layer.c (overlay upper
 * directory -> OCI layer blob), cache.c (step key -> layer), copy.c (COPY/ADD), build.c (the
 * instructions, stages, RUN through the runtime).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

#include "image/image.h"

/* ---- containerfile.c: the Dockerfile reference syntax ---- */
enum kap_cf_kind {
	KAP_CF_FROM,
	KAP_CF_RUN,
	KAP_CF_COPY,
	KAP_CF_ADD,
	KAP_CF_ENV,
	KAP_CF_ARG,
	KAP_CF_WORKDIR,
	KAP_CF_USER,
	KAP_CF_ENTRYPOINT,
	KAP_CF_CMD,
	KAP_CF_EXPOSE,
	KAP_CF_LABEL,
	KAP_CF_VOLUME,
	KAP_CF_STOPSIGNAL,
	KAP_CF_SHELL,
	KAP_CF_HEALTHCHECK,
	KAP_CF_MAINTAINER,
};

/* Upper-case keyword of a kind ("COPY"). */
const char *kap_cf_kind_name(enum kap_cf_kind k);

struct kap_cf_flag {
	char *name;  /* without the dashes: "from", "chown" */
	char *value; /* "" for a flag without "=value" */
};

/*
 * One instruction. `args` depends on the kind; words keep their quotes and escapes (removed by
 * kap_cf_expand, which also substitutes variables, as the Dockerfile reference orders it):
 *   FROM         [image] or [image, name] (AS name)
 *   RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK CMD
 *                exec form (json): the array elements, final (no expansion);
 *                shell form: one element, the command text as written (the shell expands it)
 *   COPY/ADD     sources..., dest (json form: elements, still expanded)
 *   ENV/LABEL    key, value pairs (n_args even)
 *   ARG          name, default pairs (default NULL when absent: n_args even)
 *   WORKDIR      [path]     USER [user[:group]]     STOPSIGNAL [signal]   MAINTAINER [text]
 *   EXPOSE/VOLUME words (VOLUME json: elements)
 *   HEALTHCHECK  healthcheck_none, or the CMD as for RUN
 */
struct kap_cf_instr {
	enum kap_cf_kind kind;
	unsigned line; /* the line the instruction starts on */
	char *text;    /* the instruction as one line (continuations joined): the cache key */
	struct kap_cf_flag *flags;
	size_t n_flags;
	char **args;
	size_t n_args;
	bool json;	       /* exec (JSON array) form */
	bool healthcheck_none; /* HEALTHCHECK NONE */
};

struct kap_containerfile {
	char *path; /* as errors name it */
	char escape;
	struct kap_cf_instr *instrs;
	size_t n;
};

/* Limits on hostile input: a Containerfile is small text. */
#define KAP_CF_MAX_SIZE	  (4u << 20)
#define KAP_CF_MAX_INSTRS 10000u
#define KAP_CF_MAX_ARGS	  4096u

/*
 * Parse a Containerfile held in buf (need not be NUL-terminated). Errors are one line:
 * "<path>:<line>: <INSTRUCTION>: <what>" (-EINVAL). The result has at least one FROM and only
 * ARG before it.
 */
int kap_cf_parse(const char *path, const char *buf, size_t len, struct kap_containerfile *out,
		 struct kapsel_error **err);
void kap_containerfile_clear(struct kap_containerfile *cf);
/* The value of a flag (last one wins), or NULL when absent. */
const char *kap_cf_flag(const struct kap_cf_instr *in, const char *name);
/* A Go duration as HEALTHCHECK takes it ("30s", "1m30s", "500ms") -> nanoseconds. */
int kap_cf_duration(const char *s, long long *ns);

/*
 * Word expansion (Dockerfile reference "Environment replacement"): $VAR, ${VAR},
 * ${VAR:-word}, ${VAR:+word}; single quotes keep their content literal, double quotes allow
 * substitution; the escape character escapes the next character (quote removal happens here
 * too). vars: NULL-terminated "K=V" list (later entries win). An unset variable is "". Errors
 * (unterminated quote or ${) name the word.
 */
int kap_cf_expand(const char *word, char escape, char *const *vars, char **out,
		  struct kapsel_error **err);

/* ---- layer.c: an overlay upper directory -> a gzip layer blob in the store ---- */
struct kap_built_layer {
	char digest[KAP_DIGEST_LEN + 1];  /* of the compressed blob */
	char diff_id[KAP_DIGEST_LEN + 1]; /* of the tar stream */
	int64_t size;			  /* compressed bytes */
	bool zstd;			  /* zstd-compressed (else gzip) */
};
/* clamp_mtime >= 0: mtimes later than it are written as it (SOURCE_DATE_EPOCH). skip
 * (NULL-terminated, optional): relative paths ("etc/hosts") left out of the layer. gzip. */
int kap_build_layer(struct kap_store *s, int upperfd, int64_t clamp_mtime, const char *const *skip,
		    struct kap_built_layer *out, struct kapsel_error **err);
/* The same, compressed with libzstd when zstd is set (--compression zstd). */
int kap_build_layer_as(struct kap_store *s, int upperfd, int64_t clamp_mtime,
		       const char *const *skip, bool zstd, struct kap_built_layer *out,
		       struct kapsel_error **err);

/* ---- cache.c: step key ("sha256:<hex>") -> the layer it made ---- */
/* 0 and *out on a hit; -ENOENT on a miss (no entry, unreadable, or its blob is gone). */
int kap_build_cache_get(struct kap_store *s, const char *key, struct kap_built_layer *out);
int kap_build_cache_put(struct kap_store *s, const char *key, const struct kap_built_layer *l,
			struct kapsel_error **err);
