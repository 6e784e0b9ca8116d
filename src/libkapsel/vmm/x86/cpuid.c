/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPUID for the guest: KVM_GET_SUPPORTED_CPUID (what this KVM and CPU can virtualise), then
 * the hypervisor bit and KVM's paravirt signature (leaf 0x40000000, so Linux finds kvmclock),
 * the bits KVM reports only through capabilities (TSC-deadline: KVM_CAP_TSC_DEADLINE_TIMER;
 * x2APIC: emulated by the in-kernel LAPIC, api.rst KVM_GET_SUPPORTED_CPUID; QEMU sets both),
 * the topology (every vCPU a core of one socket; APIC id = vCPU id), and the user's
 * --cpu-features masks. Masking matters where KVM cannot run an instruction the CPU reports:
 * on hosts whose KVM emulates guest code, xsave and friends end in an internal error.
 * Bit positions: Intel SDM vol. 2A, CPUID; KVM leaves: Documentation/virt/kvm/x86/cpuid.rst.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "vmm/x86/x86.h"

enum reg { EAX, EBX, ECX, EDX };

struct feature {
	const char *name;
	uint32_t leaf, index;
	enum reg reg;
	uint8_t bit;
	const char *implies; /* features that cannot stay without this one, comma separated */
};

static const struct feature features[] = {
    {"fpu", 1, 0, EDX, 0, NULL},
    {"tsc", 1, 0, EDX, 4, NULL},
    {"msr", 1, 0, EDX, 5, NULL},
    {"pae", 1, 0, EDX, 6, NULL},
    {"apic", 1, 0, EDX, 9, NULL},
    {"sep", 1, 0, EDX, 11, NULL},
    {"mtrr", 1, 0, EDX, 12, NULL},
    {"pge", 1, 0, EDX, 13, NULL},
    {"cmov", 1, 0, EDX, 15, NULL},
    {"pat", 1, 0, EDX, 16, NULL},
    {"clflush", 1, 0, EDX, 19, NULL},
    {"mmx", 1, 0, EDX, 23, NULL},
    {"fxsr", 1, 0, EDX, 24, NULL},
    {"sse", 1, 0, EDX, 25, "sse2"},
    {"sse2", 1, 0, EDX, 26, "sse3"},
    {"sse3", 1, 0, ECX, 0, "ssse3"},
    {"pclmulqdq", 1, 0, ECX, 1, NULL},
    {"ssse3", 1, 0, ECX, 9, "sse4_1"},
    {"fma", 1, 0, ECX, 12, NULL},
    {"cx16", 1, 0, ECX, 13, NULL},
    {"pcid", 1, 0, ECX, 17, "invpcid"},
    {"sse4_1", 1, 0, ECX, 19, "sse4_2"},
    {"sse4_2", 1, 0, ECX, 20, "avx"},
    {"x2apic", 1, 0, ECX, 21, NULL},
    {"movbe", 1, 0, ECX, 22, NULL},
    {"popcnt", 1, 0, ECX, 23, NULL},
    {"tsc-deadline", 1, 0, ECX, 24, NULL},
    {"aes", 1, 0, ECX, 25, NULL},
    {"xsave", 1, 0, ECX, 26, "osxsave,avx,xsaveopt,xsavec,xsaves,xgetbv1"},
    {"osxsave", 1, 0, ECX, 27, NULL},
    {"avx", 1, 0, ECX, 28, "avx2,fma,f16c,avx512f"},
    {"f16c", 1, 0, ECX, 29, NULL},
    {"rdrand", 1, 0, ECX, 30, NULL},
    {"hypervisor", 1, 0, ECX, 31, NULL},
    {"fsgsbase", 7, 0, EBX, 0, NULL},
    {"bmi1", 7, 0, EBX, 3, NULL},
    {"hle", 7, 0, EBX, 4, NULL},
    {"avx2", 7, 0, EBX, 5, NULL},
    {"smep", 7, 0, EBX, 7, NULL},
    {"bmi2", 7, 0, EBX, 8, NULL},
    {"erms", 7, 0, EBX, 9, NULL},
    {"invpcid", 7, 0, EBX, 10, NULL},
    {"rtm", 7, 0, EBX, 11, NULL},
    {"avx512f", 7, 0, EBX, 16, NULL},
    {"rdseed", 7, 0, EBX, 18, NULL},
    {"adx", 7, 0, EBX, 19, NULL},
    {"smap", 7, 0, EBX, 20, NULL},
    {"clflushopt", 7, 0, EBX, 23, NULL},
    {"clwb", 7, 0, EBX, 24, NULL},
    {"sha", 7, 0, EBX, 29, NULL},
    {"umip", 7, 0, ECX, 2, NULL},
    {"pku", 7, 0, ECX, 3, NULL},
    {"la57", 7, 0, ECX, 16, NULL},
    {"rdpid", 7, 0, ECX, 22, NULL},
    {"xsaveopt", 0xd, 1, EAX, 0, NULL},
    {"xsavec", 0xd, 1, EAX, 1, NULL},
    {"xgetbv1", 0xd, 1, EAX, 2, NULL},
    {"xsaves", 0xd, 1, EAX, 3, NULL},
    {"lahf_lm", 0x80000001, 0, ECX, 0, NULL},
    {"abm", 0x80000001, 0, ECX, 5, NULL},
    {"prefetchw", 0x80000001, 0, ECX, 8, NULL},
    {"syscall", 0x80000001, 0, EDX, 11, NULL},
    {"nx", 0x80000001, 0, EDX, 20, NULL},
    {"pdpe1gb", 0x80000001, 0, EDX, 26, NULL},
    {"rdtscp", 0x80000001, 0, EDX, 27, NULL},
    {"lm", 0x80000001, 0, EDX, 29, NULL},
    {"kvmclock", 0x40000001, 0, EAX, 0, NULL},
    {"kvmclock2", 0x40000001, 0, EAX, 3, NULL},
    {"async-pf", 0x40000001, 0, EAX, 4, NULL},
    {"steal-time", 0x40000001, 0, EAX, 5, NULL},
    {"pv-eoi", 0x40000001, 0, EAX, 6, NULL},
    {"pv-unhalt", 0x40000001, 0, EAX, 7, NULL},
};

