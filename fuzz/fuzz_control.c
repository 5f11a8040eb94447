/*
 * fuzz_control.c - a hostile client against the VMM's control socket
 * (vmm/control.c): request lines through control_handle_line, the parser
 * and the command dispatcher the socket's reader calls for each line.
 *
 * The VM is a struct vm without KVM: no vCPUs (so pause parks nothing and
 * returns at once), no guest RAM, its devices those the builder makes on a
 * fake device host (tests/fake_host.h) for a configuration with a balloon,
 * so "status", "metrics", "stop" (the ACPI power button) and "balloon" reach
 * real devices.  One extra command, "fuzz-fd", stands for a command added
 * from above that wants a descriptor passed with its request
 * (control_take_fd): none ever is here, as from a client that sends none.
 * The commands that write snapshots or open connections (state/) are not
 * added.
 *
 * The input is split into lines at '\n' as the socket's reader splits its
 * buffer, each handled in turn (a NUL inside a line ends it there, as the
 * reader's C string does), the VM going from one to the next as a client's
 * requests would move it.  Lines of 64 KiB or more, which the reader
 * refuses before parsing, are not generated (libFuzzer's inputs are
 * shorter).  Malformed JSON, unknown commands, wrong types and values are
 * the fuzzer's to find.
 *
 * Checks, besides crashes, leaks and sanitizer reports: every reply is one
 * line, a JSON object with a boolean "ok", and an error reply carries a
 * string "error"; "bytes" of console-log matches the raw bytes returned.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "devices/device.h"
#include "vmm/config.h"
#include "vmm/control.h"
#include "vmm/devices.h"
#include "vmm/vm.h"
#include "../tests/fake_host.h"
#include "fuzz_vm.h"

#define LINE_MAX_FUZZ (64 * 1024)

static struct fake_host *host;
static struct vm *vm;
static int fd_calls;

/* A command added from above that takes the request's descriptor. */
static json_t *fuzz_fd_cmd(struct vm *v, json_t *req, void *opaque)
{
	int fd = control_take_fd();

	(void)v;
	(void)req;
	(void)opaque;
	fd_calls++;
	if (fd >= 0)
		abort();   /* no descriptor is ever passed here */
	return json_pack("{s:b, s:s}", "ok", 0, "error", "fuzz-fd: no descriptor came with the request");
}

static void setup(void)
{
	struct vm_config cfg;
	struct error e;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	vm_config_init(&cfg);
	cfg.balloon = true;
	host = fake_host_new(cfg.memory);
	if (!host || fake_host_pci(host, &e) || devices_create_all(&host->host, &cfg, &e))
		abort();
	vm = fuzz_fake_vm(host, 0);
	vm_config_free(&vm->cfg);
	vm_config_copy(&vm->cfg, &cfg);
	vm_config_free(&cfg);
	bus_init(&vm->iobus, "io");
	bus_init(&vm->mmiobus, "mmio");
	if (!vm_find_device(vm, "acpi-pm") || !vm_find_device(vm, "virtio-balloon0") ||
	    vm_add_command(vm, "fuzz-fd", fuzz_fd_cmd, NULL))
		abort();
}

/* Every reply: one line, a JSON object with a boolean "ok" (and a string
 * "error" when it is false). */
static void check_reply(const char *rep, const unsigned char *extra, size_t extra_len)
{
	size_t n = strlen(rep);
	json_t *o, *ok;

	if (!n || rep[n - 1] != '\n' || memchr(rep, '\n', n - 1))
		abort();
	o = json_loadb(rep, n - 1, 0, NULL);
	ok = json_object_get(o, "ok");
	if (!json_is_object(o) || !json_is_boolean(ok))
		abort();
	if (json_is_false(ok) && !json_is_string(json_object_get(o, "error")))
		abort();
	if (json_object_get(o, "bytes") &&
	    (json_integer_value(json_object_get(o, "bytes")) != (json_int_t)extra_len ||
	     (extra_len && !extra)))
		abort();
	json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line;
	size_t at = 0;

	if (!vm)
		setup();
	/* each input starts from a running VM */
	atomic_store(&vm->stopping, false);
	atomic_store(&vm->pause_requested, false);
	line = malloc(size + 1);
	if (!line)
		return 0;
	while (at < size) {
		const uint8_t *nl = memchr(data + at, '\n', size - at);
		size_t n = nl ? (size_t)(nl - (data + at)) : size - at;
		unsigned char *extra;
		size_t extra_len;
		int attach;
		char *rep;

		if (!nl || n >= LINE_MAX_FUZZ)
			break;   /* no complete line: the reader waits for more */
		memcpy(line, data + at, n);
		line[n] = '\0';
		at += n + 1;
		rep = control_handle_line(vm, line, -1, &extra, &extra_len, &attach);
		if (!rep)
			abort();   /* only out of memory */
		check_reply(rep, extra, extra_len);
		if (attach)
			abort();   /* no console here: console-attach must fail */
		free(rep);
		free(extra);
	}
	free(line);
	return 0;
}
