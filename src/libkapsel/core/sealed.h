/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Remove the `.kapsel-exe.<pid>.<random>` mount points (and any bind mount still on them) that a
 * runtime killed inside kapsel_runtime_seal left in dir, the state root. Only those whose
 * creator pid is gone: a live runtime's mount point is in use for a moment. Best effort.
 */
void kap_sealed_sweep(const char *dir);