static const struct feature *find_feature(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (strlen(features[i].name) == len && !strncmp(features[i].name, name, len))
			return &features[i];
	return NULL;
}

static struct kvm_cpuid_entry2 *find_entry(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == leaf &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index))
			return e;
	}
	return NULL;
}

static uint32_t *reg_of(struct kvm_cpuid_entry2 *e, enum reg r)
{
	switch (r) {
	case EAX:
		return &e->eax;
	case EBX:
		return &e->ebx;
	case ECX:
		return &e->ecx;
	default:
		return &e->edx;
	}
}

static void clear_feature(struct kvm_cpuid2 *c, const struct feature *f, int depth)
{
	struct kvm_cpuid_entry2 *e = find_entry(c, f->leaf, f->index);
	if (e)
		*reg_of(e, f->reg) &= ~(1u << f->bit);
	if (!f->implies || depth > 8)
		return;
	for (const char *p = f->implies; *p;) {
		size_t n = strcspn(p, ",");
		const struct feature *g = find_feature(p, n);
		if (g)
			clear_feature(c, g, depth + 1);
		p += n + (p[n] == ',');
	}
}

/* Walks "-a,+b,c": calls apply for each, or only validates when c is NULL. */
static int walk_features(const char *s, struct kvm_cpuid2 *c, struct kapsel_error **err)
{
	if (!s)
		return 0;
	for (const char *p = s; *p;) {
		size_t n = strcspn(p, ",");
		if (n == 0) {
			p++;
			continue;
		}
		bool off = p[0] == '-';
		const char *name = (p[0] == '-' || p[0] == '+') ? p + 1 : p;
		size_t nlen = n - (size_t)(name - p);
		const struct feature *f = find_feature(name, nlen);
		if (!f)
			return kap_error_plain(err, EINVAL,
					       "--cpu-features: unknown feature \"%.*s\"",
					       (int)nlen, name);
		if (c && off) {
			clear_feature(c, f, 0);
			/* Without xsave the state-component leaf must not advertise anything. */
			if (f->leaf == 1 && f->reg == ECX && f->bit == 26) {
				for (uint32_t i = 0; i < c->nent; i++)
					if (c->entries[i].function == 0xd)
						c->entries[i].eax = c->entries[i].ebx =
						    c->entries[i].ecx = c->entries[i].edx = 0;
			}
		} else if (c) {
			struct kvm_cpuid_entry2 *e = find_entry(c, f->leaf, f->index);
			if (!e || !(*reg_of(e, f->reg) & (1u << f->bit)))
				return kap_error_plain(err, ENOTSUP,
						       "--cpu-features: %s is not supported by "
						       "this host's KVM",
						       f->name);
		}
		p += n + (p[n] == ',');
	}
	return 0;
}

