/* SPDX-License-Identifier: Apache-2.0 */
/* `kapsel network create|ls|inspect|rm|prune`, as podman's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/network.h>
#include <kapsel/run.h>

#include "commands.h"
#include "format.h"

enum { OPT_SUBNET = 0x100, OPT_GATEWAY, OPT_INTERNAL, OPT_FORMAT, OPT_IPV6 };

static int create(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"subnet", required_argument, NULL, OPT_SUBNET},
	    {"gateway", required_argument, NULL, OPT_GATEWAY},
	    {"internal", no_argument, NULL, OPT_INTERNAL},
	    {"ipv6", no_argument, NULL, OPT_IPV6},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct kapsel_network_create_options o = {0};
	int c;
	while ((c = cli_getopt(&cmd_network, argc, argv, "h", options)) != -1) {
		if (c == OPT_SUBNET && strchr(optarg, ':') && o.subnet6)
			return cli_fail("--subnet %s: one IPv6 subnet only (%s given)", optarg,
					o.subnet6);
		else if (c == OPT_SUBNET && strchr(optarg, ':'))
			o.subnet6 = optarg; /* podman: a second --subnet, the IPv6 one */
		else if (c == OPT_SUBNET && o.subnet)
			return cli_fail("--subnet %s: one IPv4 subnet only (%s given)", optarg,
					o.subnet);
		else if (c == OPT_SUBNET)
			o.subnet = optarg;
		else if (c == OPT_IPV6)
			o.ipv6 = true;
		else if (c == OPT_GATEWAY)
			o.gateway = optarg;
		else if (c == OPT_INTERNAL)
			o.internal = true;
		else
			return cli_opt_status(c);
	}
	if (!cli_nargs(&cmd_network, argc - optind, 1, 1, "NAME"))
		return 1;
	o.name = argv[optind];
	struct kapsel_error *err = NULL;
	if (kapsel_network_create(g->store, &o, &err) < 0)
		return cli_fail_err(err);
	puts(o.name);
	return 0;
}

static int list(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"format", required_argument, NULL, OPT_FORMAT},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool json = false;
	const char *format = NULL;
	int c;
	while ((c = cli_getopt(&cmd_network, argc, argv, "h", options)) != -1) {
		if (c != OPT_FORMAT)
			return cli_opt_status(c);
		if (strcmp(optarg, "json") && strcmp(optarg, "table") && !strstr(optarg, "{{"))
			return cli_fail(
			    "network ls: --format %s: expected json, table or a template", optarg);
		json = !strcmp(optarg, "json");
		format = optarg;
	}
	if (!cli_nargs(&cmd_network, argc - optind, 0, 0, ""))
		return 1;
	struct cli_format f;
	if (!cli_format_parse("network ls", json ? NULL : format, &f))
		return EXIT_ENGINE;
	bool tmpl = f.kind == CLI_FORMAT_TEMPLATE;
	struct kapsel_network_info *v = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	if (kapsel_network_list(g->store, &v, &n, &err) < 0) {
		cli_format_clear(&f);
		return cli_fail_err(err);
	}
	if (json)
		putchar('[');
	else if (tmpl)
		cli_format_header(&f);
	else
		printf("%-20s %-10s %-18s %-15s %s\n", "NAME", "BRIDGE", "SUBNET", "GATEWAY",
		       "INTERNAL");
	int status = 0;
	for (size_t i = 0; i < n && !status; i++) {
		if (!json && !tmpl) {
			printf("%-20s %-10s %-18s %-15s %s\n", v[i].name, v[i].bridge, v[i].subnet,
			       v[i].gateway, v[i].internal ? "true" : "false");
			continue;
		}
		/* podman's network JSON names; a template sees the same object. */
		char *obj = NULL;
		size_t len = 0;
		FILE *m = open_memstream(&obj, &len);
		if (!m) {
			status = cli_fail("network ls: out of memory");
			break;
		}
		fprintf(m, "{\"name\": ");
		cli_json_string(m, v[i].name);
		fprintf(m, ", \"driver\": \"bridge\", \"network_interface\": ");
		cli_json_string(m, v[i].bridge);
		fprintf(m, ", \"subnets\": [{\"subnet\": ");
		cli_json_string(m, v[i].subnet);
		fprintf(m, ", \"gateway\": ");
		cli_json_string(m, v[i].gateway);
		if (v[i].subnet6) {
			fprintf(m, "}, {\"subnet\": ");
			cli_json_string(m, v[i].subnet6);
			fprintf(m, ", \"gateway\": ");
			cli_json_string(m, v[i].gateway6);
		}
		fprintf(m, "}], \"ipv6_enabled\": %s, \"internal\": %s, \"containers\": [",
			v[i].subnet6 ? "true" : "false", v[i].internal ? "true" : "false");
		for (char **p = v[i].containers; *p; p++) {
			fprintf(m, "%s", p == v[i].containers ? "" : ", ");
			cli_json_string(m, *p);
		}
		fprintf(m, "]}");
		if (fclose(m) != 0 || !obj)
			status = cli_fail("network ls: out of memory");
		else if (json)
			printf("%s\n  %s", i ? "," : "", obj);
		else if (!cli_format_print("network ls", &f, obj))
			status = EXIT_ENGINE;
		free(obj);
	}
	if (json)
		puts("\n]");
	kapsel_network_infos_free(v, n);
	cli_format_clear(&f);
	return status;
}

