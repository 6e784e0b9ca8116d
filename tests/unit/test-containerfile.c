/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Containerfile parsing and word expansion (Dockerfile reference): every instruction's forms,
 * continuations, comments and directives, and the error text of bad input (file:line and the
 * instruction).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "build/build.h"

static void parse_ok(const char *text, struct kap_containerfile *cf)
{
	struct kapsel_error *err = NULL;
	if (kap_cf_parse("Containerfile", text, strlen(text), cf, &err) < 0)
		fail_msg("%s", err->msg);
}

static void parse_bad(const char *text, const char *msg)
{
	struct kap_containerfile cf;
	struct kapsel_error *err = NULL;
	int r = kap_cf_parse("Containerfile", text, strlen(text), &cf, &err);
	if (r >= 0)
		fail_msg("parsed: %s", text);
	assert_non_null(err);
	if (strcmp(err->msg, msg) != 0)
		fail_msg("got '%s', want '%s'", err->msg, msg);
	assert_null(cf.instrs);
	kapsel_error_free(err);
}

static void test_instructions(void **state)
{
	(void)state;
	struct kap_containerfile cf;
	parse_ok("ARG BASE=busybox\n"
		 "FROM ${BASE} AS Build\n"
		 "RUN echo hi > /x\n"
		 "RUN [\"/bin/sh\", \"-c\", \"echo \\u00e9\"]\n"
		 "COPY --from=build --chown=1:2 --chmod=0755 a b /dst/\n"
		 "ADD [\"x y\", \"/z\"]\n"
		 "ENV A=1 B=\"two words\"\n"
		 "ENV LEGACY some value  \n"
		 "workdir /app\n"
		 "USER nobody:nogroup\n"
		 "ENTRYPOINT [\"/bin/echo\"]\n"
		 "CMD echo $HOME\n"
		 "EXPOSE 80/tcp 443\n"
		 "LABEL a=b c=\"d e\"\n"
		 "VOLUME /data /logs\n"
		 "STOPSIGNAL SIGINT\n"
		 "SHELL [\"/bin/ash\", \"-c\"]\n"
		 "HEALTHCHECK --interval=5s --retries=3 CMD [\"true\"]\n"
		 "MAINTAINER me <me@example.org>\n",
		 &cf);
	assert_int_equal(cf.n, 19);
	struct kap_cf_instr *in = cf.instrs;
	assert_int_equal(in[0].kind, KAP_CF_ARG);
	assert_int_equal(in[0].n_args, 2);
	assert_string_equal(in[0].args[0], "BASE");
	assert_string_equal(in[0].args[1], "busybox");

	assert_int_equal(in[1].kind, KAP_CF_FROM);
	assert_int_equal(in[1].line, 2);
	assert_int_equal(in[1].n_args, 2);
	assert_string_equal(in[1].args[0], "${BASE}");
	assert_string_equal(in[1].args[1], "build"); /* stage names are lower-cased */

	assert_int_equal(in[2].kind, KAP_CF_RUN);
	assert_false(in[2].json);
	assert_int_equal(in[2].n_args, 1);
	assert_string_equal(in[2].args[0], "echo hi > /x");
	assert_string_equal(in[2].text, "RUN echo hi > /x");

	assert_true(in[3].json);
	assert_int_equal(in[3].n_args, 3);
	assert_string_equal(in[3].args[2], "echo \xc3\xa9");

	assert_int_equal(in[4].kind, KAP_CF_COPY);
	assert_string_equal(kap_cf_flag(&in[4], "from"), "build");
	assert_string_equal(kap_cf_flag(&in[4], "chown"), "1:2");
	assert_string_equal(kap_cf_flag(&in[4], "chmod"), "0755");
	assert_null(kap_cf_flag(&in[4], "link"));
	assert_int_equal(in[4].n_args, 3);
	assert_string_equal(in[4].args[2], "/dst/");

	assert_int_equal(in[5].kind, KAP_CF_ADD);
	assert_true(in[5].json);
	assert_string_equal(in[5].args[0], "x y");

	assert_int_equal(in[6].n_args, 4);
	assert_string_equal(in[6].args[2], "B");
	assert_string_equal(in[6].args[3], "\"two words\"");
	assert_int_equal(in[7].n_args, 2);
	assert_string_equal(in[7].args[0], "LEGACY");
	assert_string_equal(in[7].args[1], "some value");

	assert_int_equal(in[8].kind, KAP_CF_WORKDIR);
	assert_string_equal(in[8].args[0], "/app");
	assert_string_equal(in[9].args[0], "nobody:nogroup");
	assert_true(in[10].json);
	assert_false(in[11].json);
	assert_string_equal(in[11].args[0], "echo $HOME");
	assert_int_equal(in[12].n_args, 2);
	assert_int_equal(in[13].n_args, 4);
	assert_int_equal(in[14].n_args, 2);
	assert_string_equal(in[15].args[0], "SIGINT");
	assert_int_equal(in[16].kind, KAP_CF_SHELL);
	assert_int_equal(in[16].n_args, 2);
	assert_int_equal(in[17].kind, KAP_CF_HEALTHCHECK);
	assert_string_equal(kap_cf_flag(&in[17], "interval"), "5s");
	assert_true(in[17].json);
	assert_string_equal(in[17].args[0], "true");
	assert_string_equal(in[18].args[0], "me <me@example.org>");
	kap_containerfile_clear(&cf);
}

