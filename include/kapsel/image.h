/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image store as a library: load/save images from local files, list, inspect, remove and
 * prune them. `store` is the store directory; NULL means the default (/var/lib/kapsel for root,
 * ~/.local/share/kapsel otherwise). Every call returns >= 0 on success and a negative errno
 * with *err set on failure.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

/* The name the embedded default image is stored under. */
#define KAPSEL_DEFAULT_IMAGE "docker.io/library/busybox:latest"

struct kapsel_image_info {
	char *name;	  /* as stored: "docker.io/library/busybox:latest" */
	char *repository; /* "docker.io/library/busybox" */
	char *tag;	  /* "latest"; "<none>" for a digest-only name */
	char *digest;	  /* manifest digest */
	char id[13];	  /* first 12 hex digits of the config digest (podman's IMAGE ID) */
	char full_id[65]; /* all of them (podman's Id) */
	char *created;	  /* RFC 3339 from the image config; "" when absent */
	int64_t size;	  /* bytes of config + layers as stored */
};
int kapsel_image_list(const char *store, struct kapsel_image_info **list, size_t *n,
		      struct kapsel_error **err);
void kapsel_image_info_free(struct kapsel_image_info *list, size_t n);

/*
 * Load an OCI layout directory, an oci-archive or a docker-archive (`podman save`). *names
 * (optional, NULL-terminated; free with kapsel_image_names_free) receives the stored names.
 */
int kapsel_image_load(const char *store, const char *path, char ***names,
		      struct kapsel_error **err);
void kapsel_image_names_free(char **names);
/* Save images (names, short names or IDs) to an oci-archive tarball at path. */
int kapsel_image_save(const char *store, char *const *images, size_t n, const char *path,
		      struct kapsel_error **err);
/*
 * rmi: remove a name (by ID: every name of the image) and the blobs and layers only it used.
 * Refuses (-EBUSY) an image a container uses unless force, which then only removes the name.
 */
int kapsel_image_remove(const char *store, const char *image, bool force,
			struct kapsel_error **err);
/* Pretty JSON: Id, Digest, RepoTags, Created, Architecture, Os, Size, Config, RootFS, Layers. */
int kapsel_image_inspect(const char *store, const char *image, char **json,
			 struct kapsel_error **err);
/* Remove blobs and layers no image or container references; returns the bytes freed. */
int64_t kapsel_image_prune(const char *store, struct kapsel_error **err);
/*
 * Load the embedded busybox image (built with kapsel) when KAPSEL_DEFAULT_IMAGE is not in the
 * store. Returns 1 when it loaded it, 0 when it was there already.
 */
int kapsel_image_ensure_default(const char *store, struct kapsel_error **err);

/* tag: give IMAGE another name (bare names get podman's localhost/). */
int kapsel_image_tag(const char *store, const char *image, const char *name,
		     struct kapsel_error **err);
/* untag: remove the given names of IMAGE (all of its names when n is 0); blobs stay. */
int kapsel_image_untag(const char *store, const char *image, char *const *names, size_t n,
		       struct kapsel_error **err);
struct kapsel_history_entry {
	char *created;	  /* RFC 3339, "" when unknown */
	char *created_by; /* the instruction ("" when unknown) */
	char *comment;
	int64_t size; /* compressed bytes of the layer it made; 0 for an empty layer */
	bool empty_layer;
};
/* The image config's history, newest first (one line per layer when it has none). */
int kapsel_image_history(const char *store, const char *image, struct kapsel_history_entry **out,
			 size_t *n, struct kapsel_error **err);
void kapsel_history_free(struct kapsel_history_entry *v, size_t n);

/*
 * Manifest lists (OCI image indexes), podman's `manifest` commands: an index stored as a blob
 * with a name (bare names get localhost/) pointing at it. digest_out (optional,
 * KAPSEL_DIGEST_SIZE bytes from <kapsel/registry.h>) receives the list's new index digest.
 * Push one with kapsel_push (<kapsel/registry.h>).
 */
struct kapsel_manifest_add_options {
	const char *os, *arch, *variant; /* the entry's platform; NULL: from the image config */
	/* IMAGE names an index (a list, or a multi-platform image pulled through one): add every
	 * entry it lists, not the one for the platform asked (default linux/amd64). */
	bool all;
};
/* A new list of images (none: empty); -EEXIST when the name is taken. */
int kapsel_manifest_create(const char *store, const char *list, char *const *images, size_t n,
			   bool all, char *digest_out, struct kapsel_error **err);
/* Add a stored image; a manifest the list has is replaced, another manifest for a platform
 * the list has is refused (-EEXIST). */
int kapsel_manifest_add(const char *store, const char *list, const char *image,
			const struct kapsel_manifest_add_options *o, char *digest_out,
			struct kapsel_error **err);
/* Remove the entry for manifest digest (sha256:HEX or HEX) from the list. */
int kapsel_manifest_remove(const char *store, const char *list, const char *digest,
			   char *digest_out, struct kapsel_error **err);
/* The list's index, pretty JSON (caller frees). */
int kapsel_manifest_inspect(const char *store, const char *list, char **json,
			    struct kapsel_error **err);
/* Remove the list (not the images it names). */
int kapsel_manifest_delete(const char *store, const char *list, struct kapsel_error **err);
