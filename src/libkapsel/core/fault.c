/* SPDX-License-Identifier: Apache-2.0 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "core/fault.h"

void kap_fault_point(const char *name)
{
	const char *want = getenv("KAPSEL_FAULT_STOP");
	if (want && !strcmp(want, name))
		raise(SIGSTOP);
}
