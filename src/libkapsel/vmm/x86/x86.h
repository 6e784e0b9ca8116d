/* SPDX-License-Identifier: Apache-2.0 */
/* x86 vCPU state: registers at entry (regs.c) and CPUID (cpuid.c). */
#pragma once
#include <linux/kvm.h>
#include <stdint.h>

#include <kapsel/error.h>

#include "vmm/x86/boot.h"

/* Segment registers, control registers, GPRs, FPU, boot MSRs, LAPIC LINT0/LINT1. */
int kap_x86_vcpu_init(int vcpu_fd, const struct kap_boot_entry *entry, bool bsp,
		      struct kapsel_error **err);

/*
 * The CPUID template for this VM: KVM's supported set with the hypervisor bit, KVM's paravirt
 * leaves, the --cpu-model (NULL: host) and the user's --cpu-features applied. Caller frees.
 */
/* Bits KVM offers only through capabilities (kap_x86_cpuid_build's caps). */
#define KAP_CPUID_CAP_TSC_DEADLINE (1u << 0) /* KVM_CAP_TSC_DEADLINE_TIMER */
#define KAP_CPUID_CAP_X2APIC	   (1u << 1) /* in-kernel irqchip */
int kap_x86_cpuid_build(const struct kvm_cpuid2 *supported, const char *model, const char *features,
			unsigned int ncpus, unsigned int caps, struct kvm_cpuid2 **out,
			struct kapsel_error **err);
/* Sets vCPU id's APIC ids in a copy of the template and installs it (KVM_SET_CPUID2). */
int kap_x86_cpuid_set(int vcpu_fd, const struct kvm_cpuid2 *tmpl, unsigned int id,
		      unsigned int ncpus, struct kapsel_error **err);
/* Checks a --cpu-model name (NULL: none) and parses --cpu-features without applying them. */
int kap_x86_cpuid_check_features(const char *model, const char *features,
				 struct kapsel_error **err);
