/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image engine's internal interfaces (OCI image-spec 1.1, distribution-spec 1.1). Files:
 * reference.c, digest.c, manifest.c, store.c, unpack.c (store/formats), archive.c (load/save of
 * OCI layouts, oci-archive, docker-archive), registry.c + auth.c (pull), bundle.c + overlay.c
 * (image -> runnable bundle). Everything read from a registry, a tarball or the store is hostile.
 */
#pragma once
#include <signal.h>
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

/* This machine's architecture as image platforms name it (Go's GOARCH). */
#if defined(__x86_64__)
#define KAP_HOST_ARCH "amd64"
#elif defined(__aarch64__)
#define KAP_HOST_ARCH "arm64"
#elif defined(__i386__)
#define KAP_HOST_ARCH "386"
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KAP_HOST_ARCH "ppc64le"
#elif defined(__s390x__)
#define KAP_HOST_ARCH "s390x"
#elif defined(__riscv) && __riscv_xlen == 64
#define KAP_HOST_ARCH "riscv64"
#else
#define KAP_HOST_ARCH "unknown"
#endif

/*
 * Whether this machine can run an image of os/arch: linux and this architecture, or another
 * architecture for which binfmt_misc has an enabled handler (qemu-user: a warning then, as
 * podman gives). 0, or -ENOEXEC with *err naming both platforms.
 */
int kap_image_platform_check(const char *image, const char *os, const char *arch,
			     struct kapsel_error **err);

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
/* Where the store is when none is given (root's, the user's, or the /tmp fallback). */
char *kap_store_default_path(void);
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
/* A directory already in the unpacked-layer format (an overlay upper dir made by a build, on
 * the store's filesystem) becomes layers/<diff_id> by rename; present already: 0, and
 * dirfd/name stays for the caller to remove. */
int kap_store_adopt_layer(struct kap_store *s, int dirfd, const char *name, const char *diff_id,
			  struct kapsel_error **err);
struct kap_unpack_opts;
/*
 * <store>/idmapped/<key>/<hex>: the layer unpacked with opts o (rootless, with the uid_count
 * of a user namespace with subordinate ranges, which the caller is root of), so its owners
 * are the image's shifted into the ranges. key (16 hex digits) names the mapping: once per
 * (layer, mapping); layers/ is untouched. *path: its absolute path.
 */
int kap_store_idmapped_layer(struct kap_store *s, const char *key, const struct kap_unpack_opts *o,
			     const char *blob_digest, enum kap_compression c, const char *diff_id,
			     char **path, struct kapsel_error **err);
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
	bool rootless;		 /* no device nodes; ownership not changed (but see uid_count) */
	uint64_t max_entry_size; /* 0 = default limit */
	/* Rootless in a user namespace mapping container ids 0..uid_count-1 (and gids to
	 * gid_count-1) through subordinate ranges: owners are set, and one beyond is an error
	 * naming the range (uid_range, gid_range: their description). 0: not so. */
	uint32_t uid_count, gid_count;
	const char *uid_range, *gid_range;
};
/* Read a (decompressed) tar stream from fd and write it into dirfd. *diff_id_out (optional)
 * gets the sha256 of the uncompressed stream. Errors name the entry. */
int kap_unpack_layer(int fd, enum kap_compression c, int dirfd, const struct kap_unpack_opts *o,
		     char *diff_id_out, struct kapsel_error **err);

/* ---- auth.c: registry credentials (containers-auth.json(5)) and WWW-Authenticate ---- */
/* One challenge of a WWW-Authenticate header (RFC 7235 §4.1; distribution-spec "token"). */
struct kap_auth_challenge {
	char *scheme; /* "Bearer", "Basic", ... as sent */
	char *realm, *service, *scope, *error;
};
/* Parses the header, preferring a Bearer challenge when it lists several; -EINVAL if it has
 * none. Quoted strings may hold commas and backslash escapes. */
int kap_auth_challenge_parse(const char *header, struct kap_auth_challenge *out,
			     struct kapsel_error **err);
void kap_auth_challenge_clear(struct kap_auth_challenge *c);

