/* SPDX-License-Identifier: Apache-2.0 */
/* The VM's settings: size and console syntax, and vm.json (through core/json.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "vmm/vmm.h"

#define API __attribute__((visibility("default")))

API void kapsel_vm_config_clear(struct kapsel_vm_config *c)
{
	free(c->kernel);
	free(c->initrd);
	free(c->cmdline);
	free(c->cpu_model);
	free(c->cpu_features);
	free(c->console_path);
	for (unsigned int i = 0; i < c->ndisks; i++) {
		free(c->disks[i].id);
		free(c->disks[i].path);
		free(c->disks[i].serial);
	}
	for (unsigned int i = 0; i < c->nnets; i++) {
		free(c->nets[i].id);
		free(c->nets[i].tap);
		free(c->nets[i].bridge);
	}
	for (unsigned int i = 0; i < c->nfs; i++) {
		free(c->fs[i].tag);
		free(c->fs[i].path);
	}
	free(c->vsock_path);
	free(c->name);
	free(c->api_sock);
	free(c->runtime_dir);
	free(c->restore_mem);
	free(c->restore_state);
	memset(c, 0, sizeof(*c));
}

static bool valid_id(const char *s)
{
	if (!*s || strlen(s) > 24)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
			return false;
	return true;
}

API int kapsel_vm_parse_disk(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err)
{
	if (c->ndisks == KAPSEL_VM_MAX_DISKS)
		return kap_error_plain(err, E2BIG, "--disk %s: at most %d disks", s,
				       KAPSEL_VM_MAX_DISKS);
	cleanup_free char *copy = strdup(s);
	if (!copy)
		return kap_error(err, ENOMEM, "--disk");
	struct kapsel_vm_disk d = {0};
	char *save = NULL, *path = strtok_r(copy, ",", &save);
	if (!path || copy[0] == ',')
		return kap_error_plain(err, EINVAL,
				       "--disk %s: expected PATH[,ro][,serial=S]"
				       "[,cache=none|writeback][,format=raw|qcow2|auto][,id=ID]",
				       s);
	const char *serial = NULL, *id = NULL;
	for (char *o = strtok_r(NULL, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		if (!strcmp(o, "ro")) {
			d.ro = true;
		} else if (!strncmp(o, "serial=", 7)) {
			serial = o + 7;
			/* VIRTIO_BLK_ID_BYTES: the id the driver reads is 20 bytes, unterminated.
			 */
			if (strlen(serial) > 20)
				return kap_error_plain(err, EINVAL,
						       "--disk %s: serial longer than 20 bytes", s);
		} else if (!strcmp(o, "cache=none")) {
			d.cache = KAPSEL_VM_CACHE_NONE;
		} else if (!strcmp(o, "cache=writeback")) {
			d.cache = KAPSEL_VM_CACHE_WRITEBACK;
		} else if (!strcmp(o, "format=raw")) {
			d.format = KAPSEL_VM_DISK_RAW;
		} else if (!strcmp(o, "format=qcow2")) {
			d.format = KAPSEL_VM_DISK_QCOW2;
		} else if (!strcmp(o, "format=auto")) {
			d.format = KAPSEL_VM_DISK_AUTO;
		} else if (!strncmp(o, "id=", 3)) {
			id = o + 3;
			if (!valid_id(id))
				return kap_error_plain(
				    err, EINVAL,
				    "--disk %s: id must be 1-24 letters, digits, - or _", s);
		} else {
			return kap_error_plain(err, EINVAL,
					       "--disk %s: unknown option \"%s\" (expected ro, "
					       "serial=S, cache=none|writeback, id=ID, "
					       "format=raw|qcow2|auto)",
					       s, o);
		}
	}
	char defid[16];
	if (!id) {
		snprintf(defid, sizeof(defid), "disk%u", c->ndisks);
		id = defid;
	}
	for (unsigned int i = 0; i < c->ndisks; i++)
		if (!strcmp(c->disks[i].id, id))
			return kap_error_plain(err, EEXIST, "--disk %s: id %s already used", s, id);
	d.id = strdup(id);
	d.path = strdup(path);
	d.serial = serial ? strdup(serial) : NULL;
	if (!d.id || !d.path || (serial && !d.serial)) {
		free(d.id);
		free(d.path);
		free(d.serial);
		return kap_error(err, ENOMEM, "--disk");
	}
	c->disks[c->ndisks++] = d;
	return 0;
}