static void test_lexing(void **state)
{
	(void)state;
	struct kap_containerfile cf;
	/* Continuations join lines; comment and blank lines inside them are dropped; CRLF. */
	parse_ok("# a comment\n"
		 "\n"
		 "FROM scratch\r\n"
		 "RUN a \\\n"
		 "# comment inside\n"
		 "\n"
		 "  && b \\   \n"
		 "  && c\n"
		 "  # indented comment\n"
		 "CMD [\"x\"]",
		 &cf);
	assert_int_equal(cf.n, 3);
	assert_int_equal(cf.escape, '\\');
	assert_string_equal(cf.instrs[1].args[0], "a   && b   && c");
	assert_int_equal(cf.instrs[1].line, 4);
	assert_int_equal(cf.instrs[2].line, 10);
	kap_containerfile_clear(&cf);

	/* The escape directive: backtick continues lines, backslash is literal. */
	parse_ok("# escape=`\n"
		 "FROM scratch\n"
		 "COPY C:\\src `\n"
		 "  C:\\dst\n",
		 &cf);
	assert_int_equal(cf.escape, '`');
	assert_int_equal(cf.instrs[1].n_args, 2);
	assert_string_equal(cf.instrs[1].args[0], "C:\\src");
	kap_containerfile_clear(&cf);

	/* Directives only count at the top: later it is an ordinary comment. */
	parse_ok("# syntax=docker/dockerfile:1\n"
		 "FROM scratch\n"
		 "# escape=`\n"
		 "RUN a \\\n b\n",
		 &cf);
	assert_int_equal(cf.escape, '\\');
	assert_int_equal(cf.n, 2);
	kap_containerfile_clear(&cf);

	/* A JSON array that does not parse is the shell form (the reference says so). */
	parse_ok("FROM scratch\nCMD [\"unterminated\n", &cf);
	assert_false(cf.instrs[1].json);
	assert_string_equal(cf.instrs[1].args[0], "[\"unterminated");
	kap_containerfile_clear(&cf);

	/* A trailing escape on the last line ends the file. */
	parse_ok("FROM scratch\nRUN true \\", &cf);
	assert_string_equal(cf.instrs[1].args[0], "true");
	kap_containerfile_clear(&cf);

	parse_ok("FROM scratch\nHEALTHCHECK NONE\n", &cf);
	assert_true(cf.instrs[1].healthcheck_none);
	kap_containerfile_clear(&cf);
}

