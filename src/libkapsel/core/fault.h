/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named points in multi-step operations where the fault tests stop the runtime
 * (KAPSEL_FAULT_STOP=<name> makes the process SIGSTOP itself there, so a test can SIGKILL it at
 * exactly that step and check that `delete --force` leaves nothing behind). Affects only the
 * process whose environment sets it.
 */
#pragma once

void kap_fault_point(const char *name);