/* RFC 4648 base64 with padding. Caller frees; NULL on ENOMEM. */
char *kap_base64_encode(const void *data, size_t len);
/* Decodes (padding optional); the result is NUL-terminated. -EINVAL on a bad character. */
int kap_base64_decode(const char *s, char **out, size_t *len);

struct kap_credentials {
	char *user, *password;
	char *source; /* the auth file they came from (for error messages) */
};
void kap_credentials_clear(struct kap_credentials *c);
/* "https://Host:5000/v1/" or "host:5000" -> "host:5000" (index.docker.io -> docker.io); the
 * key login writes and lookups compare against. Caller frees. */
char *kap_auth_normalize_key(const char *key);
/* Look up registry/repository in one auth.json document: the longest matching key of "auths"
 * (registry, or registry/namespace...) wins. 0 found, -ENOENT none, -EINVAL malformed. */
int kap_auth_lookup(const char *json, size_t len, const char *what, const char *registry,
		    const char *repository, struct kap_credentials *out, struct kapsel_error **err);
/* Search auth_file when given, else $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/
 * auth.json (/run/containers/<uid>/auth.json without it), ~/.config/containers/auth.json,
 * ~/.docker/config.json; the first file that has credentials wins. -ENOENT: none anywhere. */
int kap_auth_find(const char *auth_file, const char *registry, const char *repository,
		  struct kap_credentials *out, struct kapsel_error **err);
/* The file login writes to and logout edits (podman's choice). Caller frees. */
char *kap_auth_default_file(void);
/* Add (user != NULL) or remove credentials for registry in file, atomically, mode 0600.
 * Removing an absent entry is -ENOENT. */
int kap_auth_file_update(const char *file, const char *registry, const struct kap_credentials *c,
			 struct kapsel_error **err);

/* ---- registry.c: the OCI distribution API over libcurl (bound lazily) ---- */
/* Accept header of manifest requests: registries answer 404 to a type the client did not list
 * (distribution-spec "Pulling manifests"). */
#define KAP_REGISTRY_ACCEPT                                                                        \
	KAP_MT_OCI_INDEX ", " KAP_MT_OCI_MANIFEST ", " KAP_MT_DOCKER_LIST                          \
			 ", " KAP_MT_DOCKER_MANIFEST
#define KAP_MANIFEST_MAX (4u << 20)

/* "docker.io" -> "registry-1.docker.io" (where Docker Hub's API lives); others unchanged. */
const char *kap_registry_host(const char *registry);
/* <scheme>://<host>/v2/<repository>/<kind>/<reference> (kind "manifests" or "blobs"); a NULL
 * repository gives <scheme>://<host>/v2/. Caller frees. */
char *kap_registry_url(const char *scheme, const char *registry, const char *repository,
		       const char *kind, const char *reference);
/* The token request of a Bearer challenge: realm?service=..&scope=.. (scope from the
 * challenge, else default_scope; NULL: none). Caller frees; NULL when realm is missing. */
char *kap_registry_token_url(const struct kap_auth_challenge *c, const char *default_scope);
/* localhost, 127.0.0.0/8 and ::1 may speak plain HTTP without --insecure. */
bool kap_registry_is_local(const char *registry);
/* Does a registries.conf (v2 [[registry]] tables or v1 [registries.insecure]) mark
 * registry/repository insecure? */
bool kap_registries_conf_insecure(const char *text, const char *registry, const char *repository);
/* "bytes START-END/TOTAL" -> START; -1 when malformed. */
int64_t kap_http_content_range_start(const char *value);

/* Where downloaded bytes go. write returns < 0 (with *err) to abort; restart is called when a
 * resumed download must start again from byte 0 (the server ignored Range). */
struct kap_blob_sink {
	int (*write)(void *ctx, const void *data, size_t len, struct kapsel_error **err);
	int (*restart)(void *ctx, struct kapsel_error **err);
	void *ctx;
};
struct kap_registry_opts {
	bool insecure;			     /* TLS unverified, plain HTTP allowed */
	const struct kap_credentials *creds; /* NULL: anonymous */
	const volatile sig_atomic_t *cancel; /* non-zero: stop transfers (SIGINT) */
	bool login;			     /* open for kapsel login: check the credentials */
	bool push;			     /* authenticate for pull,push on the repository */
};
struct kap_registry;
/* Binds libcurl, finds the API (https, or http when allowed), authenticates for pulling from
 * repository (or, for login, against the registry). */