static void test_errors(void **state)
{
	(void)state;
	parse_bad("FROM scratch\nBOGUS x\n", "Containerfile:2: unknown instruction BOGUS");
	parse_bad("FROM scratch\nONBUILD RUN x\n", "Containerfile:2: ONBUILD is not supported");
	parse_bad("RUN true\nFROM scratch\n", "Containerfile:1: RUN: comes before the first FROM");
	parse_bad("ARG A\n", "Containerfile: no FROM instruction");
	parse_bad("", "Containerfile: no FROM instruction");
	parse_bad("FROM a b\n", "Containerfile:1: FROM: expected FROM image [AS name]");
	parse_bad("FROM a AS 1x\n", "Containerfile:1: FROM: invalid stage name '1x'");
	parse_bad("FROM scratch\n\nCOPY onlyone\n",
		  "Containerfile:3: COPY: needs at least one source and a destination");
	parse_bad("FROM scratch\nCOPY --frm=x a b\n",
		  "Containerfile:2: COPY: unknown flag --frm=x");
	parse_bad("FROM scratch\nADD --from=x a b\n",
		  "Containerfile:2: ADD: unknown flag --from=x");
	parse_bad("FROM scratch\nCOPY --chmod=999 a b\n",
		  "Containerfile:2: COPY: --chmod: '999' is not an octal mode");
	parse_bad("FROM scratch\nCOPY --from a b\n", "Containerfile:2: COPY: --from needs a value");
	parse_bad("FROM scratch\nENV A=1 B\n", "Containerfile:2: ENV: expected key=value, got 'B'");
	parse_bad("FROM scratch\nENV A\n", "Containerfile:2: ENV: A has no value");
	parse_bad("FROM scratch\nENV =x\n", "Containerfile:2: ENV: empty key in '=x'");
	parse_bad("FROM scratch\nLABEL a=\"open\n",
		  "Containerfile:2: LABEL: unterminated double quote");
	parse_bad("FROM scratch\nARG 9x=1\n", "Containerfile:2: ARG: invalid name '9x'");
	parse_bad("FROM scratch\nUSER a b\n",
		  "Containerfile:2: USER: takes exactly one argument, got 2");
	parse_bad(
	    "FROM scratch\nSHELL /bin/sh -c\n",
	    "Containerfile:2: SHELL: needs a JSON array of strings, e.g. [\"/bin/sh\", \"-c\"]");
	parse_bad("FROM scratch\nHEALTHCHECK --interval=5x CMD true\n",
		  "Containerfile:2: HEALTHCHECK: --interval: '5x' is not a duration");
	parse_bad("FROM scratch\nHEALTHCHECK --retries=2 NONE\n",
		  "Containerfile:2: HEALTHCHECK: NONE takes no arguments or flags");
	parse_bad("FROM scratch\nHEALTHCHECK true\n",
		  "Containerfile:2: HEALTHCHECK: expected NONE or CMD");
	parse_bad("FROM scratch\nRUN\n", "Containerfile:2: RUN: needs a command");
	parse_bad("FROM scratch\nRUN --network=bridge true\n",
		  "Containerfile:2: RUN: --network: 'bridge' is not none, host or default");
	parse_bad("FROM scratch\nEXPOSE\n", "Containerfile:2: EXPOSE: needs at least one port");
	parse_bad("FROM scratch\nWORKDIR\n", "Containerfile:2: WORKDIR: needs an argument");
	parse_bad("# escape=x\nFROM scratch\n",
		  "Containerfile:1: escape directive must be \\ or `");
	parse_bad("# escape=`\n# escape=\\\nFROM scratch\n",
		  "Containerfile:2: escape directive given twice");
	/* Hostile bytes in a message are replaced and cut short. */
	parse_bad("FROM scratch\n\x1b[31mX\n", "Containerfile:2: unknown instruction ?[31mX");
	/* The continued instruction is named by its first line. */
	parse_bad("FROM scratch\nCOPY \\\n\\\nx\n",
		  "Containerfile:2: COPY: needs at least one source and a destination");
}

static void test_nul_in_middle(void **state)
{
	(void)state;
	/* strlen would stop at the NUL: pass the real length. */
	static const char text[] = "FROM scratch\nRUN a\0b\n";
	struct kap_containerfile cf;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_cf_parse("F", text, sizeof(text) - 1, &cf, &err), -EINVAL);
	assert_string_equal(err->msg, "F:2: NUL byte in the file");
	kapsel_error_free(err);
}

static void test_limits(void **state)
{
	(void)state;
	struct kap_containerfile cf;
	struct kapsel_error *err = NULL;
	size_t n = KAP_CF_MAX_INSTRS + 2;
	char *big = malloc(n * 8 + 16);
	assert_non_null(big);
	char *p = stpcpy(big, "FROM x\n");
	for (size_t i = 0; i < n; i++)
		p = stpcpy(p, "RUN a\n");
	assert_int_equal(kap_cf_parse("F", big, strlen(big), &cf, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "more than 10000 instructions"));
	kapsel_error_free(err);
	free(big);
}

