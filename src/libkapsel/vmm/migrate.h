/* SPDX-License-Identifier: Apache-2.0 */
/* migrate.c's pure pieces, for its unit test (tests/unit/test-vmm-migrate.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

/* CRC-32C (Castagnoli) of n bytes, continuing crc (0 to start): the stream's frame check. */
uint32_t kap_migrate_crc32c(uint32_t crc, const void *data, size_t n);
/* The same without SSE4.2 (slice-by-8 tables). */
uint32_t kap_migrate_crc32c_sw(uint32_t crc, const void *data, size_t n);
/* 0 when s is "unix:PATH" or "tcp:127.0.0.1:PORT"; else -EINVAL naming it. */
int kap_migrate_check_addr(const char *s, struct kapsel_error **err);
/*
 * Connects to s ("unix:PATH" or "tcp:127.0.0.1:PORT"; ECONNREFUSED tried again for a second,
 * a destination listens a moment after it binds): the socket, or -errno naming the step.
 */
int kap_migrate_dial(const char *s, struct kapsel_error **err);
