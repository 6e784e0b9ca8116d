/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest CPUID template (kap_x86_cpuid_build) from a synthetic KVM_GET_SUPPORTED_CPUID
 * that has every bit: the --cpu-model feature sets bit by bit, --cpu-features on top of them,
 * pcid and invpcid apart, and the combinations refused.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/error.h"
#include "vmm/x86/x86.h"

#define CAPS (KAP_CPUID_CAP_TSC_DEADLINE | KAP_CPUID_CAP_X2APIC)

/* Every feature register full; leaf 0xd with components 0-9 and their sub-leaves. */
static struct kvm_cpuid2 *everything(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 32 * sizeof(c->entries[0]));
	assert_non_null(c);
	const uint32_t S = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
	struct kvm_cpuid_entry2 e[] = {
	    {.function = 0, .eax = 0xd},
	    {.function = 1, .ecx = 0x7fffffff, .edx = 0xffffffff},
	    {.function = 7, .index = 0, .flags = S, .eax = 1, .ebx = ~0u, .ecx = ~0u, .edx = ~0u},
	    {.function = 7, .index = 1, .flags = S, .eax = ~0u},
	    {.function = 0xd, .index = 0, .flags = S, .eax = 0x2ff, .ebx = 0xa88, .ecx = 0xa88},
	    {.function = 0xd, .index = 1, .flags = S, .eax = 0xf, .ecx = 0x1800},
	    {.function = 0xd, .index = 2, .flags = S, .eax = 0x100, .ebx = 0x240},
	    {.function = 0xd, .index = 5, .flags = S, .eax = 0x40, .ebx = 0x440},
	    {.function = 0xd, .index = 9, .flags = S, .eax = 8, .ebx = 0xa80},
	    {.function = 0x80000000, .eax = 0x80000008},
	    {.function = 0x80000001, .ecx = ~0u, .edx = ~0u},
	};
	c->nent = sizeof(e) / sizeof(e[0]);
	memcpy(c->entries, e, sizeof(e));
	return c;
}

static struct kvm_cpuid_entry2 *leaf(struct kvm_cpuid2 *c, uint32_t fn, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == index)
			return &c->entries[i];
	fail_msg("no leaf %#x.%u", fn, index);
	return NULL;
}

static struct kvm_cpuid2 *build(const char *model, const char *feats)
{
	struct kvm_cpuid2 *sup = everything(), *out = NULL;
	struct kapsel_error *err = NULL;
	int r = kap_x86_cpuid_build(sup, model, feats, 1, CAPS, &out, &err);
	if (r < 0)
		fail_msg("%s", err->msg);
	free(sup);
	return out;
}

static char *build_err(const char *model, const char *feats)
{
	struct kvm_cpuid2 *sup = everything(), *out = NULL;
	struct kapsel_error *err = NULL;
	int r = kap_x86_cpuid_build(sup, model, feats, 1, CAPS, &out, &err);
	free(sup);
	assert_true(r < 0);
	assert_null(out);
	char *m = strdup(err->msg);
	kapsel_error_free(err);
	return m;
}

/* psABI x86-64 baseline: leaf 1 EDX fpu..sse2 less the bits outside it; 0x80000001 EDX. */
/* fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 */
#define V1_EDX	     0x078bfbfdu
#define PLATFORM_ECX ((1u << 31) | (1u << 24) | (1u << 21)) /* hypervisor tsc-deadline x2apic */

static void test_model_v1(void **state)
{
	(void)state;
	struct kvm_cpuid2 *c = build("x86-64-v1", NULL);
	assert_int_equal(leaf(c, 1, 0)->edx, V1_EDX);
	assert_int_equal(leaf(c, 1, 0)->ecx, PLATFORM_ECX);
	assert_int_equal(leaf(c, 7, 0)->ebx, 0);
	assert_int_equal(leaf(c, 7, 0)->ecx, 0);
	assert_int_equal(leaf(c, 7, 0)->edx, 0);
	assert_int_equal(leaf(c, 7, 1)->eax, 0);
	assert_int_equal(leaf(c, 0x80000001, 0)->ecx, 0);
	assert_int_equal(leaf(c, 0x80000001, 0)->edx, (1u << 11) | (1u << 20) | (1u << 29));
	/* No xsave: nothing in leaf 0xd. */
	assert_int_equal(leaf(c, 0xd, 0)->eax, 0);
	assert_int_equal(leaf(c, 0xd, 2)->eax, 0);
	free(c);
}

static void test_model_v2_v3(void **state)
{
	(void)state;
	struct kvm_cpuid2 *c = build("x86-64-v2", NULL);
	/* sse3 0, ssse3 9, cx16 13, sse4_1 19, sse4_2 20, popcnt 23 */
	uint32_t v2 = 1u | (1u << 9) | (1u << 13) | (1u << 19) | (1u << 20) | (1u << 23);
	assert_int_equal(leaf(c, 1, 0)->ecx, PLATFORM_ECX | v2);
	assert_int_equal(leaf(c, 0x80000001, 0)->ecx, 1u); /* lahf_lm */
	free(c);
	c = build("x86-64-v3", NULL);
	/* fma 12, movbe 22, xsave 26, osxsave 27, avx 28, f16c 29 */
	uint32_t v3 =
	    v2 | (1u << 12) | (1u << 22) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 29);
	assert_int_equal(leaf(c, 1, 0)->ecx, PLATFORM_ECX | v3);
	/* bmi1 3, avx2 5, bmi2 8 */
	assert_int_equal(leaf(c, 7, 0)->ebx, (1u << 3) | (1u << 5) | (1u << 8));
	assert_int_equal(leaf(c, 0x80000001, 0)->ecx, 1u | (1u << 5)); /* lahf_lm abm */
	/* XCR0: x87, SSE, AVX; no AVX-512 (5), no PKRU (9); xsaveopt etc. not in v3. */
	assert_int_equal(leaf(c, 0xd, 0)->eax, 7);
	assert_int_equal(leaf(c, 0xd, 1)->eax, 0);
	assert_int_equal(leaf(c, 0xd, 1)->ecx, 0);
	assert_int_equal(leaf(c, 0xd, 2)->eax, 0x100);
	assert_int_equal(leaf(c, 0xd, 5)->eax, 0);
	assert_int_equal(leaf(c, 0xd, 9)->eax, 0);
	free(c);
	c = build("x86-64-v4", NULL);
	/* avx512f 16, dq 17, cd 28, bw 30, vl 31 */
	assert_int_equal(leaf(c, 7, 0)->ebx, (1u << 3) | (1u << 5) | (1u << 8) | (1u << 16) |
						 (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31));
	assert_int_equal(leaf(c, 0xd, 0)->eax, 0xe7);
	assert_int_equal(leaf(c, 0xd, 5)->eax, 0x40);
	free(c);
}

