/* SPDX-License-Identifier: Apache-2.0 */
/*
 * --format templates (core/template.c): what Go's text/template prints for podman's common
 * formats, and the one-line errors (with line:column) for unknown fields and bad templates.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/json.h"
#include "core/template.h"

static const char doc_text[] =
    "{\"Name\":\"web\",\"Id\":\"abc\",\"State\":{\"Pid\":42,\"Running\":true,\"ExitCode\":0,"
    "\"Status\":\"running\"},\"Config\":{\"Env\":[\"A=1\",\"B=2\"],\"Cmd\":[\"sh\"],"
    "\"Labels\":{\"z\":\"last\",\"a\":\"first\",\"dotted.key\":\"v\"},\"Empty\":[],"
    "\"Nothing\":null,\"Ratio\":1.5,\"Off\":false},\"Names\":[\"web\",\"www\"]}";

static struct kap_json *doc(void)
{
	struct kap_json *j = NULL;
	assert_int_equal(kap_json_parse(doc_text, strlen(doc_text), "doc", &j, NULL), 0);
	return j;
}

static void ok(const char *tmpl, const char *want)
{
	struct kapsel_template *t = NULL;
	struct kapsel_error *err = NULL;
	if (kap_template_parse(tmpl, strlen(tmpl), &t, &err) < 0)
		fail_msg("parse %s: %s", tmpl, err->msg);
	struct kap_json *d = doc();
	char *out = NULL;
	size_t len = 0;
	if (kap_template_exec(t, d, &out, &len, &err) < 0)
		fail_msg("exec %s: %s", tmpl, err->msg);
	if (strcmp(out, want))
		fail_msg("%s: got \"%s\", want \"%s\"", tmpl, out, want);
	assert_int_equal(len, strlen(want));
	free(out);
	kap_json_put(d);
	kap_template_free(t);
}

/* Fails at parse (parse=true) or at execution, with a one-line message containing want. */
static void bad(const char *tmpl, bool parse, const char *want)
{
	struct kapsel_template *t = NULL;
	struct kapsel_error *err = NULL;
	int r = kap_template_parse(tmpl, strlen(tmpl), &t, &err);
	if (parse) {
		if (r >= 0)
			fail_msg("%s: parsed", tmpl);
	} else {
		if (r < 0)
			fail_msg("%s: parse: %s", tmpl, err->msg);
		struct kap_json *d = doc();
		char *out = NULL;
		r = kap_template_exec(t, d, &out, NULL, &err);
		kap_json_put(d);
		kap_template_free(t);
		if (r >= 0)
			fail_msg("%s: rendered \"%s\"", tmpl, out);
	}
	assert_int_equal(r, -EINVAL);
	assert_non_null(err);
	if (!strstr(err->msg, want) || strchr(err->msg, '\n'))
		fail_msg("%s: message \"%s\" lacks \"%s\"", tmpl, err->msg, want);
	kapsel_error_free(err);
}

static void test_fields(void **state)
{
	(void)state;
	ok("", "");
	ok("plain text", "plain text");
	ok("{{.State.Pid}}", "42");
	ok("{{.Name}}", "web");
	ok("pid={{.State.Pid}} name={{.Name}}!", "pid=42 name=web!");
	ok("{{.Config.Env}}", "[A=1 B=2]");
	ok("{{.Config.Labels}}", "map[a:first dotted.key:v z:last]");
	ok("{{.Config.Nothing}}", "<no value>");
	ok("{{.Config.Ratio}} {{.Config.Off}} {{.State.Running}}", "1.5 false true");
	ok("{{ .State.Status }}", "running");
	ok("{{$.Name}}", "web");
	/* Go field names over camelCase JSON keys. */
	ok("{{.Config.Labels.A}} {{.ID}}", "first abc");
	ok("{{.}}", "map[Config:map[Cmd:[sh] Empty:[] Env:[A=1 B=2] Labels:map[a:first "
		    "dotted.key:v z:last] Nothing:<nil> Off:false Ratio:1.5] Id:abc Name:web "
		    "Names:[web www] State:map[ExitCode:0 Pid:42 Running:true Status:running]]");
	ok("{{/* a comment */}}x", "x");
	ok("a  {{- .Name -}}  b", "awebb");
	ok("a {{-3}}", "a -3");
	ok("{{\"lit\\t\"}}{{`raw\\n`}}{{7}}", "lit\traw\\n7");
}