int kap_registry_open(const char *registry, const char *repository,
		      const struct kap_registry_opts *o, struct kap_registry **out,
		      struct kapsel_error **err);
void kap_registry_close(struct kap_registry *r);
/* "registry/repository" (or "registry" for login), as errors name it. */
const char *kap_registry_label(const struct kap_registry *r);
/* Stop every transfer of r (another part of the pull failed). Thread-safe. */
void kap_registry_cancel(struct kap_registry *r);
/* GET a manifest or index (reference: tag or digest), at most KAP_MANIFEST_MAX bytes. */
int kap_registry_get_manifest(struct kap_registry *r, const char *reference, char **buf,
			      size_t *len, char **media_type, struct kapsel_error **err);
/* GET a blob into sink, at most `size` bytes (>= 0), resuming with Range after a dropped
 * connection. Thread-safe: concurrent calls use their own connections. */
int kap_registry_get_blob(struct kap_registry *r, const char *digest, int64_t size,
			  const struct kap_blob_sink *sink, struct kapsel_error **err);

/* Push (distribution-spec "Pushing blobs"): 1 the registry has the blob, 0 it has not. */
int kap_registry_has_blob(struct kap_registry *r, const char *digest, struct kapsel_error **err);
/* Cross-repository mount of digest from repository `from` of the same registry: 1 mounted
 * (201), 0 the registry declined (202: upload it instead). */
int kap_registry_mount_blob(struct kap_registry *r, const char *digest, const char *from,
			    struct kapsel_error **err);
/* Upload size bytes of fd as blob digest: monolithic (POST + PUT) when chunk <= 0, else PATCH
 * chunks of that many bytes then PUT; a failed session is started again (with backoff). */
int kap_registry_put_blob(struct kap_registry *r, const char *digest, int fd, int64_t size,
			  int64_t chunk, struct kapsel_error **err);
/* PUT a manifest (its bytes as they are: the digest stays) under reference (a tag). */
int kap_registry_put_manifest(struct kap_registry *r, const char *reference, const char *media_type,
			      const char *buf, size_t len, struct kapsel_error **err);

/* ---- bundle.c: image config + `kapsel run` flags -> OCI runtime config.json ---- */
struct kapsel_run_options;
/* What run.c decides for the bundle beyond the flags. */
struct kap_bundle_env {
	const char *rootfs;	   /* root.path (the merged overlay) */
	const char *image_name;	   /* canonical name, recorded as an annotation */
	const char *hostname;	   /* resolved: --hostname or the container's name */
	const char *hosts_file;	   /* bind-mounted read-only at /etc/hosts when non-NULL */
	const char *hostname_file; /* ... at /etc/hostname */
	const char *resolv_file;   /* ... at /etc/resolv.conf (else the host's with --net host) */
	const char *netns_path;	   /* the network namespace to join (--net NAME) */
	const char *volumes_dir;   /* <store>/volumes, for -v NAME:/path (image/runflags.h) */
	const char *init_path;	   /* --init: the reaper's host path */
	/* The runtime runs in a user namespace mapping only uid and gid 0 to the user (rootless
	 * `kapsel run`): no options naming other ids, no supplementary groups, no sysfs without a
	 * network namespace of our own. */
	bool rootless;
	/* Rootless with subordinate ranges (image/subid.h): ids 0..uid_count-1 and
	 * 0..gid_count-1 exist, supplementary groups among them too. 0 or 1: only root. */
	uint32_t uid_count, gid_count;
};
/* Validate every flag that needs no image (sizes, -v, caps, security options) before anything
 * is created. */
int kap_bundle_check(const struct kapsel_run_options *o, struct kapsel_error **err);
/* rootfd: the container's root filesystem, for /etc/passwd and /etc/group (read confined);
 * -1: numeric users only. *out: the config.json document. */
int kap_bundle_config(const struct kap_image_config *img, const struct kapsel_run_options *o,
		      const struct kap_bundle_env *be, int rootfd, struct kap_json **out,
		      struct kapsel_error **err);
