/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Go text/template as podman's --format uses it, over JSON documents: text with actions
 * ({{.State.Pid}}, {{json .Config}}, {{range .Config.Env}}{{.}} {{end}}). See template.c for
 * the subset and the limits that bound a hostile template.
 */
#pragma once
#include <stddef.h>

#include <kapsel/error.h>

#include "core/json.h"

struct kapsel_template;

/* Parse text (len bytes, NUL bytes allowed only as text). Errors name line:column. */
int kap_template_parse(const char *text, size_t len, struct kapsel_template **out,
		       struct kapsel_error **err);
/*
 * Execute t with dot = doc; *out receives the NUL-terminated output (caller frees), *len its
 * length. An unknown field, a wrong type or a limit reached fails with line:column.
 */
int kap_template_exec(const struct kapsel_template *t, const struct kap_json *doc, char **out,
		      size_t *len, struct kapsel_error **err);
void kap_template_free(struct kapsel_template *t);
