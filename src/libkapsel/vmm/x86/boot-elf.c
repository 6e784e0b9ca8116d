/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Just enough ELF for kernels: the PT_LOAD segments (by p_paddr, which is where a kernel
 * linked at a high virtual address wants to sit in RAM) and PT_NOTE lookups. ELF32 and ELF64,
 * little endian, x86 only. The file is hostile input: every offset and size is checked against
 * the file length before use, and no sum may wrap.
 */
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "core/error.h"
#include "vmm/x86/boot.h"

bool kap_elf_is_elf(const uint8_t *buf, size_t len)
{
	return len >= EI_NIDENT && !memcmp(buf, ELFMAG, SELFMAG);
}

/* In-range check for [off, off+size) inside a buffer of len bytes, without overflow. */
static bool in_file(uint64_t off, uint64_t size, size_t len)
{
	return off <= len && size <= len - off;
}

struct phdr {
	uint32_t type;
	uint64_t offset, paddr, filesz, memsz;
};

/* Reads the header table; returns the count or -errno. */
static int read_phdrs(const uint8_t *buf, size_t len, struct phdr *out, int max,
		      struct kapsel_error **err)
{
	if (!kap_elf_is_elf(buf, len))
		return kap_error_plain(err, ENOEXEC, "not an ELF file");
	bool is64 = buf[EI_CLASS] == ELFCLASS64;
	if ((!is64 && buf[EI_CLASS] != ELFCLASS32) || buf[EI_DATA] != ELFDATA2LSB)
		return kap_error_plain(err, ENOEXEC, "ELF: not a little-endian ELF32/ELF64 file");
	uint64_t phoff;
	uint16_t phnum, phentsize, machine;
	if (is64) {
		Elf64_Ehdr eh;
		if (len < sizeof(eh))
			return kap_error_plain(err, ENOEXEC, "ELF: truncated header");
		memcpy(&eh, buf, sizeof(eh));
		phoff = eh.e_phoff;
		phnum = eh.e_phnum;
		phentsize = eh.e_phentsize;
		machine = eh.e_machine;
		if (phentsize != sizeof(Elf64_Phdr))
			return kap_error_plain(err, ENOEXEC, "ELF: bad program header size %u",
					       phentsize);
	} else {
		Elf32_Ehdr eh;
		if (len < sizeof(eh))
			return kap_error_plain(err, ENOEXEC, "ELF: truncated header");
		memcpy(&eh, buf, sizeof(eh));
		phoff = eh.e_phoff;
		phnum = eh.e_phnum;
		phentsize = eh.e_phentsize;
		machine = eh.e_machine;
		if (phentsize != sizeof(Elf32_Phdr))
			return kap_error_plain(err, ENOEXEC, "ELF: bad program header size %u",
					       phentsize);
	}
	if (machine != EM_X86_64 && machine != EM_386)
		return kap_error_plain(err, ENOEXEC, "ELF: machine %u is not x86", machine);
	if (phnum > max)
		return kap_error_plain(err, ENOEXEC, "ELF: %u program headers (at most %d)", phnum,
				       max);
	if (!in_file(phoff, (uint64_t)phnum * phentsize, len))
		return kap_error_plain(err, ENOEXEC,
				       "ELF: program headers past the end of the file");
	for (int i = 0; i < phnum; i++) {
		const uint8_t *p = buf + phoff + (uint64_t)i * phentsize;
		if (is64) {
			Elf64_Phdr ph;
			memcpy(&ph, p, sizeof(ph));
			out[i] = (struct phdr){ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz,
					       ph.p_memsz};
		} else {
			Elf32_Phdr ph;
			memcpy(&ph, p, sizeof(ph));
			out[i] = (struct phdr){ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz,
					       ph.p_memsz};
		}
	}
	return phnum;
}

#define MAX_PHDRS 64

int kap_elf_load_segments(const uint8_t *buf, size_t len, struct kap_boot_image *img,
			  struct kapsel_error **err)
{
	struct phdr ph[MAX_PHDRS];
	int n = read_phdrs(buf, len, ph, MAX_PHDRS, err);
	if (n < 0)
		return n;
	img->nsegs = 0;
	img->end = 0;
	for (int i = 0; i < n; i++) {
		if (ph[i].type != PT_LOAD || ph[i].memsz == 0)
			continue;
		if (img->nsegs == KAP_BOOT_MAX_SEGS)
			return kap_error_plain(err, ENOEXEC, "ELF: more than %d PT_LOAD segments",
					       KAP_BOOT_MAX_SEGS);
		if (!in_file(ph[i].offset, ph[i].filesz, len))
			return kap_error_plain(err, ENOEXEC,
					       "ELF: segment %d (%llu bytes at offset %llu) past "
					       "the end of the file (truncated kernel?)",
					       i, (unsigned long long)ph[i].filesz,
					       (unsigned long long)ph[i].offset);
		if (ph[i].filesz > ph[i].memsz || ph[i].paddr + ph[i].memsz < ph[i].paddr)
			return kap_error_plain(err, ENOEXEC, "ELF: segment %d has bad sizes", i);
		img->segs[img->nsegs++] = (struct kap_boot_seg){
		    .offset = ph[i].offset,
		    .paddr = ph[i].paddr,
		    .filesz = ph[i].filesz,
		    .memsz = ph[i].memsz,
		};
		if (ph[i].paddr + ph[i].memsz > img->end)
			img->end = ph[i].paddr + ph[i].memsz;
	}
	if (img->nsegs == 0)
		return kap_error_plain(err, ENOEXEC, "ELF: no loadable segments");
	return 0;
}

int kap_elf_find_note(const uint8_t *buf, size_t len, const char *name, uint32_t type,
		      const uint8_t **desc, uint32_t *desc_len, struct kapsel_error **err)
{
	struct phdr ph[MAX_PHDRS];
	int n = read_phdrs(buf, len, ph, MAX_PHDRS, err);
	if (n < 0)
		return n;
	size_t name_len = strlen(name) + 1;
	for (int i = 0; i < n; i++) {
		if (ph[i].type != PT_NOTE)
			continue;
		if (!in_file(ph[i].offset, ph[i].filesz, len))
			return kap_error_plain(err, ENOEXEC,
					       "ELF: note segment past the end of the file");
		const uint8_t *p = buf + ph[i].offset;
		uint64_t left = ph[i].filesz;
		/* Elf32_Nhdr and Elf64_Nhdr are the same 12 bytes; name and desc pad to 4. */
		while (left >= sizeof(Elf32_Nhdr)) {
			Elf32_Nhdr nh;
			memcpy(&nh, p, sizeof(nh));
			uint64_t nsz = ((uint64_t)nh.n_namesz + 3) & ~3ULL;
			uint64_t dsz = ((uint64_t)nh.n_descsz + 3) & ~3ULL;
			if (nsz > left - sizeof(nh) || dsz > left - sizeof(nh) - nsz)
				return kap_error_plain(err, ENOEXEC, "ELF: truncated note");
			const uint8_t *nm = p + sizeof(nh);
			if (nh.n_type == type && nh.n_namesz == name_len &&
			    !memcmp(nm, name, name_len)) {
				*desc = nm + nsz;
				*desc_len = nh.n_descsz;
				return 1;
			}
			p += sizeof(nh) + nsz + dsz;
			left -= sizeof(nh) + nsz + dsz;
		}
	}
	return 0;
}