/* The pieces, for the unit tests. */
int kap_bundle_parse_memory(const char *s, int64_t *out, struct kapsel_error **err);
int kap_bundle_parse_cpus(const char *s, int64_t *quota, struct kapsel_error **err);
int kap_bundle_parse_volume(const char *spec, char **host, char **ctr, bool *ro,
			    struct kapsel_error **err);
int kap_bundle_caps(const struct kapsel_run_options *o, uint64_t *bounding, uint64_t *added,
		    struct kapsel_error **err);
struct kap_exec_user {
	uint32_t uid, gid;
	uint32_t *groups; /* supplementary, from /etc/group membership */
	size_t n_groups;
	char *name, *home; /* NULL when not in /etc/passwd */
};
int kap_bundle_resolve_user(int rootfd, const char *spec, struct kap_exec_user *out,
			    struct kapsel_error **err);
void kap_exec_user_clear(struct kap_exec_user *u);
int kap_bundle_args(const struct kap_image_config *img, const char *entrypoint, char *const *cmd,
		    char ***out, struct kapsel_error **err);
int kap_bundle_env(const struct kap_image_config *img, char *const *user_env, bool tty,
		   const char *hostname, const char *home, char ***out, struct kapsel_error **err);

/* ---- overlay.c: a container's root filesystem ---- */
/* Mount overlayfs at `merged`: lowers top first (at least one), upper and work on one fs.
 * userxattr: from a user namespace, over layers unpacked rootless (user.overlay.* xattrs). */
int kap_overlay_mount(char *const *lowers, size_t n, const char *upper, const char *work,
		      const char *merged, bool userxattr, struct kapsel_error **err);
/* Unmount `merged` when it is a mount point (lazily: a straggler keeps it busy). */
int kap_overlay_umount(const char *merged, struct kapsel_error **err);

/* ---- additions used by the store/formats part (archive.c, images.c) and the tests ---- */
/* kap_blob_writer_commit and _abort free the writer, whether or not the commit succeeds. */
/* Finish hashing and check digest/size (once; commit does it too). digest_out is optional. */
int kap_blob_writer_check(struct kap_blob_writer *w, char *digest_out, struct kapsel_error **err);
/* Commit, returning the blob's digest (writers made with expect_digest NULL name it so). */
int kap_blob_writer_finish(struct kap_blob_writer *w, char *digest_out, struct kapsel_error **err);
/* The temp file (O_RDWR) holding what was written: read it back with pread before commit. */
int kap_blob_writer_fd(const struct kap_blob_writer *w);
/*
 * Staged layers: unpack into <store>/tmp, verify diff_id (when not NULL), and only on commit
 * rename into layers/<hex>. kap_store_unpack_layer = stage + commit. Commit/discard free st.
 */
struct kap_layer_stage;
int kap_store_layer_stage(struct kap_store *s, int blob_fd, enum kap_compression c,
			  const char *diff_id, struct kap_layer_stage **out,
			  struct kapsel_error **err);
int kap_store_layer_commit(struct kap_layer_stage *st, struct kapsel_error **err);
void kap_store_layer_discard(struct kap_layer_stage *st);
bool kap_store_has_layer(struct kap_store *s, const char *diff_id);
/*
 * What the user typed -> a stored image: an exact stored name, a reference (busybox ->
 * docker.io/library/busybox:latest), or an ID prefix (>= 4 hex digits of the config or manifest
 * digest). *name_out (optional) gets the stored name, NULL when found by ID. -ENOENT if none.
 */
int kap_store_lookup(struct kap_store *s, const char *input, char **name_out, char *manifest_digest,
		     struct kapsel_error **err);
/* Containers recorded by kap_store_add_user for this manifest; *n is 0 if none. */
int kap_store_users(struct kap_store *s, const char *manifest_digest, char ***names, size_t *n,
		    struct kapsel_error **err);
/* Remove the blobs and layers among `digests`/`diff_ids` that nothing references any more. */
int64_t kap_store_gc_some(struct kap_store *s, char *const *digests, size_t n_digests,
			  char *const *diff_ids, size_t n_diff_ids, struct kapsel_error **err);
