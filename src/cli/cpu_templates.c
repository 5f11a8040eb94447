/*
 * cpu_templates.c - `shoal cpu-templates [--output json]`: list the CPU
 * templates a VM can use (src/vmm/cpuid.c defines them).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/exitcode.h"
#include "cli/commands.h"
#include "vmm/cpuid.h"

static int usage(FILE *f, int status)
{
	fprintf(f, "usage: shoal cpu-templates [--output table|json]\n"
		   "List the CPU templates a VM can use (shoal run --cpu-template NAME).\n");
	return status;
}

int cmd_cpu_templates(int argc, char **argv)
{
	static const struct option lo[] = { { "output", required_argument, 0, 'o' },
					    { "help", no_argument, 0, 'h' }, { 0 } };
	bool json = false;
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (!strcmp(optarg, "json"))
				json = true;
			else if (strcmp(optarg, "table") && strcmp(optarg, "text")) {
				fprintf(stderr, "shoal: cpu-templates: --output '%s' is not table or json\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			return usage(stdout, 0);
		default:
			fprintf(stderr, "shoal: cpu-templates: unknown option %s\n", argv[optind - 1]);
			return usage(stderr, EXIT_USAGE);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "shoal: cpu-templates: unexpected argument '%s'\n", argv[optind]);
		return usage(stderr, EXIT_USAGE);
	}
	if (json) {
		json_t *a = json_array();

		for (int i = 0; i < cpu_templates_count; i++)
			json_array_append_new(a, json_pack("{s:s, s:s}", "name", cpu_templates[i].name,
							   "description", cpu_templates[i].what));
		json_dumpf(a, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(a);
		return 0;
	}
	printf("%-10s %s\n", "NAME", "DESCRIPTION");
	for (int i = 0; i < cpu_templates_count; i++)
		printf("%-10s %s\n", cpu_templates[i].name, cpu_templates[i].what);
	return 0;
}