int kap_x86_cpuid_check_features(const char *s, struct kapsel_error **err)
{
	return walk_features(s, NULL, err);
}

int kap_x86_cpuid_build(const struct kvm_cpuid2 *supported, const char *feats, unsigned int ncpus,
			unsigned int caps, struct kvm_cpuid2 **out, struct kapsel_error **err)
{
	/* Room for the KVM signature leaves should KVM not list them. */
	size_t n = supported->nent + 2;
	cleanup_free struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
	if (!c)
		return kap_error(err, ENOMEM, "cpuid");
	memcpy(c, supported, sizeof(*c) + supported->nent * sizeof(c->entries[0]));

	struct kvm_cpuid_entry2 *e = find_entry(c, 1, 0);
	if (e) {
		e->ecx |= 1u << 31; /* hypervisor present */
		/*
		 * KVM_GET_SUPPORTED_CPUID leaves these out because they depend on how the VM is
		 * built (api.rst, KVM_GET_SUPPORTED_CPUID): TSC-deadline needs the in-kernel LAPIC
		 * timer, x2APIC the in-kernel irqchip. Offered before the user's masks, so
		 * "-tsc-deadline" removes it and "+tsc-deadline" finds it.
		 */
		if (caps & KAP_CPUID_CAP_TSC_DEADLINE)
			e->ecx |= 1u << 24;
		if (caps & KAP_CPUID_CAP_X2APIC)
			e->ecx |= 1u << 21;
	}
	if (!find_entry(c, 0x40000000, 0)) {
		struct kvm_cpuid_entry2 *s = &c->entries[c->nent++];
		*s = (struct kvm_cpuid_entry2){.function = 0x40000000, .eax = 0x40000001};
		memcpy(&s->ebx, "KVMKVMKVM\0\0\0", 12);
		c->entries[c->nent++] = (struct kvm_cpuid_entry2){.function = 0x40000001};
	}
	int r = walk_features(feats, c, err);
	if (r < 0)
		return r;
	(void)ncpus;
	*out = steal_ptr(c);
	return 0;
}

static unsigned int bits_for(unsigned int n)
{
	unsigned int b = 0;
	while ((1u << b) < n)
		b++;
	return b;
}

int kap_x86_cpuid_set(int fd, const struct kvm_cpuid2 *tmpl, unsigned int id, unsigned int ncpus,
		      struct kapsel_error **err)
{
	size_t sz = sizeof(*tmpl) + tmpl->nent * sizeof(tmpl->entries[0]);
	cleanup_free struct kvm_cpuid2 *c = malloc(sz);
	if (!c)
		return kap_error(err, ENOMEM, "cpuid");
	memcpy(c, tmpl, sz);
	unsigned int shift = bits_for(ncpus);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		switch (e->function) {
		case 1:
			/* Initial APIC id, logical processors per package, HTT when > 1. */
			e->ebx = (e->ebx & 0x0000ffffu) | (id << 24) | ((ncpus & 0xff) << 16);
			if (ncpus > 1)
				e->edx |= 1u << 28;
			else
				e->edx &= ~(1u << 28);
			break;
		case 4:
			/* Cores per package - 1 in EAX[31:26]; caches shared by no other core. */
			if (e->eax & 0x1f)
				e->eax = (e->eax & 0x3fffu) | ((ncpus - 1) << 26);
			break;
		case 0xb:
		case 0x1f:
			/* x2APIC topology: level 0 SMT (1 thread), level 1 core (ncpus). */
			if (e->index == 0) {
				e->eax = 0;
				e->ebx = 1;
				e->ecx = (1u << 8) | 0;
			} else if (e->index == 1) {
				e->eax = shift;
				e->ebx = ncpus;
				e->ecx = (2u << 8) | 1;
			} else {
				e->eax = e->ebx = 0;
				e->ecx = e->index;
			}
			e->edx = id;
			break;
		case 0x80000008:
			/* AMD: cores per package - 1. */
			e->ecx = (e->ecx & ~0xffu) | (ncpus - 1);
			break;
		}
	}
	if (ioctl(fd, KVM_SET_CPUID2, c) < 0)
		return kap_error(err, errno, "KVM_SET_CPUID2 (vCPU %u)", id);
	return 0;
}
