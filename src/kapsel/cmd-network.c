/* SPDX-License-Identifier: Apache-2.0 */
/* `kapsel network create|ls|inspect|rm|prune`, as podman's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/network.h>
#include <kapsel/run.h>

#include "commands.h"
#include "format.h"

enum {
	OPT_SUBNET = 0x100,
	OPT_GATEWAY,
	OPT_INTERNAL,
	OPT_FORMAT,
	OPT_IPV6,
	OPT_IP,
	OPT_IP6,
	OPT_MAC,
	OPT_ALIAS,
};

/* The subcommands, defined with their table at the end. */
static const struct cli_command cmd_network_create, cmd_network_list, cmd_network_inspect,
    cmd_network_rm, cmd_network_connect, cmd_network_disconnect, cmd_network_prune;

static const struct option create_options[] = {
    {"subnet", required_argument, NULL, OPT_SUBNET},
    {"gateway", required_argument, NULL, OPT_GATEWAY},
    {"internal", no_argument, NULL, OPT_INTERNAL},
    {"ipv6", no_argument, NULL, OPT_IPV6},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int create(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_network_create_options o = {0};
	int c;
	while ((c = cli_getopt_cmd(&cmd_network_create, argc, argv)) != -1) {
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
	if (!cli_nargs(&cmd_network_create, argc - optind, 1, 1, "NAME"))
		return cli_fail_status();
	o.name = argv[optind];
	struct kapsel_error *err = NULL;
	if (kapsel_network_create(g->store, &o, &err) < 0)
		return cli_fail_err(err);
	puts(o.name);
	return 0;
}

static const struct option list_options[] = {
    {"format", required_argument, NULL, OPT_FORMAT},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int list(const struct cli_globals *g, int argc, char **argv)
{
	bool json = false;
	const char *format = NULL;
	int c;
	while ((c = cli_getopt_cmd(&cmd_network_list, argc, argv)) != -1) {
		if (c != OPT_FORMAT)
			return cli_opt_status(c);
		if (strcmp(optarg, "json") && strcmp(optarg, "table") && !strstr(optarg, "{{"))
			return cli_fail(
			    "network ls: --format %s: expected json, table or a template", optarg);
		json = !strcmp(optarg, "json");
		format = optarg;
	}
	if (!cli_nargs(&cmd_network_list, argc - optind, 0, 0, ""))
		return cli_fail_status();
	struct cli_format f;
	if (!cli_format_parse("network ls", json ? NULL : format, &f))
		return EXIT_ENGINE;
	bool tmpl = f.kind == CLI_FORMAT_TEMPLATE;
	struct kapsel_network_info *v = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	kapsel_image_reap(g->store); /* leases of dead kapsels: see run.h */
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
	int c;
	while ((c = cli_getopt_cmd(&cmd_network_inspect, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_network_inspect, argc - optind, 1, -1, "NAME..."))
		return cli_fail_status();
	int status = 0;
	bool first = true;
	kapsel_image_reap(g->store); /* leases of dead kapsels: see run.h */
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
	kapsel_image_reap(g->store); /* leases of dead kapsels: see run.h */
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

static const struct option rm_options[] = {
    {"force", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int rm(const struct cli_globals *g, int argc, char **argv)
{
	bool force = false;
	int c;
	while ((c = cli_getopt_cmd(&cmd_network_rm, argc, argv)) != -1) {
		if (c != 'f')
			return cli_opt_status(c);
		force = true;
	}
	if (!cli_nargs(&cmd_network_rm, argc - optind, 1, -1, "NAME..."))
		return cli_fail_status();
	int status = 0;
	for (int i = optind; i < argc; i++)
		if (remove_one(g, argv[i], force))
			status = cli_fail_status();
	return status;
}

static const struct option connect_options[] = {
    {"ip", required_argument, NULL, OPT_IP},
    {"ip6", required_argument, NULL, OPT_IP6},
    {"mac-address", required_argument, NULL, OPT_MAC},
    {"alias", required_argument, NULL, OPT_ALIAS},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* connect [--ip IP] [--ip6 IP6] [--mac-address MAC] [--alias NAME]... NETWORK CONTAINER */
static int connect_cmd(const struct cli_globals *g, int argc, char **argv)
{
	struct kapsel_network_connect_options o = {0};
	char *aliases[17] = {0};
	size_t na = 0;
	int c;
	while ((c = cli_getopt_cmd(&cmd_network_connect, argc, argv)) != -1) {
		if (c == OPT_IP)
			o.ip = optarg;
		else if (c == OPT_IP6)
			o.ip6 = optarg;
		else if (c == OPT_MAC)
			o.mac = optarg;
		else if (c == OPT_ALIAS && na == 16)
			return cli_fail("--alias %s: at most 16 aliases", optarg);
		else if (c == OPT_ALIAS)
			aliases[na++] = optarg;
		else
			return cli_opt_status(c);
	}
	if (!cli_nargs(&cmd_network_connect, argc - optind, 2, 2, "NETWORK CONTAINER"))
		return cli_fail_status();
	o.aliases = na ? aliases : NULL;
	struct kapsel_error *err = NULL;
	kapsel_image_reap(g->store); /* leases of dead kapsels: see run.h */
	if (kapsel_network_connect(g->store, argv[optind], argv[optind + 1], &o, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

/* disconnect NETWORK CONTAINER */
static int disconnect_cmd(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_network_disconnect, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_network_disconnect, argc - optind, 2, 2, "NETWORK CONTAINER"))
		return cli_fail_status();
	struct kapsel_error *err = NULL;
	if (kapsel_network_disconnect(g->store, argv[optind], argv[optind + 1], &err) < 0)
		return cli_fail_err(err);
	return 0;
}

/* Every network but the default that no container uses. */
static int prune(const struct cli_globals *g, int argc, char **argv)
{
	int c;
	while ((c = cli_getopt_cmd(&cmd_network_prune, argc, argv)) != -1)
		return cli_opt_status(c);
	if (!cli_nargs(&cmd_network_prune, argc - optind, 0, 0, ""))
		return cli_fail_status();
	struct kapsel_network_info *v = NULL;
	size_t n = 0;
	struct kapsel_error *err = NULL;
	kapsel_image_reap(g->store); /* leases of dead kapsels: see run.h */
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
	return cli_dispatch(&cmd_network, g, argc, argv);
}

static const char network_usage[] =
    "Usage: kapsel network create [--subnet CIDR]... [--gateway IP] [--internal]\n"
    "                             [--ipv6] NAME\n"
    "       kapsel network ls [--format json|table|TEMPLATE]\n"
    "       kapsel network inspect NAME...\n"
    "       kapsel network rm [-f] NAME...\n"
    "       kapsel network prune\n"
    "       kapsel network connect [--ip IP] [--ip6 IP6] [--mac-address MAC]\n"
    "                              [--alias NAME]... NETWORK CONTAINER\n"
    "       kapsel network disconnect NETWORK CONTAINER\n"
    "\n"
    "A network is a bridge with an IPv4 subnet; containers join it with\n"
    "'kapsel run --net NAME' and get an address, a default route through the gateway\n"
    "and (unless --internal) outbound NAT. The default network 'kapsel' (bridge kapsel0,\n"
    "10.88.0.0/16 unless a route uses it) always exists. rm -f removes the network's\n"
    "containers first. connect gives a running container (one run with --net NETWORK)\n"
    "another interface (eth1, eth2, ...); disconnect takes it away. Root only.\n"
    "--ipv6 (or an IPv6 --subnet) makes it dual stack: an IPv6 subnet too (default a\n"
    "free fdXX:XXXX:XXXX:N::/64), an IPv6 address and default route per container,\n"
    "IPv6 NAT and published ports (not on ::1: IPv6 has no route_localnet).\n"
    "\n"
    "Options:\n"
    "  --subnet CIDR         (create) the IPv4 subnet (default: the next free\n"
    "                        10.89.N.0/24)\n"
    "  --gateway IP          (create) the bridge's address (default: the subnet's first)\n"
    "  --internal            (create) no outbound NAT and no route out of the host\n"
    "  --ipv6                (create) dual stack: an IPv6 subnet as well\n"
    "  --format json|table|TEMPLATE\n"
    "                        (ls) a JSON array with podman's names, the table, or a Go\n"
    "                        template for each network\n"
    "  --force, -f           (rm) remove the network's containers first\n"
    "  --ip IP, --ip6 IP6    (connect) the interface's addresses (default: the lowest\n"
    "                        free one; on a dual-stack network the IPv6 one follows it)\n"
    "  --mac-address MAC     (connect) the interface's MAC address\n"
    "  --alias NAME          (connect) another name for the container on the network\n"
    "  --help, -h            print this help\n";

/* Each subcommand's --help prints the whole usage: it fits on one screen. */
static const struct cli_command cmd_network_create = {
    .name = "network create",
    .summary = "create a network",
    .run = create,
    .usage = network_usage,
    .shortopts = "h",
    .options = create_options,
};
static const struct cli_command cmd_network_list = {
    .name = "network ls",
    .summary = "list networks",
    .run = list,
    .usage = network_usage,
    .shortopts = "h",
    .options = list_options,
};
static const struct cli_command cmd_network_inspect = {
    .name = "network inspect",
    .operands = CLI_OPERAND_NETWORK,
    .summary = "print networks as JSON",
    .run = inspect,
    .usage = network_usage,
    .shortopts = "h",
    .options = cli_help_options,
};
static const struct cli_command cmd_network_rm = {
    .name = "network rm",
    .operands = CLI_OPERAND_NETWORK,
    .summary = "remove networks",
    .run = rm,
    .usage = network_usage,
    .shortopts = "fh",
    .options = rm_options,
};
static const struct cli_command cmd_network_connect = {
    .name = "network connect",
    .operands = CLI_OPERAND_NETWORK,
    .summary = "give a running container another interface on a network",
    .run = connect_cmd,
    .usage = network_usage,
    .shortopts = "h",
    .options = connect_options,
};
static const struct cli_command cmd_network_disconnect = {
    .name = "network disconnect",
    .operands = CLI_OPERAND_NETWORK,
    .summary = "take a container's interface on a network away",
    .run = disconnect_cmd,
    .usage = network_usage,
    .shortopts = "h",
    .options = cli_help_options,
};
static const struct cli_command cmd_network_prune = {
    .name = "network prune",
    .summary = "remove the networks no container uses",
    .run = prune,
    .usage = network_usage,
    .shortopts = "h",
    .options = cli_help_options,
};

const struct cli_command cmd_network = {
    .podman_status = true,
    .name = "network",
    .summary = "manage container networks (create, ls, inspect, rm, prune)",
    .run = network,
    .usage = network_usage,
    .subcommands =
	(const struct cli_subcommand[]){
	    {"create", &cmd_network_create},
	    {"ls", &cmd_network_list},
	    {"list", &cmd_network_list},
	    {"inspect", &cmd_network_inspect},
	    {"rm", &cmd_network_rm},
	    {"prune", &cmd_network_prune},
	    {"connect", &cmd_network_connect},
	    {"disconnect", &cmd_network_disconnect},
	    {0},
	},
};
