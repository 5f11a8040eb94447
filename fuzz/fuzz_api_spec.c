/*
 * fuzz_api_spec.c - libFuzzer target for shoald's VM spec reader and
 * validator (host/spec.c, and through it the VMM's vm_config_from_json and
 * vm_config_validate): the body of POST /v1/vms.
 *
 * Host checks (files, host memory) are off so every input exercises the
 * parser and the validator alone.  An accepted spec must render to JSON
 * that is accepted again and renders to the same text (the canonical form
 * is a fixed point): a spec the daemon stores must be one it reads back
 * unchanged after a restart.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct host_spec s, again;
	struct api_err e;

	if (size > (64 << 10))
		return 0;
	if (host_spec_parse((const char *)data, size, false, &s, &e)) {
		if (e.http != 400 || !e.msg[0] || !e.code[0])
			abort();          /* every refusal is a 400 with words */
		return 0;
	}
	if (host_spec_parse(s.spec_json, strlen(s.spec_json), false, &again, &e))
		abort();
	if (strcmp(s.name, again.name) || strcmp(s.spec_json, again.spec_json) ||
	    s.restart != again.restart || !host_name_valid(s.name))
		abort();
	host_spec_free(&again);
	host_spec_free(&s);
	return 0;
}
