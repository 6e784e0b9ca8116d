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
	free(c->incoming);
	free(c->firmware);
	free(c->firmware_log);
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

/* A decimal number in [0, max], the whole of s. */
static bool parse_number(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = v;
	return true;
}

API int kapsel_vm_parse_balloon(const char *s, struct kapsel_vm_config *c,
				struct kapsel_error **err)
{
	static const char usage[] = "expected amount_mib=N, deflate_on_oom=on|off, "
				    "stats_interval_s=N or free_page_reporting=on|off";
	cleanup_free char *copy = strdup(s);
	if (!copy)
		return kap_error(err, ENOMEM, "--balloon");
	struct kapsel_vm_balloon b = {.enabled = true};
	char *save = NULL;
	for (char *o = strtok_r(copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		char *v = strchr(o, '=');
		if (v)
			*v++ = 0;
		if (!v && !strcmp(o, "on"))
			continue; /* --balloon on: the defaults */
		uint64_t n = 0;
		bool *flag = !strcmp(o, "deflate_on_oom")	 ? &b.deflate_on_oom
			     : !strcmp(o, "free_page_reporting") ? &b.free_page_reporting
								 : NULL;
		if (flag && v && (!strcmp(v, "on") || !strcmp(v, "off"))) {
			*flag = !strcmp(v, "on");
		} else if (!strcmp(o, "amount_mib") && v) {
			/* num_pages is 32 bits of 4 KiB pages (virtio 1.2 §5.5.4). */
			if (!parse_number(v, UINT32_MAX >> 8, &n))
				return kap_error_plain(err, EINVAL,
						       "--balloon %s: amount_mib: expected a "
						       "number of MiB, got \"%s\"",
						       s, v);
			b.amount_mib = n;
		} else if (!strcmp(o, "stats_interval_s") && v) {
			if (!parse_number(v, 86400, &n))
				return kap_error_plain(err, EINVAL,
						       "--balloon %s: stats_interval_s: expected 0 "
						       "to 86400 seconds, got \"%s\"",
						       s, v);
			b.stats_interval_s = (unsigned int)n;
		} else {
			return kap_error_plain(err, EINVAL,
					       "--balloon %s: bad option \"%s%s%s\" (%s)", s, o,
					       v ? "=" : "", v ? v : "", usage);
		}
	}
	c->balloon = b;
	return 0;
}

/* "jail": true, "jail_uid", "jail_gid" (docs/vm.md, Jailer): host ids, 1 to 4294967294. */
static int read_jail(const struct kap_json *j, struct kapsel_vm_config *c,
		     struct kapsel_error **err)
{
	int r = kap_json_read_bool(j, "", "jail", &c->jail, err);
	if (r < 0)
		return r;
	const char *keys[] = {"jail_uid", "jail_gid"};
	uint32_t *ids[] = {&c->jail_uid, &c->jail_gid};
	for (size_t i = 0; i < 2; i++) {
		uint64_t v = KAPSEL_VM_JAIL_DEFAULT_ID;
		bool found = kap_json_get(j, keys[i]) != NULL;
		if ((r = kap_json_read_uint64(j, "", keys[i], &v, err)) < 0)
			return r;
		if (found && !c->jail)
			return kap_error_plain(err, EINVAL, "%s: needs \"jail\": true", keys[i]);
		if (v == 0 || v >= 0xffffffffULL)
			return kap_error_plain(
			    err, EINVAL, "%s: expected a host id from 1 to 4294967294", keys[i]);
		*ids[i] = c->jail ? (uint32_t)v : 0;
	}
	return 0;
}

/* vm.json's "balloon": {"amount_mib", "deflate_on_oom", "stats_interval_s", "free_page_reporting"}.
 */
static int read_balloon(const struct kap_json *j, struct kapsel_vm_config *c,
			struct kapsel_error **err)
{
	struct kap_json *o = NULL;
	int r = kap_json_read_member(j, "", "balloon", KAP_JSON_OBJECT, &o, err);
	if (r < 0 || !o)
		return r;
	static const char *const known[] = {"amount_mib", "deflate_on_oom", "stats_interval_s",
					    "free_page_reporting"};
	struct kap_json_iter it = kap_json_iter(o);
	const char *key;
	struct kap_json *val;
	while (kap_json_iter_next(&it, &key, &val)) {
		bool ok = false;
		for (size_t i = 0; i < KAP_ARRAY_SIZE(known); i++)
			ok |= !strcmp(key, known[i]);
		if (!ok)
			return kap_error_plain(err, EINVAL, "balloon.%s: unknown setting", key);
	}
	struct kapsel_vm_balloon b = {.enabled = true};
	uint64_t interval = 0;
	if ((r = kap_json_read_uint64(o, "balloon", "amount_mib", &b.amount_mib, err)) < 0 ||
	    (r = kap_json_read_uint64(o, "balloon", "stats_interval_s", &interval, err)) < 0 ||
	    (r = kap_json_read_bool(o, "balloon", "deflate_on_oom", &b.deflate_on_oom, err)) < 0 ||
	    (r = kap_json_read_bool(o, "balloon", "free_page_reporting", &b.free_page_reporting,
				    err)) < 0)
		return r;
	if (b.amount_mib > (UINT32_MAX >> 8))
		return kap_error_plain(err, EINVAL, "balloon.amount_mib: at most %u MiB",
				       UINT32_MAX >> 8);
	if (interval > 86400)
		return kap_error_plain(err, EINVAL, "balloon.stats_interval_s: at most 86400");
	b.stats_interval_s = (unsigned int)interval;
	c->balloon = b;
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

API int kapsel_vm_parse_accel(const char *s, struct kapsel_vm_config *c)
{
	if (!strcmp(s, "auto"))
		c->accel = KAPSEL_VM_ACCEL_AUTO;
	else if (!strcmp(s, "kvm"))
		c->accel = KAPSEL_VM_ACCEL_KVM;
	else if (!strcmp(s, "soft"))
		c->accel = KAPSEL_VM_ACCEL_SOFT;
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
	cleanup_free char *console = NULL, *transport = NULL, *vsock = NULL, *acpi = NULL,
			  *accel = NULL;
	int r = kap_json_parse_file(path, &j, err);
	if (r < 0)
		return r;
	if (kap_json_type(j) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected a JSON object", path);
	static const char *const known[] = {
	    "kernel",	  "initrd",	   "cmdline",	     "mem",
	    "cpus",	  "cpu_features",  "console",	     "debug_exit",
	    "pit",	  "transport",	   "disks",	     "nets",
	    "vsock",	  "rng",	   "virtio_console", "virtio_mmio_cmdline",
	    "mem_shared", "mem_hugepages", "mem_merge",	     "cpu_model",
	    "acpi",	  "balloon",	   "firmware",	     "firmware_log",
	    "fs",	  "jail",	   "jail_uid",	     "jail_gid",
	    "accel"};
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
	    (r = read_str(j, "cpu_features", &c->cpu_features, err)) < 0 ||
	    (r = read_str(j, "firmware", &c->firmware, err)) < 0 ||
	    (r = read_str(j, "firmware_log", &c->firmware_log, err)) < 0)
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
	if ((r = kap_json_read_string(j, "", "accel", &accel, err)) < 0)
		goto fail;
	if (accel && kapsel_vm_parse_accel(accel, c) < 0) {
		r = kap_error_plain(err, EINVAL, "accel: expected kvm, soft or auto, got \"%s\"",
				    accel);
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
		0 ||
	    (r = read_balloon(j, c, err)) < 0 || (r = read_jail(j, c, err)) < 0)
		goto fail;
	return 0;
fail:
	return kap_error_wrap(err, "%s", path);
}
