/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named points in multi-step operations where the fault tests stop the runtime
 * (KAPSEL_FAULT_STOP=<name> makes the process SIGSTOP itself there, so a test can SIGKILL it at
 * exactly that step and check that `delete --force` leaves nothing behind). Affects only the
 * process whose environment sets it.
 */
#pragma once
#include <sys/types.h>

void kap_fault_point(const char *name);

/*
 * For a process that works on behalf of the one a test started (the monitor of a foreground
 * `kapsel run`): from now on a fault point stops that process (parent) instead, and this one
 * dies with it when the test kills it, or goes on when it is continued. So "kill kapsel at
 * this step" still means the process doing the step.
 */
void kap_fault_proxy(pid_t parent);
