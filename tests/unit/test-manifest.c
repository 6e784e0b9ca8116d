/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests, indexes (platform selection) and image configs: OCI and Docker forms, and errors
 * that name the JSON path of the bad field. JSON is written with single quotes; dq() converts.
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
#include "image/image.h"

#define D(c)                                                                                       \
	"sha256:" c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c  \
	    c c c c c c c c c c c c c c c c c c c c c c c c

static char *dq(const char *s)
{
	char *d = strdup(s);
	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

static void test_manifest_oci(void **state)
{
	char *doc =
	    dq("{'schemaVersion':2,'mediaType':'" KAP_MT_OCI_MANIFEST "',"
	       "'config':{'mediaType':'" KAP_MT_OCI_CONFIG "','digest':'" D(
		   "a") "','size':7},"
			"'layers':[{'mediaType':'application/vnd.oci.image.layer.v1.tar+gzip',"
			"'digest':'" D("b") "','size':100},"
					    "{'mediaType':'application/"
					    "vnd.oci.image.layer.v1.tar+zstd','digest':'" D(
						"c") "',"
						     "'size':0,'annotations':{'x':'y'}}]}");
	struct kap_manifest m;
	struct kapsel_error *err = NULL;
	if (kap_manifest_parse(doc, strlen(doc), &m, &err) < 0)
		fail_msg("%s", err->msg);
	assert_string_equal(m.config.digest, D("a"));
	assert_int_equal(m.config.size, 7);
	assert_int_equal(m.n_layers, 2);
	assert_string_equal(m.layers[1].digest, D("c"));
	enum kap_compression c;
	assert_int_equal(kap_layer_compression(m.layers[0].media_type, &c, NULL), 0);
	assert_int_equal(c, KAP_COMP_GZIP);
	assert_int_equal(kap_layer_compression(m.layers[1].media_type, &c, NULL), 0);
	assert_int_equal(c, KAP_COMP_ZSTD);
	kap_manifest_clear(&m);
	free(doc);
}

static void test_manifest_docker(void **state)
{
	char *doc = dq(
	    "{'schemaVersion':2,'mediaType':'" KAP_MT_DOCKER_MANIFEST "',"
	    "'config':{'mediaType':'" KAP_MT_DOCKER_CONFIG "','digest':'" D(
		"a") "','size':1},"
		     "'layers':[{'mediaType':'application/vnd.docker.image.rootfs.diff.tar.gzip',"
		     "'digest':'" D("b") "','size':2}]}");
	struct kap_manifest m;
	assert_int_equal(kap_manifest_parse(doc, strlen(doc), &m, NULL), 0);
	enum kap_compression c;
	assert_int_equal(kap_layer_compression(m.layers[0].media_type, &c, NULL), 0);
	assert_int_equal(c, KAP_COMP_GZIP);
	kap_manifest_clear(&m);
	free(doc);
}

static void manifest_bad(const char *sq, const char *needle)
{
	char *doc = dq(sq);
	struct kap_manifest m;
	struct kapsel_error *err = NULL;
	if (kap_manifest_parse(doc, strlen(doc), &m, &err) == 0)
		fail_msg("accepted: %s", doc);
	if (!strstr(err->msg, needle))
		fail_msg("error \"%s\" lacks \"%s\"", err->msg, needle);
	kapsel_error_free(err);
	free(doc);
}

static void test_manifest_errors(void **state)
{
	manifest_bad("[]", "expected a JSON object");
	manifest_bad("{'schemaVersion':1}", "schemaVersion");
	manifest_bad("{'schemaVersion':2}", "config: missing");
	manifest_bad("{'schemaVersion':2,'mediaType':'text/plain','config':{}}", "mediaType");
	manifest_bad("{'schemaVersion':2,'config':{'mediaType':'x','digest':'sha256:12','size':1}}",
		     "config.digest");
	manifest_bad(
	    "{'schemaVersion':2,'config':{'mediaType':'x','digest':'" D("a") "','size':-1}}",
	    "config.size: negative");
	manifest_bad("{'schemaVersion':2,'config':{'mediaType':'x','digest':'" D(
			 "a") "','size':1},"
			      "'layers':[{'mediaType':'x','digest':'" D("b") "','size':'1'}]}",
		     "layers[0].size: expected integer");
	manifest_bad("{'schemaVersion':2,'config':{'mediaType':'x','digest':'" D(
			 "a") "','size':1},"
			      "'layers':[{'mediaType':'x','size':1}]}",
		     "layers[0].digest: missing");
	manifest_bad("{'schemaVersion':2,", "invalid JSON");
	enum kap_compression c;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_layer_compression("application/x-foo", &c, &err), -ENOTSUP);
	assert_non_null(strstr(err->msg, "application/x-foo"));
	kapsel_error_free(err);
}