static int inspect(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {{"help", no_argument, NULL, 'h'}, {0}};
	int c;
	while ((c = cli_getopt(&cmd_network, argc, argv, "h", options)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_network, argc - optind, 1, -1, "NAME..."))
		return 1;
	int status = 0;
	bool first = true;
	putchar('[');
	for (int i = optind; i < argc; i++) {
		char *json = NULL;
		struct kapsel_error *err = NULL;
		if (kapsel_network_inspect(g->store, argv[i], &json, &err) < 0) {
			status = cli_fail_err(err);
			continue;
		}
		printf("%s%s", first ? "\n" : ",\n", json);
		first = false;
		free(json);
	}
	puts("\n]");
	return status;
}

/* -f: the containers on the network go first (podman's network rm -f). */
static int remove_one(const struct cli_globals *g, const char *name, bool force)
{
	struct kapsel_error *err = NULL;
	if (force) {
		struct kapsel_network_info *v = NULL;
		size_t n = 0;
		if (kapsel_network_list(g->store, &v, &n, &err) < 0)
			return cli_fail_err(err);
		int status = 0;
		for (size_t i = 0; i < n && !status; i++) {
			if (strcmp(v[i].name, name))
				continue;
			for (char **p = v[i].containers; *p && !status; p++)
				if (kapsel_image_rm(g->store, g->root, *p, true, &err) < 0)
					status = cli_fail_err(err);
		}
		kapsel_network_infos_free(v, n);
		if (status)
			return status;
	}
	if (kapsel_network_rm(g->store, name, &err) < 0)
		return cli_fail_err(err);
	puts(name);
	return 0;
}

static int rm(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"force", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool force = false;
	int c;
	while ((c = cli_getopt(&cmd_network, argc, argv, "fh", options)) != -1) {
		if (c != 'f')
			return cli_opt_status(c);
		force = true;
	}
	if (!cli_nargs(&cmd_network, argc - optind, 1, -1, "NAME..."))
		return 1;
	int status = 0;
	for (int i = optind; i < argc; i++)
		if (remove_one(g, argv[i], force))
			status = 1;
	return status;
}

/* connect|disconnect NETWORK CONTAINER */
static int connect_disconnect(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {{"help", no_argument, NULL, 'h'}, {0}};
	bool conn = !strcmp(argv[0], "connect");
	int c;
	while ((c = cli_getopt(&cmd_network, argc, argv, "h", options)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_network, argc - optind, 2, 2, "NETWORK CONTAINER"))
		return 1;
	struct kapsel_error *err = NULL;
	int r = conn ? kapsel_network_connect(g->store, argv[optind], argv[optind + 1], &err)
		     : kapsel_network_disconnect(g->store, argv[optind], argv[optind + 1], &err);
	return r < 0 ? cli_fail_err(err) : 0;
}

/* Every network but the default that no container uses. */
static int prune(const struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {{"help", no_argument, NULL, 'h'}, {0}};
	int c;
	while ((c = cli_getopt(&cmd_network, argc, argv, "h", options)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_network, argc - optind, 0, 0, ""))
		return 1;
	struct kapsel_network_info *v = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	if (kapsel_network_list(g->store, &v, &n, &err) < 0)
		return cli_fail_err(err);
	int status = 0;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(v[i].name, "kapsel") || v[i].containers[0])
			continue;
		if (kapsel_network_rm(g->store, v[i].name, &err) < 0)
			status = cli_fail_err(err);
		else
			puts(v[i].name);
		err = NULL;
	}
	kapsel_network_infos_free(v, n);
	return status;
}

static int network(const struct cli_globals *g, int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(const struct cli_globals *g, int argc, char **argv);
	} subs[] = {
	    {"create", create},
	    {"ls", list},
	    {"list", list},
	    {"inspect", inspect},
	    {"rm", rm},
	    {"prune", prune},
	    {"connect", connect_disconnect},
	    {"disconnect", connect_disconnect},
	};
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(cmd_network.usage, argc < 2 ? stderr : stdout);
		return argc < 2;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		if (!strcmp(argv[1], subs[i].name))
			return subs[i].run(g, argc - 1, argv + 1);
	return cli_fail("network: unknown subcommand \"%s\" (see 'kapsel network --help')",
			argv[1]);
}

const struct cli_command cmd_network = {
    .name = "network",
    .summary = "manage container networks (create, ls, inspect, rm, prune)",
    .run = network,
    .usage = "Usage: kapsel network create [--subnet CIDR]... [--gateway IP] [--internal]\n"
	     "                             [--ipv6] NAME\n"
	     "       kapsel network ls [--format json|table|TEMPLATE]\n"
	     "       kapsel network inspect NAME...\n"
	     "       kapsel network rm [-f] NAME...\n"
	     "       kapsel network prune\n"
	     "       kapsel network connect|disconnect NETWORK CONTAINER\n"
	     "\n"
	     "A network is a bridge with an IPv4 subnet; containers join it with\n"
	     "'kapsel run --net NAME' and get an address, a default route through the gateway\n"
	     "and (unless --internal) outbound NAT. The default network 'kapsel' (bridge kapsel0,\n"
	     "10.88.0.0/16 unless a route uses it) always exists. rm -f removes the network's\n"
	     "containers first. connect gives a running container (one run with --net NETWORK)\n"
	     "another interface (eth1, eth2, ...); disconnect takes it away. Root only.\n"
	     "--ipv6 (or an IPv6 --subnet) makes it dual stack: an IPv6 subnet too (default a\n"
	     "free fdXX:XXXX:XXXX:N::/64), an IPv6 address and default route per container,\n"
	     "IPv6 NAT and published ports (not on ::1: IPv6 has no route_localnet).\n",
};
