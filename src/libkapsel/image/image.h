/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image engine's internal interfaces (OCI image-spec 1.1, distribution-spec 1.1). Files:
 * reference.c, digest.c, manifest.c, store.c, unpack.c (store/formats), archive.c (load/save of
 * OCI layouts, oci-archive, docker-archive), registry.c + auth.c (pull), bundle.c + overlay.c
 * (image -> runnable bundle). Everything read from a registry, a tarball or the store is hostile.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <kapsel/error.h>

struct kap_json;

/* ---- reference.c: [registry[:port]/]repository[:tag][@sha256:hex] ---- */
struct kap_ref {
	char *registry;	  /* "docker.io", "127.0.0.1:5000" */
	char *repository; /* "library/busybox" */
	char *tag;	  /* "latest" when neither tag nor digest given; NULL if only a digest */
	char *digest;	  /* "sha256:<64 hex>" or NULL */
};
/* Docker/podman defaults: no registry -> docker.io; docker.io single name -> library/NAME. */
int kap_ref_parse(const char *s, struct kap_ref *out, struct kapsel_error **err);
/* "registry/repository:tag" (or @digest) — the canonical store name. Caller frees. */
char *kap_ref_string(const struct kap_ref *r);
void kap_ref_clear(struct kap_ref *r);

/* ---- digest.c: streaming SHA-256 (OpenSSL) ---- */
#define KAP_DIGEST_LEN 71 /* "sha256:" + 64 hex */
struct kap_sha256;
struct kap_sha256 *kap_sha256_new(void);
void kap_sha256_update(struct kap_sha256 *h, const void *data, size_t len);
/* Writes "sha256:<hex>" into out (KAP_DIGEST_LEN + 1 bytes) and frees h. */
void kap_sha256_final(struct kap_sha256 *h, char *out);
/* Validate "sha256:<64 lowercase hex>" (the only algorithm accepted); names `what`. */
int kap_digest_validate(const char *digest, const char *what, struct kapsel_error **err);

/* ---- manifest.c: decoding manifests, indexes and image configs ---- */
#define KAP_MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define KAP_MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define KAP_MT_OCI_CONFIG      "application/vnd.oci.image.config.v1+json"
#define KAP_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define KAP_MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define KAP_MT_DOCKER_CONFIG   "application/vnd.docker.container.image.v1+json"

enum kap_compression { KAP_COMP_NONE, KAP_COMP_GZIP, KAP_COMP_ZSTD };

struct kap_descriptor {
	char *media_type;
	char digest[KAP_DIGEST_LEN + 1];
	int64_t size;
	char *platform_os, *platform_arch, *platform_variant; /* index entries */
};

struct kap_manifest {
	struct kap_descriptor config;
	struct kap_descriptor *layers;
	size_t n_layers;
};

struct kap_index {
	struct kap_descriptor *manifests;
	size_t n_manifests;
};

struct kap_image_config {
	char *architecture, *os, *created;
	char **env, **entrypoint, **cmd; /* NULL-terminated or NULL */
	char *working_dir, *user, *stop_signal;
	char **exposed_ports;
	char **labels_keys, **labels_values;
	size_t n_labels;
	char **diff_ids; /* rootfs.diff_ids, one per layer */
	size_t n_diff_ids;
};

/* Which of the two a document is (mediaType field, else shape). */
bool kap_manifest_is_index(const char *media_type, const struct kap_json *doc);
int kap_manifest_parse(const char *buf, size_t len, struct kap_manifest *out,
		       struct kapsel_error **err);
int kap_index_parse(const char *buf, size_t len, struct kap_index *out, struct kapsel_error **err);
/* Pick the manifest for os/arch[/variant] ("linux/amd64"); -ENOENT names what is available. */
int kap_index_select(const struct kap_index *idx, const char *platform,
		     const struct kap_descriptor **out, struct kapsel_error **err);
int kap_image_config_parse(const char *buf, size_t len, struct kap_image_config *out,
			   struct kapsel_error **err);
/* Layer media type -> compression; unknown types are an error naming the type. */
int kap_layer_compression(const char *media_type, enum kap_compression *out,
			  struct kapsel_error **err);
void kap_manifest_clear(struct kap_manifest *m);
void kap_index_clear(struct kap_index *i);
void kap_image_config_clear(struct kap_image_config *c);

/* ---- store.c: <store>/blobs/sha256/<hex>, <store>/layers/<diffid-hex>/,
 *      <store>/images.json (name -> manifest digest), <store>/tmp/, <store>/lock ---- */