static void expand_ok(const char *word, char *const *vars, const char *want)
{
	char *out = NULL;
	struct kapsel_error *err = NULL;
	if (kap_cf_expand(word, '\\', vars, &out, &err) < 0)
		fail_msg("%s: %s", word, err->msg);
	if (strcmp(out, want) != 0)
		fail_msg("%s -> '%s', want '%s'", word, out, want);
	free(out);
}

static void test_expand(void **state)
{
	(void)state;
	char *vars[] = {"A=one", "EMPTY=", "B=x y", "A=two", NULL};
	expand_ok("$A", vars, "two"); /* later definitions win */
	expand_ok("${A}bc", vars, "twobc");
	expand_ok("$Abc", vars, "");
	expand_ok("${NOPE:-def}", vars, "def");
	expand_ok("${EMPTY:-def}", vars, "def");
	expand_ok("${A:-def}", vars, "two");
	expand_ok("${A:+alt}", vars, "alt");
	expand_ok("${NOPE:+alt}", vars, "");
	expand_ok("${NOPE:-${A}-${B}}", vars, "two-x y");
	expand_ok("'$A'", vars, "$A");
	expand_ok("\"$A $B\"", vars, "two x y");
	expand_ok("\\$A", vars, "$A");
	expand_ok("\"a\\\"b\"", vars, "a\"b");
	expand_ok("$", vars, "$");
	expand_ok("$1", vars, "$1");
	expand_ok("trailing\\", vars, "trailing\\");

	char *out;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_cf_expand("${A", '\\', vars, &out, &err), -EINVAL);
	assert_string_equal(err->msg, "unterminated ${ in '${A'");
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_cf_expand("${A?x}", '\\', vars, &out, &err), -EINVAL);
	assert_string_equal(err->msg, "bad substitution in '${A?x}'");
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_cf_expand("'open", '\\', vars, &out, &err), -EINVAL);
	kapsel_error_free(err);
	err = NULL;

	/* Nesting and growth are bounded. */
	char deep[400] = "";
	for (int i = 0; i < 40; i++)
		strcat(deep, "${N:-");
	strcat(deep, "x");
	for (int i = 0; i < 40; i++)
		strcat(deep, "}");
	assert_int_equal(kap_cf_expand(deep, '\\', vars, &out, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "nested too deeply"));
	kapsel_error_free(err);
	err = NULL;

	char *long_val = malloc(300001);
	assert_non_null(long_val);
	memcpy(long_val, "L=", 2);
	memset(long_val + 2, 'a', 299998);
	long_val[300000] = '\0';
	char *big_vars[] = {long_val, NULL};
	assert_int_equal(kap_cf_expand("$L$L$L$L", '\\', big_vars, &out, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "expansion larger than 1 MiB"));
	kapsel_error_free(err);
	free(long_val);
}

static void test_duration(void **state)
{
	(void)state;
	long long ns;
	assert_int_equal(kap_cf_duration("30s", &ns), 0);
	assert_true(ns == 30000000000LL);
	assert_int_equal(kap_cf_duration("1m30s", &ns), 0);
	assert_true(ns == 90000000000LL);
	assert_int_equal(kap_cf_duration("500ms", &ns), 0);
	assert_true(ns == 500000000LL);
	assert_int_equal(kap_cf_duration("0", &ns), 0);
	assert_int_equal(kap_cf_duration("", &ns), -EINVAL);
	assert_int_equal(kap_cf_duration("5", &ns), -EINVAL);
	assert_int_equal(kap_cf_duration("s", &ns), -EINVAL);
	assert_int_equal(kap_cf_duration("99999999999999h", &ns), -ERANGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_instructions), cmocka_unit_test(test_lexing),
	    cmocka_unit_test(test_errors),	 cmocka_unit_test(test_nul_in_middle),
	    cmocka_unit_test(test_limits),	 cmocka_unit_test(test_expand),
	    cmocka_unit_test(test_duration),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
