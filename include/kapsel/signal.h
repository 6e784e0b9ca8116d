/* SPDX-License-Identifier: Apache-2.0 */
/* Signal names as runc, podman and kill(1) accept them. Used by every engine, so it lives apart
 * from any of them. */
#pragma once

/* "KILL", "SIGKILL", "9" -> 9; -EINVAL when unknown. */
int kapsel_signal_parse(const char *s);
