/*
 * spec.c - reading and checking a VM spec for shoald (see spec.h).
 *
 * Order of checks, each failing with 400 and a message that names the
 * field: well-formed JSON (no duplicate keys) -> an object -> "name" ->
 * "restart" -> the VMM's keys through vm_config_from_json (unknown keys and
 * wrong types) -> vm_config_validate (ranges, required kernel) -> what the
 * host can honour (absolute paths, readable files, memory).
 */
#include "host/spec.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "util/error.h"

bool host_name_valid(const char *name)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > HOST_NAME_MAX_LEN || !isalnum((unsigned char)name[0]))
		return false;
	for (i = 1; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
			return false;
	return true;
}

/* Take "name" out of `root` into s->name. */
static int spec_take_name(json_t *root, struct host_spec *s, struct api_err *e)
{
	json_t *v = json_object_get(root, "name");

	if (!v)
		return api_err_set(e, 400, "invalid_spec", "name: missing (a VM needs a name)");
	if (!json_is_string(v))
		return api_err_set(e, 400, "invalid_spec", "name: must be a string");
	if (!host_name_valid(json_string_value(v)))
		return api_err_set(e, 400, "invalid_spec",
				   "name: \"%.80s\" is not a valid VM name (1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit)",
				   json_string_value(v), HOST_NAME_MAX_LEN);
	snprintf(s->name, sizeof(s->name), "%s", json_string_value(v));
	json_object_del(root, "name");
	return 0;
}

/* Take "restart" (optional) out of `root`. */
static int spec_take_restart(json_t *root, struct host_spec *s, struct api_err *e)
{
	json_t *v = json_object_get(root, "restart");
	int p;

	s->restart = RESTART_NO;
	if (!v || json_is_null(v))
		goto out;
	if (!json_is_string(v) || (p = restart_policy_parse(json_string_value(v))) < 0)
		return api_err_set(e, 400, "invalid_spec",
				   "restart: must be \"no\", \"on-failure\" or \"always\"");
	s->restart = (enum restart_policy)p;
out:
	json_object_del(root, "restart");
	return 0;
}

/* `path` (for field `key`) is absolute and names a readable regular file. */
static int spec_check_file(const char *key, const char *path, struct api_err *e)
{
	struct stat st;

	if (path[0] != '/')
		return api_err_set(e, 400, "invalid_spec",
				   "%s: \"%.200s\" is not an absolute path (the daemon does not share the client's working directory)",
				   key, path);
	if (stat(path, &st) < 0 || access(path, R_OK) < 0)
		return api_err_set(e, 400, "invalid_spec", "%s: %.200s: %s", key, path,
				   strerror(errno));
	if (!S_ISREG(st.st_mode))
		return api_err_set(e, 400, "invalid_spec", "%s: %.200s: not a regular file",
				   key, path);
	return 0;
}

/* What the host must honour: files and memory. */
static int spec_check_host(const struct vm_config *c, struct api_err *e)
{
	struct sysinfo si;
	uint64_t avail;

	if (spec_check_file("kernel", c->kernel, e))
		return -1;
	if (c->initrd && spec_check_file("initrd", c->initrd, e))
		return -1;
	for (int i = 0; i < c->ndisks; i++) {
		char key[32];

		snprintf(key, sizeof(key), "disks[%d].path", i);
		if (spec_check_file(key, c->disks[i].path, e))
			return -1;
		if (!c->disks[i].readonly && access(c->disks[i].path, W_OK) < 0)
			return api_err_set(e, 400, "invalid_spec", "%s: %.200s: %s (or set \"readonly\")",
					   key, c->disks[i].path, strerror(errno));
	}
	if (c->console == CONSOLE_FILE && c->console_path[0] != '/')
		return api_err_set(e, 400, "invalid_spec",
				   "console: \"file:%.200s\" is not an absolute path", c->console_path);
	if (sysinfo(&si) == 0) {
		avail = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
		if (c->memory > avail)
			return api_err_set(e, 400, "invalid_spec",
					   "memory: %llu MiB is more than this host has (%llu MiB RAM and swap)",
					   (unsigned long long)(c->memory >> 20),
					   (unsigned long long)(avail >> 20));
	}
	return 0;
}

/* The VMM's keys: its own reader and validator. */
static int spec_vm_config(json_t *root, struct host_spec *s, bool check_host,
			  struct api_err *e)
{
	struct error err;
	char *text = json_dumps(root, JSON_COMPACT);

	if (!text)
		return api_err_set(e, 500, "internal", "spec: out of memory");
	vm_config_init(&s->cfg);
	if (vm_config_from_json(&s->cfg, "spec", text, &err) ||
	    vm_config_validate(&s->cfg, &err)) {
		free(text);
		/* "spec: unknown key "x"" and "cpus: ..." both name the field */
		return api_err_set(e, 400, "invalid_spec", "%s",
				   strncmp(err.msg, "spec: ", 6) ? err.msg : err.msg + 6);
	}
	free(text);
	if (s->cfg.cpu_template && !*s->cfg.cpu_template)
		return api_err_set(e, 400, "invalid_spec", "cpu_template: must not be empty");
	return check_host ? spec_check_host(&s->cfg, e) : 0;
}

/* The normalized spec: daemon keys first, then the VMM's settings. */
static int spec_render(struct host_spec *s, struct api_err *e)
{
	json_t *cfg, *out;

	s->config_json = vm_config_to_json(&s->cfg);
	cfg = s->config_json ? json_loads(s->config_json, 0, NULL) : NULL;
	if (!cfg)
		return api_err_set(e, 500, "internal", "spec: cannot render the config");
	out = json_object();
	json_object_set_new(out, "name", json_string(s->name));
	json_object_set_new(out, "restart", json_string(restart_policy_name(s->restart)));
	json_object_update(out, cfg);
	json_decref(cfg);
	s->spec_json = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(out);
	return s->spec_json ? 0 : api_err_set(e, 500, "internal", "spec: out of memory");
}

int host_spec_parse(const char *text, size_t len, bool check_host,
		    struct host_spec *s, struct api_err *e)
{
	json_error_t jerr;
	json_t *root;
	int rc = -1;

	memset(s, 0, sizeof(*s));
	vm_config_init(&s->cfg);
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return api_err_set(e, 400, "invalid_json", "spec: line %d column %d: %s",
				   jerr.line, jerr.column, jerr.text);
	if (!json_is_object(root)) {
		api_err_set(e, 400, "invalid_spec", "spec: expected a JSON object");
		goto out;
	}
	if (spec_take_name(root, s, e) || spec_take_restart(root, s, e) ||
	    spec_vm_config(root, s, check_host, e) || spec_render(s, e))
		goto out;
	rc = 0;
out:
	json_decref(root);
	if (rc)
		host_spec_free(s);
	return rc;
}

void host_spec_free(struct host_spec *s)
{
	vm_config_free(&s->cfg);
	free(s->spec_json);
	free(s->config_json);
	s->spec_json = s->config_json = NULL;
}
