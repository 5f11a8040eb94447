/* cpu_templates.c - `shoal cpu-templates`: list the CPU templates. */
#include <stdio.h>

#include "cli/commands.h"
#include "vmm/cpuid.h"

int cmd_cpu_templates(int argc, char **argv)
{
	printf("%-10s %s\n", "NAME", "DESCRIPTION");
	for (int i = 0; i < cpu_templates_count; i++)
		printf("%-10s %s\n", cpu_templates[i].name, cpu_templates[i].what);
	return 0;
}