static void test_host_and_max_keep_everything(void **state)
{
	(void)state;
	const char *models[] = {NULL, "host", "max"};
	for (size_t i = 0; i < 3; i++) {
		struct kvm_cpuid2 *c = build(models[i], NULL);
		assert_int_equal(leaf(c, 1, 0)->ecx, 0xffffffffu);
		assert_int_equal(leaf(c, 7, 0)->edx, 0xffffffffu);
		free(c);
	}
}

static void test_named_models(void **state)
{
	(void)state;
	struct kvm_cpuid2 *c = build("Skylake-Client", NULL);
	assert_true(leaf(c, 1, 0)->ecx & (1u << 17));	       /* pcid */
	assert_true(leaf(c, 7, 0)->ebx & (1u << 10));	       /* invpcid */
	assert_false(leaf(c, 7, 0)->ebx & (1u << 16));	       /* no avx512f */
	assert_false(leaf(c, 7, 0)->ebx & (1u << 4));	       /* no hle (TSX) */
	assert_false(leaf(c, 0x80000001, 0)->ecx & (1u << 6)); /* no sse4a */
	assert_int_equal(leaf(c, 0xd, 1)->eax, 0xf);
	free(c);
	c = build("EPYC", NULL);
	assert_true(leaf(c, 0x80000001, 0)->ecx & (1u << 6));  /* sse4a */
	assert_true(leaf(c, 0x80000001, 0)->edx & (1u << 22)); /* mmxext */
	assert_true(leaf(c, 7, 0)->ebx & (1u << 29));	       /* sha */
	assert_false(leaf(c, 1, 0)->ecx & (1u << 17));	       /* no pcid */
	assert_false(leaf(c, 7, 0)->ebx & (1u << 10));	       /* no invpcid */
	free(c);
}

static void test_features_on_top_of_model(void **state)
{
	(void)state;
	/* "+x" adds back what the host has; "-x" removes from the model. */
	struct kvm_cpuid2 *c = build("x86-64-v2", "+aes,-popcnt");
	assert_true(leaf(c, 1, 0)->ecx & (1u << 25));
	assert_false(leaf(c, 1, 0)->ecx & (1u << 23));
	free(c);
	/* pcid and invpcid are independent: either alone. */
	c = build(NULL, "-pcid,+invpcid");
	assert_false(leaf(c, 1, 0)->ecx & (1u << 17));
	assert_true(leaf(c, 7, 0)->ebx & (1u << 10));
	free(c);
	c = build(NULL, "-invpcid");
	assert_true(leaf(c, 1, 0)->ecx & (1u << 17));
	assert_false(leaf(c, 7, 0)->ebx & (1u << 10));
	free(c);
	c = build("x86-64-v2", "+pcid");
	assert_true(leaf(c, 1, 0)->ecx & (1u << 17));
	assert_false(leaf(c, 7, 0)->ebx & (1u << 10));
	free(c);
}

static void test_refused(void **state)
{
	(void)state;
	char *m = build_err("pentium9", NULL);
	assert_string_equal(m, "--cpu-model pentium9: unknown model (known: host, max, x86-64-v1, "
			       "x86-64-v2, x86-64-v3, x86-64-v4, Skylake-Client, EPYC)");
	free(m);
	m = build_err(NULL, "-avx,+avx2");
	assert_string_equal(m, "--cpu-features: +avx2 needs avx, which the CPU model or the list "
			       "leaves out");
	free(m);
	m = build_err("x86-64-v2", "+avx512vl");
	assert_string_equal(m, "--cpu-features: +avx512vl needs avx512f, which the CPU model or "
			       "the list leaves out");
	free(m);
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_x86_cpuid_check_features("x86-64-v9", NULL, &err), -EINVAL);
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_x86_cpuid_check_features("EPYC", "+pcid,-invpcid", &err), 0);
	/* A model on a host without one of its features: named. */
	struct kvm_cpuid2 *sup = everything(), *out = NULL;
	sup->entries[1].ecx &= ~(1u << 23); /* popcnt */
	assert_int_equal(kap_x86_cpuid_build(sup, "x86-64-v2", NULL, 1, CAPS, &out, &err),
			 -ENOTSUP);
	assert_string_equal(err->msg,
			    "--cpu-model x86-64-v2: popcnt is not supported by this host's KVM");
	kapsel_error_free(err);
	free(sup);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_model_v1),
	    cmocka_unit_test(test_model_v2_v3),
	    cmocka_unit_test(test_host_and_max_keep_everything),
	    cmocka_unit_test(test_named_models),
	    cmocka_unit_test(test_features_on_top_of_model),
	    cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
