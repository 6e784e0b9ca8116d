/* SPDX-License-Identifier: Apache-2.0 */
/* The OCI runtime-spec version kapsel implements (its state documents and features name it). */
#pragma once

#define KAPSEL_OCI_VERSION "1.2.0"
