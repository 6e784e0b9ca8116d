/* SPDX-License-Identifier: Apache-2.0 */
/*
 * --format templates as podman takes them: Go text/template syntax over a JSON document
 * ({{.State.Pid}}, {{json .Config}}, {{range .Config.Env}}{{.}} {{end}}). Parse once, render
 * for each object. Every call returns >= 0 on success and a negative errno with *err set
 * ("template: 1:8: can't evaluate field Pidd in .State (no such field)").
 */
#pragma once
#include <kapsel/error.h>

struct kapsel_template;

int kapsel_template_parse(const char *text, struct kapsel_template **out,
			  struct kapsel_error **err);
/* Render with dot = the JSON document json; *out (caller frees) is the text produced. */
int kapsel_template_render(const struct kapsel_template *t, const char *json, char **out,
			   struct kapsel_error **err);
void kapsel_template_free(struct kapsel_template *t);