/* "52:54:00:12:34:56": six hex pairs; a multicast address cannot be a card's. */
static bool parse_mac(const char *s, uint8_t mac[6])
{
	for (int i = 0; i < 6; i++) {
		unsigned int v = 0;
		for (int k = 0; k < 2; k++, s++) {
			char ch = *s;
			int x = ch >= '0' && ch <= '9'	 ? ch - '0'
				: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
				: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
							 : -1;
			if (x < 0)
				return false;
			v = v << 4 | (unsigned int)x;
		}
		mac[i] = (uint8_t)v;
		if (*s != (i == 5 ? '\0' : ':'))
			return false;
		s++;
	}
	return !(mac[0] & 1);
}

/* An interface name the kernel would accept (dev_valid_name): 1-15 bytes, no '/', ':', space. */
static bool valid_ifname(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= 16 || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	return !strpbrk(s, "/: \t\n");
}

API int kapsel_vm_parse_net(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err)
{
	static const char usage[] = "expected tap=NAME or bridge=BR, then [,mac=M][,id=ID]";
	if (c->nnets == KAPSEL_VM_MAX_NETS)
		return kap_error_plain(err, E2BIG, "--net %s: at most %d network cards", s,
				       KAPSEL_VM_MAX_NETS);
	cleanup_free char *copy = strdup(s);
	if (!copy)
		return kap_error(err, ENOMEM, "--net");
	struct kapsel_vm_net n = {0};
	const char *tap = NULL, *bridge = NULL, *id = NULL;
	char *save = NULL;
	if (!*s || s[strlen(s) - 1] == ',' || strstr(s, ",,") || s[0] == ',')
		return kap_error_plain(err, EINVAL, "--net %s: %s", s, usage);
	for (char *o = strtok_r(copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		const char **slot = NULL;
		if (!strncmp(o, "tap=", 4))
			slot = &tap;
		else if (!strncmp(o, "bridge=", 7))
			slot = &bridge;
		if (slot) {
			const char *v = strchr(o, '=') + 1;
			if (tap || bridge)
				return kap_error_plain(err, EINVAL,
						       "--net %s: one of tap= or bridge=, once", s);
			if (!valid_ifname(v))
				return kap_error_plain(
				    err, EINVAL, "--net %s: \"%s\" is not an interface name", s, v);
			*slot = v;
		} else if (!strncmp(o, "mac=", 4)) {
			if (!parse_mac(o + 4, n.mac))
				return kap_error_plain(err, EINVAL,
						       "--net %s: mac=%s is not a unicast MAC "
						       "address (expected e.g. 52:54:00:12:34:56)",
						       s, o + 4);
			n.has_mac = true;
		} else if (!strncmp(o, "id=", 3)) {
			id = o + 3;
			if (!valid_id(id))
				return kap_error_plain(
				    err, EINVAL,
				    "--net %s: id must be 1-24 letters, digits, - or _", s);
		} else {
			return kap_error_plain(err, EINVAL, "--net %s: unknown option \"%s\" (%s)",
					       s, o, usage);
		}
	}
	if (!tap && !bridge)
		return kap_error_plain(err, EINVAL, "--net %s: %s", s, usage);
	char defid[16];
	if (!id) {
		snprintf(defid, sizeof(defid), "net%u", c->nnets);
		id = defid;
	}
	for (unsigned int i = 0; i < c->nnets; i++) {
		if (!strcmp(c->nets[i].id, id))
			return kap_error_plain(err, EEXIST, "--net %s: id %s already used", s, id);
		if (tap && c->nets[i].tap && !strcmp(c->nets[i].tap, tap))
			return kap_error_plain(err, EEXIST, "--net %s: tap %s already used", s,
					       tap);
	}
	n.id = strdup(id);
	n.tap = tap ? strdup(tap) : NULL;
	n.bridge = bridge ? strdup(bridge) : NULL;
	if (!n.id || (tap && !n.tap) || (bridge && !n.bridge)) {
		free(n.id);
		free(n.tap);
		free(n.bridge);
		return kap_error(err, ENOMEM, "--net");
	}
	c->nets[c->nnets++] = n;
	return 0;
}

/* virtio 1.2 §5.11.4: the tag is at most 36 bytes; kapsel keeps it to a portable alphabet. */
static bool valid_tag(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 36)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

API int kapsel_vm_parse_fs(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err)
{
	static const char usage[] = "expected tag=NAME,path=DIR[,ro]";
	if (c->nfs >= KAPSEL_VM_MAX_FS)
		return kap_error_plain(err, E2BIG, "--fs %s: at most %d shares", s,
				       KAPSEL_VM_MAX_FS);
	cleanup_free char *copy = strdup(s);
	if (!copy)
		return kap_error(err, ENOMEM, "--fs");
	const char *tag = NULL, *path = NULL;
	bool ro = false;
	char *save = NULL;
	for (char *o = strtok_r(copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		if (!strncmp(o, "tag=", 4) && !tag) {
			tag = o + 4;
			if (!valid_tag(tag))
				return kap_error_plain(err, EINVAL,
						       "--fs %s: tag must be 1-36 letters, digits, "
						       "'.', '-' or '_'",
						       s);
		} else if (!strncmp(o, "path=", 5) && o[5] && !path) {
			path = o + 5;
		} else if (!strcmp(o, "ro")) {
			ro = true;
		} else {
			return kap_error_plain(err, EINVAL,
					       "--fs %s: unknown or repeated option "
					       "\"%s\" (%s)",
					       s, o, usage);
		}
	}
	if (!tag || !path)
		return kap_error_plain(err, EINVAL, "--fs %s: %s", s, usage);
	for (unsigned int i = 0; i < c->nfs; i++)
		if (!strcmp(c->fs[i].tag, tag))
			return kap_error_plain(err, EEXIST, "--fs %s: tag %s already used", s, tag);
	struct stat st;
	if (stat(path, &st) < 0)
		return kap_error(err, errno, "--fs %s: path %s", s, path);
	if (!S_ISDIR(st.st_mode))
		return kap_error_plain(err, ENOTDIR, "--fs %s: path %s is not a directory", s,
				       path);
	struct kapsel_vm_fs f = {.tag = strdup(tag), .path = strdup(path), .ro = ro};
	if (!f.tag || !f.path) {
		free(f.tag);
		free(f.path);
		return kap_error(err, ENOMEM, "--fs");
	}
	c->fs[c->nfs++] = f;
	return 0;
}

API int kapsel_vm_parse_vsock(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err)
{
	static const char usage[] = "expected cid=N,socket=PATH with N >= 3";
	if (c->vsock_path)
		return kap_error_plain(err, EEXIST, "--vsock %s: only one vsock device", s);
	cleanup_free char *copy = strdup(s);
	if (!copy)
		return kap_error(err, ENOMEM, "--vsock");
	const char *path = NULL;
	uint64_t cid = 0;
	bool have_cid = false;
	char *save = NULL;
	for (char *o = strtok_r(copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		if (!strncmp(o, "cid=", 4)) {
			char *end;
			errno = 0;
			cid = strtoull(o + 4, &end, 10);
			/*
			 * virtio 1.2 §5.10.4: 0-2 are the hypervisor, local and host; the CID is
			 * 64-bit in the header but Linux's guest driver keeps 32 bits (and
			 * U32_MAX is VMADDR_CID_ANY).
			 */
			if (errno || end == o + 4 || *end || o[4] < '0' || o[4] > '9' || cid < 3 ||
			    cid >= UINT32_MAX)
				return kap_error_plain(
				    err, EINVAL, "--vsock %s: cid must be 3 to 4294967294", s);
			have_cid = true;
		} else if (!strncmp(o, "socket=", 7) && o[7]) {
			path = o + 7;
		} else {
			return kap_error_plain(
			    err, EINVAL, "--vsock %s: unknown option \"%s\" (%s)", s, o, usage);
		}
	}
	if (!have_cid || !path)
		return kap_error_plain(err, EINVAL, "--vsock %s: %s", s, usage);
	/* sun_path holds 108 bytes, and guest ports add "_4294967295". */
	if (strlen(path) > 108 - 12)
		return kap_error_plain(err, ENAMETOOLONG,
				       "--vsock %s: socket path longer than 96 bytes", s);
	c->vsock_path = strdup(path);
	if (!c->vsock_path)
		return kap_error(err, ENOMEM, "--vsock");
	c->vsock_cid = (uint32_t)cid;
	return 0;
}

API int kapsel_vm_parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	unsigned int shift = 0;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	}
	if (*end == 'i' && shift) /* "256MiB" */
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end || v == 0 || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

API int kapsel_vm_parse_acpi(const char *s, struct kapsel_vm_config *c)
{
	if (!strcmp(s, "reduced"))
		c->acpi_full = false;
	else if (!strcmp(s, "full"))
		c->acpi_full = true;
	else
		return -EINVAL;
	return 0;
}

API int kapsel_vm_parse_transport(const char *s, struct kapsel_vm_config *c)
{
	if (!strcmp(s, "pci"))
		c->transport = KAPSEL_VM_TRANSPORT_PCI;
	else if (!strcmp(s, "mmio"))
		c->transport = KAPSEL_VM_TRANSPORT_MMIO;
	else
		return -EINVAL;
	return 0;
}

API int kapsel_vm_parse_console(const char *s, struct kapsel_vm_config *c)
{
	if (!strcmp(s, "stdio")) {
		c->console = KAPSEL_VM_CONSOLE_STDIO;
	} else if (!strcmp(s, "none")) {
		c->console = KAPSEL_VM_CONSOLE_NONE;
	} else if (!strncmp(s, "file:", 5) && s[5]) {
		char *p = strdup(s + 5);
		if (!p)
			return -ENOMEM;
		free(c->console_path);
		c->console_path = p;
		c->console = KAPSEL_VM_CONSOLE_FILE;
		return 0;
	} else {
		return -EINVAL;
	}
	free(c->console_path);
	c->console_path = NULL;
	return 0;
}

static int read_str(const struct kap_json *j, const char *key, char **field,
		    struct kapsel_error **err)
{
	char *v = NULL;
	int r = kap_json_read_string(j, "", key, &v, err);
	if (r < 0)
		return r;
	if (v) {
		free(*field);
		*field = v;
	}
	return 0;
}

/* key: an array of device strings in the flag's syntax, each parsed into c. */
static int read_devices(const struct kap_json *j, const char *key,
			int (*parse)(const char *, struct kapsel_vm_config *,
				     struct kapsel_error **),
			struct kapsel_vm_config *c, struct kapsel_error **err)
{
	struct kap_json *arr = kap_json_get(j, key);
	if (!arr)
		return 0;
	if (kap_json_type(arr) != KAP_JSON_ARRAY)
		return kap_error_plain(err, EINVAL, "%s: expected an array of strings", key);
	for (size_t i = 0; i < kap_json_array_len(arr); i++) {
		struct kap_json *e = kap_json_array_at(arr, i);
		if (kap_json_type(e) != KAP_JSON_STRING)
			return kap_error_plain(err, EINVAL, "%s[%zu]: expected a string", key, i);
		int r = parse(kap_json_string(e), c, err);
		if (r < 0)
			return kap_error_wrap(err, "%s[%zu]", key, i);
	}
	return 0;
}

API int kapsel_vm_config_load(const char *path, struct kapsel_vm_config *c,
			      struct kapsel_error **err)
{
	cleanup_json struct kap_json *j = NULL;
	/* Declared before the first goto: cleanup variables must not be jumped over. */
	cleanup_free char *console = NULL, *transport = NULL, *vsock = NULL, *acpi = NULL;
	int r = kap_json_parse_file(path, &j, err);
	if (r < 0)
		return r;
	if (kap_json_type(j) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected a JSON object", path);
	static const char *const known[] = {"kernel",
					    "initrd",
					    "cmdline",
					    "mem",
					    "cpus",
					    "cpu_features",
					    "console",
					    "debug_exit",
					    "pit",
					    "transport",
					    "disks",
					    "nets",
					    "vsock",
					    "rng",
					    "virtio_console",
					    "virtio_mmio_cmdline",
					    "mem_shared",
					    "mem_hugepages",
					    "mem_merge",
					    "cpu_model",
					    "acpi",
					    "fs"};
	struct kap_json_iter it = kap_json_iter(j);
	const char *key;
	struct kap_json *val;
	while (kap_json_iter_next(&it, &key, &val)) {
		bool ok = false;
		for (size_t i = 0; i < KAP_ARRAY_SIZE(known); i++)
			ok |= !strcmp(key, known[i]);
		if (!ok)
			return kap_error_plain(err, EINVAL, "%s: %s: unknown setting", path, key);
	}
	if ((r = read_str(j, "kernel", &c->kernel, err)) < 0 ||
	    (r = read_str(j, "initrd", &c->initrd, err)) < 0 ||
	    (r = read_str(j, "cmdline", &c->cmdline, err)) < 0 ||
	    (r = read_str(j, "cpu_model", &c->cpu_model, err)) < 0 ||
	    (r = read_str(j, "cpu_features", &c->cpu_features, err)) < 0)
		goto fail;
	struct kap_json *mem = kap_json_get(j, "mem");
	if (mem) {
		if (kap_json_type(mem) == KAP_JSON_INT && kap_json_int64(mem) > 0) {
			c->mem_size = (uint64_t)kap_json_int64(mem);
		} else if (kap_json_type(mem) != KAP_JSON_STRING ||
			   kapsel_vm_parse_size(kap_json_string(mem), &c->mem_size) < 0) {
			r = kap_error_plain(err, EINVAL,
					    "mem: expected a size (\"256M\", \"1G\") or bytes");
			goto fail;
		}
	}
	uint64_t cpus = 0;
	bool found_cpus = kap_json_get(j, "cpus") != NULL;
	if ((r = kap_json_read_uint64(j, "", "cpus", &cpus, err)) < 0)
		goto fail;
	if (found_cpus) {
		if (cpus == 0 || cpus > 1024) {
			r = kap_error_plain(err, EINVAL, "cpus: expected 1 to 1024");
			goto fail;
		}
		c->cpus = (unsigned int)cpus;
	}
	if ((r = kap_json_read_string(j, "", "console", &console, err)) < 0)
		goto fail;
	if (console && kapsel_vm_parse_console(console, c) < 0) {
		r = kap_error_plain(err, EINVAL, "console: expected stdio, none or file:PATH");
		goto fail;
	}
	bool debug_exit = !c->no_debug_exit;
	if ((r = kap_json_read_bool(j, "", "debug_exit", &debug_exit, err)) < 0)
		goto fail;
	c->no_debug_exit = !debug_exit;
	if ((r = kap_json_read_bool(j, "", "mem_shared", &c->mem_shared, err)) < 0 ||
	    (r = kap_json_read_bool(j, "", "mem_hugepages", &c->mem_hugepages, err)) < 0 ||
	    (r = kap_json_read_bool(j, "", "mem_merge", &c->mem_merge, err)) < 0)
		goto fail;
	bool pit = !c->no_pit;
	if ((r = kap_json_read_bool(j, "", "pit", &pit, err)) < 0)
		goto fail;
	c->no_pit = !pit;
	if ((r = kap_json_read_string(j, "", "acpi", &acpi, err)) < 0)
		goto fail;
	if (acpi && kapsel_vm_parse_acpi(acpi, c) < 0) {
		r = kap_error_plain(err, EINVAL, "acpi: expected reduced or full, got \"%s\"",
				    acpi);
		goto fail;
	}
	if ((r = kap_json_read_string(j, "", "transport", &transport, err)) < 0)
		goto fail;
	if (transport && kapsel_vm_parse_transport(transport, c) < 0) {
		r = kap_error_plain(err, EINVAL, "transport: expected pci or mmio");
		goto fail;
	}
	if ((r = read_devices(j, "disks", kapsel_vm_parse_disk, c, err)) < 0 ||
	    (r = read_devices(j, "nets", kapsel_vm_parse_net, c, err)) < 0 ||
	    (r = read_devices(j, "fs", kapsel_vm_parse_fs, c, err)) < 0 ||
	    (r = kap_json_read_string(j, "", "vsock", &vsock, err)) < 0)
		goto fail;
	if (vsock && (r = kapsel_vm_parse_vsock(vsock, c, err)) < 0) {
		kap_error_wrap(err, "vsock");
		goto fail;
	}
	if ((r = kap_json_read_bool(j, "", "rng", &c->rng, err)) < 0 ||
	    (r = kap_json_read_bool(j, "", "virtio_console", &c->virtio_console, err)) < 0 ||
	    (r = kap_json_read_bool(j, "", "virtio_mmio_cmdline", &c->virtio_mmio_cmdline, err)) <
		0)
		goto fail;
	return 0;
fail:
	return kap_error_wrap(err, "%s", path);
}