static const char *const INDEX =
    "{'schemaVersion':2,'mediaType':'" KAP_MT_OCI_INDEX "','manifests':["
    "{'mediaType':'" KAP_MT_OCI_MANIFEST "','digest':'" D(
	"1") "','size':1,"
	     "'platform':{'os':'linux','architecture':'arm','variant':'v7'}},"
	     "{'mediaType':'" KAP_MT_OCI_MANIFEST "','digest':'" D(
		 "2") "','size':1,"
		      "'platform':{'os':'linux','architecture':'arm64','variant':'v8'}},"
		      "{'mediaType':'" KAP_MT_OCI_MANIFEST "','digest':'" D(
			  "3") "','size':1,"
			       "'platform':{'os':'linux','architecture':'amd64'}},"
			       "{'mediaType':'" KAP_MT_OCI_MANIFEST "','digest':'" D(
				   "4") "','size':1,"
					"'platform':{'os':'unknown','architecture':'unknown'}}]}";

static void test_index(void **state)
{
	char *doc = dq(INDEX);
	struct kap_index idx;
	const struct kap_descriptor *d;
	struct kapsel_error *err = NULL;
	if (kap_index_parse(doc, strlen(doc), &idx, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(idx.n_manifests, 4);
	assert_int_equal(kap_index_select(&idx, NULL, &d, NULL), 0);
	assert_string_equal(d->digest, D("3"));
	assert_int_equal(kap_index_select(&idx, "linux/x86_64", &d, NULL), 0);
	assert_string_equal(d->digest, D("3"));
	assert_int_equal(kap_index_select(&idx, "linux/arm64", &d, NULL), 0);
	assert_string_equal(d->digest, D("2"));
	assert_int_equal(kap_index_select(&idx, "linux/arm/v7", &d, NULL), 0);
	assert_string_equal(d->digest, D("1"));
	assert_int_equal(kap_index_select(&idx, "linux/s390x", &d, &err), -ENOENT);
	assert_non_null(strstr(err->msg, "linux/s390x"));
	assert_non_null(strstr(err->msg, "linux/arm/v7, linux/arm64/v8, linux/amd64"));
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_index_select(&idx, "linux", &d, &err), -EINVAL);
	kapsel_error_free(err);

	struct kap_json *j = NULL;
	assert_int_equal(kap_json_parse(doc, strlen(doc), "x", &j, NULL), 0);
	assert_true(kap_manifest_is_index(NULL, j));
	assert_false(kap_manifest_is_index(KAP_MT_OCI_MANIFEST, j));
	assert_true(kap_manifest_is_index(KAP_MT_DOCKER_LIST "; charset=utf-8", j));
	kap_json_put(j);
	kap_index_clear(&idx);
	free(doc);
}

static void test_config(void **state)
{
	char *doc =
	    dq("{'architecture':'amd64','os':'linux','created':'2024-01-01T00:00:00Z',"
	       "'config':{'Env':['PATH=/bin','A=b'],'Entrypoint':null,'Cmd':['sh','-c','x'],"
	       "'WorkingDir':'/w','User':'1000:1000','StopSignal':'SIGINT',"
	       "'ExposedPorts':{'80/tcp':{},'53/udp':{}},'Labels':{'k':'v'}},"
	       "'rootfs':{'type':'layers','diff_ids':['" D("d") "']},"
								"'history':[{'created_by':'x'}]}");
	struct kap_image_config c;
	struct kapsel_error *err = NULL;
	if (kap_image_config_parse(doc, strlen(doc), &c, &err) < 0)
		fail_msg("%s", err->msg);
	assert_string_equal(c.architecture, "amd64");
	assert_string_equal(c.env[1], "A=b");
	assert_null(c.env[2]);
	assert_null(c.entrypoint);
	assert_string_equal(c.cmd[2], "x");
	assert_string_equal(c.working_dir, "/w");
	assert_string_equal(c.user, "1000:1000");
	assert_string_equal(c.stop_signal, "SIGINT");
	assert_string_equal(c.exposed_ports[0], "80/tcp");
	assert_int_equal(c.n_labels, 1);
	assert_string_equal(c.labels_values[0], "v");
	assert_int_equal(c.n_diff_ids, 1);
	assert_string_equal(c.diff_ids[0], D("d"));
	kap_image_config_clear(&c);
	free(doc);

	static const struct {
		const char *doc, *needle;
	} bad[] = {
	    {"{'rootfs':{'type':'layers','diff_ids':['sha256:00']}}", "rootfs.diff_ids[0]"},
	    {"{'rootfs':{'type':'other','diff_ids':[]}}", "rootfs.type"},
	    {"{'config':{'Env':'PATH=/bin'},'rootfs':{'type':'layers'}}",
	     "config.Env: expected array"},
	    {"{'config':{'Labels':{'a':1}},'rootfs':{'type':'layers'}}", "config.Labels.a"},
	    {"{'config':{}}", "rootfs: missing"},
	    {"{'os':7,'rootfs':{'type':'layers'}}", "os: expected string"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *d = dq(bad[i].doc);
		err = NULL;
		if (kap_image_config_parse(d, strlen(d), &c, &err) == 0)
			fail_msg("accepted: %s", d);
		if (!strstr(err->msg, bad[i].needle))
			fail_msg("error \"%s\" lacks \"%s\"", err->msg, bad[i].needle);
		kapsel_error_free(err);
		free(d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_manifest_oci),    cmocka_unit_test(test_manifest_docker),
	    cmocka_unit_test(test_manifest_errors), cmocka_unit_test(test_index),
	    cmocka_unit_test(test_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
