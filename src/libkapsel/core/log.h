/* SPDX-License-Identifier: Apache-2.0 */
#pragma once
#include <kapsel/log.h>

#define kap_debug(...) kapsel_log(KAPSEL_LOG_DEBUG, __VA_ARGS__)
#define kap_info(...)  kapsel_log(KAPSEL_LOG_INFO, __VA_ARGS__)
#define kap_warn(...)  kapsel_log(KAPSEL_LOG_WARNING, __VA_ARGS__)

extern int kap_log_debug_enabled;

/* The log fd (stderr unless --log): a process entering a container keeps it until execve, as
 * runc's init keeps its log pipe; it is O_CLOEXEC and never a directory. */
int kap_log_fd(void);
