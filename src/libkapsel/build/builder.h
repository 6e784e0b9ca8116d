/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What build.c and copy.c share: a build's state, a stage, and the step helpers. Private to
 * src/libkapsel/build/.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/build.h>

#include "build/build.h"
#include "image/image.h"

struct kap_json;

#define MT_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define MT_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"

struct stage {
	char *name;	      /* AS name, lower case; NULL */
	struct kap_json *cfg; /* the image config document */
	struct kap_descriptor *layers;
	size_t n_layers;
	char **args; /* K=V of the ARGs declared in this stage */
	size_t n_args;
	/* The cache chain: a digest over the base and every instruction so far (with the
	 * values it saw), so a step's key covers all that came before it. */
	char chain[KAP_DIGEST_LEN + 1];
	/* --layers=false: the steps' changes pile up in one upper directory, committed once
	 * when the stage ends (created_by: its last step). */
	bool accumulate;
	char *pending_by;
};

struct builder {
	const struct kapsel_build_options *o;
	struct kap_store *s;
	struct kap_containerfile cf;
	int ctxfd;
	char **ignore; /* .containerignore patterns, "!" kept */
	size_t n_ignore;
	char **meta; /* ARGs before the first FROM: K=V */
	size_t n_meta;
	struct stage *stages;
	size_t n_stages;
	char *tmp; /* <store>/tmp/build-XXXXXX */
	int tmpfd;
	bool mounted, from_mounted, squash_mounted;
	int64_t epoch;	  /* --timestamp or SOURCE_DATE_EPOCH, -1 when unset */
	bool zstd;	  /* --compression zstd */
	bool interrupted; /* a signal stopped a RUN */
	struct kapsel_error **err;
};

void kap_build_stage_clear(struct stage *st);
int kap_build_strv_add(char ***v, size_t *n, char *s);
struct kap_json *kap_build_cfg_config(struct stage *st);
/* Errors naming file:line and the instruction (ierr), or prefixing one raised below (iwrap). */
int kap_build_ierr(struct builder *b, const struct kap_cf_instr *in, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int kap_build_iwrap(struct builder *b, const struct kap_cf_instr *in, int r);
/* kap_cf_expand with the stage's ARG and ENV values (st NULL: the ARGs before FROM). */
int kap_build_expand(struct builder *b, struct stage *st, const struct kap_cf_instr *in,
		     const char *word, char **out);
struct stage *kap_build_find_stage(struct builder *b, const char *name);
int kap_build_load_image(struct builder *b, const char *name, struct stage *st);
/* A stored manifest (or index: the linux/amd64 one) as the stage's base. */
int kap_build_load_manifest(struct builder *b, const char *digest, struct stage *st);
int kap_build_layer_paths(struct builder *b, struct stage *st, char ***out, size_t *n);
int kap_build_apply_layer(struct builder *b, struct stage *st, const struct kap_built_layer *l,
			  const char *created_by);
void kap_build_add_history(struct builder *b, struct stage *st, const char *created_by, bool empty);
/* ENV, LABEL, CMD, ... : the instructions that change only the config. */
int kap_build_config_instr(struct builder *b, const struct kap_cf_instr *in, struct stage *st);
/* Config + manifest into the store, tagged with names (NULL-terminated, canonical). */
int kap_build_write_image(struct builder *b, struct stage *st, char *config_digest, char **names,
			  char *manifest_digest);
/* Mount the stage's layers at <tmp>/<prefix>merged over a fresh upper; an O_PATH fd to it. */
int kap_build_mount(struct builder *b, struct stage *st, const char *prefix, bool *mounted);
int kap_build_umount(struct builder *b, const char *prefix, bool *mounted);
int kap_build_chain_advance(struct builder *b, struct stage *st, const struct kap_cf_instr *in,
			    const char *extra);
/* 1: the step's layer came from the cache; 0: a miss; < 0: error. */
int kap_build_from_cache(struct builder *b, struct stage *st, const char *created_by);
int kap_build_commit_layer(struct builder *b, struct stage *st, const char *created_by);
/* -EINTR with the error set when the caller's cancel flag is up. */
int kap_build_check_cancel(struct builder *b);

/* copy.c */
int kap_build_load_ignore(struct builder *b);
int kap_build_copy(struct builder *b, const struct kap_cf_instr *in, struct stage *st);