static void test_functions(void **state)
{
	(void)state;
	ok("{{json .Config.Env}}", "[\"A=1\",\"B=2\"]");
	ok("{{json .State}}",
	   "{\"Pid\":42,\"Running\":true,\"ExitCode\":0,\"Status\":\"running\"}");
	ok("{{json .Name}}", "\"web\"");
	ok("{{.Config.Env | json}}", "[\"A=1\",\"B=2\"]");
	ok("{{join .Config.Env \",\"}}", "A=1,B=2");
	ok("{{index .Config.Labels \"dotted.key\"}}", "v");
	ok("{{index .Config.Labels \"missing\"}}", "");
	ok("{{index .Names 1}}", "www");
	ok("{{len .Names}} {{len .Config.Labels}} {{len .Name}}", "2 3 3");
	ok("{{upper .Name}} {{.Name | upper}} {{lower \"AbC\"}} {{title \"ab cd\"}}",
	   "WEB WEB abc Ab Cd");
	ok("{{truncate .Id 2}} {{truncate .Id 10}}", "ab abc");
	ok("{{eq .State.Status \"running\"}} {{ne .State.Pid 42}} {{not .Config.Off}}",
	   "true false true");
	ok("{{and .State.Running .Name}} {{or .Config.Off \"x\"}}", "web x");
}

static void test_control(void **state)
{
	(void)state;
	ok("{{range .Config.Env}}[{{.}}]{{end}}", "[A=1][B=2]");
	ok("{{range .Config.Empty}}x{{else}}none{{end}}", "none");
	ok("{{range .Config.Labels}}{{.}},{{end}}", "first,v,last,");
	ok("{{range .Names}}{{$.Name}}:{{.}} {{end}}", "web:web web:www ");
	ok("{{if .State.Running}}up{{else}}down{{end}}", "up");
	ok("{{if .Config.Off}}up{{else}}down{{end}}", "down");
	ok("{{if eq .State.Status \"running\"}}yes{{end}}", "yes");
	ok("{{with .State}}{{.Pid}}{{end}}", "42");
	ok("{{with .Config.Nothing}}x{{else}}empty{{end}}", "empty");
	ok("{{range .Config.Env -}}\n  {{.}}\n{{- end}}", "A=1B=2");
}

static void test_errors(void **state)
{
	(void)state;
	bad("{{.State.Pidd}}", false, "1:3: can't evaluate field Pidd in .State (no such field)");
	bad("abc\n  {{.Nope}}", false, "2:5: can't evaluate field Nope");
	bad("{{json .Nope}}", false, "1:8: can't evaluate field Nope");
	bad("{{.Name.X}}", false, "can't evaluate field X in .Name (string)");
	bad("{{.Config.Nothing.X}}", false, "no value");
	bad("{{index .Names 5}}", false, "index out of range: 5");
	bad("{{join .Name \",\"}}", false, "join: expected a list");
	bad("{{range .Name}}{{end}}", false, "range can't iterate over a string");
	bad("{{.Name", true, "1:1: unclosed action");
	bad("{{}}", true, "missing value");
	bad("{{nosuch .Name}}", true, "1:3: function \"nosuch\" not defined");
	bad("{{.Name .Id}}", true, "non-function");
	bad("{{if .Name}}x", true, "{{if}} has no {{end}}");
	bad("{{end}}", true, "{{end}} without");
	bad("{{else}}", true, "{{else}} without");
	bad("{{if 1}}{{else}}{{else}}{{end}}", true, "second {{else}}");
	bad("{{\"abc}}", true, "unterminated string");
	bad("{{\"\\q\"}}", true, "unknown escape");
	bad("{{.A.}}", true, "expected a field name");
	bad("{{$x := 1}}", true, "variables other than $");
	bad("{{(.Name)}}", true, "parenthesised");
	bad("{{.Name | .Id}}", true, "only continue with a function");
	bad("{{.Name |}}", true, "missing command");
	bad("{{json}}", false, "json takes 1 argument, got 0");
	bad("{{/* open", true, "unclosed comment");
	bad("{{99999999999999999999}}", true, "number out of range");
	bad("{{template \"x\"}}", true, "not supported");
}

static void test_limits(void **state)
{
	(void)state;
	/* Nesting deeper than the limit is refused at parse, not by the stack. */
	char deep[64 * 10 + 64 * 7 + 16] = "";
	for (int i = 0; i < 65; i++)
		strcat(deep, "{{if 1}}");
	bad(deep, true, "nested actions");
	/* Nested ranges multiply: the work bound stops them with an error. */
	static const char wide[] =
	    "{\"a\":[0,1,2,3,4,5,6,7,8,9,0,1,2,3,4,5,6,7,8,9,0,1,2,3,4,5,6,7,8,9]}";
	struct kap_json *d = NULL;
	assert_int_equal(kap_json_parse(wide, strlen(wide), "wide", &d, NULL), 0);
	const char *t6 = "{{range $.a}}{{range $.a}}{{range $.a}}{{range $.a}}{{range $.a}}"
			 "{{range $.a}}{{end}}{{end}}{{end}}{{end}}{{end}}{{end}}";
	struct kapsel_template *t = NULL;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_template_parse(t6, strlen(t6), &t, NULL), 0);
	char *out = NULL;
	assert_int_equal(kap_template_exec(t, d, &out, NULL, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "too much work"));
	kapsel_error_free(err);
	kap_template_free(t);
	kap_json_put(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fields),  cmocka_unit_test(test_functions),
	    cmocka_unit_test(test_control), cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