struct kap_store;
/* Opens (creating the layout if needed). path NULL -> /var/lib/kapsel (root) or
 * ~/.local/share/kapsel. */
int kap_store_open(const char *path, struct kap_store **out, struct kapsel_error **err);
void kap_store_close(struct kap_store *s);
const char *kap_store_path(const struct kap_store *s);
/* flock on <store>/lock: shared for readers, exclusive for writers of images.json / prune. */
int kap_store_lock(struct kap_store *s, bool exclusive, struct kapsel_error **err);
void kap_store_unlock(struct kap_store *s);
bool kap_store_has_blob(struct kap_store *s, const char *digest);
/* Read a small blob (manifest/config, <= 16 MiB) verifying its digest. */
int kap_store_read_blob(struct kap_store *s, const char *digest, char **buf, size_t *len,
			struct kapsel_error **err);
/* Open a blob for reading (fd) — the caller verifies while streaming if it wants. */
int kap_store_open_blob(struct kap_store *s, const char *digest, struct kapsel_error **err);
/*
 * Blob writer: a temp file in <store>/tmp hashed while written; commit renames it into
 * blobs/ only if the digest (and size when >= 0) match, else removes it; abort removes it.
 */
struct kap_blob_writer;
int kap_blob_writer_new(struct kap_store *s, const char *expect_digest, int64_t expect_size,
			struct kap_blob_writer **out, struct kapsel_error **err);
int kap_blob_writer_write(struct kap_blob_writer *w, const void *data, size_t len,
			  struct kapsel_error **err);
int kap_blob_writer_commit(struct kap_blob_writer *w, struct kapsel_error **err);
void kap_blob_writer_abort(struct kap_blob_writer *w);
/* Store a complete in-memory blob; *digest_out (optional) receives its digest. */
int kap_store_put_blob(struct kap_store *s, const void *data, size_t len, char *digest_out,
		       struct kapsel_error **err);
/* Unpacked layers, one directory per diff_id: unpacks blob `digest` (compression c) into a
 * temp dir, verifies the uncompressed digest equals diff_id, renames into layers/. Idempotent. */
int kap_store_unpack_layer(struct kap_store *s, const char *blob_digest, enum kap_compression c,
			   const char *diff_id, struct kapsel_error **err);
/* Absolute path of an unpacked layer dir, or NULL if absent. Caller frees. */
char *kap_store_layer_path(struct kap_store *s, const char *diff_id);
/* Image index (images.json): name is the canonical kap_ref_string. */
int kap_store_tag(struct kap_store *s, const char *name, const char *manifest_digest,
		  struct kapsel_error **err);
int kap_store_resolve(struct kap_store *s, const char *name, char *manifest_digest,
		      struct kapsel_error **err);
int kap_store_untag(struct kap_store *s, const char *name, struct kapsel_error **err);
struct kap_store_image {
	char *name;
	char manifest_digest[KAP_DIGEST_LEN + 1];
};
int kap_store_list(struct kap_store *s, struct kap_store_image **out, size_t *n,
		   struct kapsel_error **err);
void kap_store_images_free(struct kap_store_image *imgs, size_t n);
/* Containers using an image record it here (<store>/refs/<container>), for rmi and prune. */
int kap_store_add_user(struct kap_store *s, const char *container, const char *manifest_digest,
		       struct kapsel_error **err);
int kap_store_remove_user(struct kap_store *s, const char *container);
/* Remove blobs and layers no image or container references. Returns bytes freed (>= 0). */
int64_t kap_store_prune(struct kap_store *s, struct kapsel_error **err);
/* Load the manifest + config of a stored image (resolving through an index to linux/amd64). */
int kap_store_load_image(struct kap_store *s, const char *manifest_digest, struct kap_manifest *m,
			 struct kap_image_config *cfg, struct kapsel_error **err);

/* ---- unpack.c: one layer tar stream -> a directory, safely ---- */
struct kap_unpack_opts {
	bool rootless;		 /* no device nodes; ownership not changed */
	uint64_t max_entry_size; /* 0 = default limit */
};
/* Read a (decompressed) tar stream from fd and write it into dirfd. *diff_id_out (optional)
 * gets the sha256 of the uncompressed stream. Errors name the entry. */
int kap_unpack_layer(int fd, enum kap_compression c, int dirfd, const struct kap_unpack_opts *o,
		     char *diff_id_out, struct kapsel_error **err);