/* The manifest digest itself, or for an index the linux/amd64 manifest it lists. */
int kap_store_resolve_manifest(struct kap_store *s, const char *digest, char *resolved,
			       struct kapsel_error **err);
/* The embedded default image (busybox:latest): loaded from the layout directory built with
 * kapsel when `name` is that image and it is missing. Returns 1 when loaded, else 0. */
int kap_image_ensure_default(struct kap_store *s, const char *name, struct kapsel_error **err);

/* unpack.c: gzip through libarchive even when ISA-L is there (tests of the fallback). */
void kap_unpack_force_gzip_fallback(bool on);
/* Magic numbers: gzip 1f 8b, zstd 28 b5 2f fd; anything else reads as uncompressed. */
enum kap_compression kap_compression_detect(const void *buf, size_t len);
/* Sequential reading of a (possibly compressed) tar, for archive.c: entries' cleaned paths
 * (".." rejected), type 'f' regular, 'd' dir, 'l' symlink, 'h' hardlink, 'o' other. */
struct kap_tar;
int kap_tar_open(int fd, enum kap_compression c, struct kap_tar **out, struct kapsel_error **err);
int kap_tar_next(struct kap_tar *t, const char **path, char *type, int64_t *size,
		 struct kapsel_error **err);
ssize_t kap_tar_read(struct kap_tar *t, const void **buf, struct kapsel_error **err);
/* Target of the current 'l' or 'h' entry (as stored). Caller frees. */
int kap_tar_link(struct kap_tar *t, char **target, bool *hard, struct kapsel_error **err);
void kap_tar_close(struct kap_tar *t);

/* archive.c: local sources. */
/* Load an OCI layout directory, an oci-archive or a docker-archive into the store; all-or-
 * nothing: blobs and layers are staged and verified before anything is renamed into place.
 * *names (NULL-terminated, optional) receives the stored names. */
int kap_archive_load(struct kap_store *s, const char *path, char ***names,
		     struct kapsel_error **err);
/* Write the images (stored names or manifest digests) as an oci-archive tarball. */
int kap_archive_save(struct kap_store *s, char *const *names, size_t n, const char *path,
		     struct kapsel_error **err);

/* blob-sources.c: the repositories a blob was pulled from or pushed to (push's mount hint).
 * Best effort: add returns -errno without an error object. kap_blob_sources lists (NULL-
 * terminated, caller frees; *out NULL when none) the repositories on `registry` other than
 * `except`, returning their count. */
int kap_blob_source_add(struct kap_store *s, const char *digest, const char *registry,
			const char *repository);
int kap_blob_sources(struct kap_store *s, const char *digest, const char *registry,
		     const char *except, char ***out);

/* tag.c: a name as `kapsel tag` and `kapsel build -t` store it: podman's localhost/ for a name
 * without a registry part, then canonical (kap_ref_string). Caller frees. */
int kap_image_local_name(const char *in, char **out, struct kapsel_error **err);
/* The stored image a user means: a name, a reference, localhost/NAME (as tag and build -t
 * store it) or an ID prefix. *name (optional) as kap_store_lookup gives it. */
int kap_image_find(struct kap_store *s, const char *image, char **name, char *digest,
		   struct kapsel_error **err);
/* manifest-list.c: manifest lists (image indexes) the store names. */
/* 1 and *doc (a validated index) when blob digest is an index, 0 (*doc NULL) when not. */
int kap_store_read_index(struct kap_store *s, const char *digest, struct kap_json **doc,
			 struct kapsel_error **err);
bool kap_store_is_index(struct kap_store *s, const char *digest);
/* ---- logs.c: container logs in k8s-file format ---- */
struct kapsel_logs_options;
/* Appends one read's worth of the container's stdout (or stderr) to the log as records. */
void kap_log_record(int logfd, bool is_err, const char *p, size_t n);
/*
 * Prints the records of the log open at fd as o asks; with o->follow until done(ctx) says the
 * container finished (then what remains).
 */
int kap_log_read(int fd, const struct kapsel_logs_options *o, bool (*done)(void *), void *ctx,
		 struct kapsel_error **err);
