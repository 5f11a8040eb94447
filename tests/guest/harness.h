/*
 * harness.h - boot the test guest in-process and read its reports, in the
 * manner of the Linux KVM selftests.
 *
 * A test asks for a guest with a command line ("fill 0x1000000 16M 7;
 * verify 0x1000000 16M 7"), a vCPU count and memory size; the harness
 * builds a VM with vm_create(), collects every report line the guest sends
 * through the test device, runs it to the end and returns the exit status.
 * Tests skip (with the reason printed) when /dev/kvm cannot be opened.
 */
#ifndef SHOAL_TESTS_HARNESS_H
#define SHOAL_TESTS_HARNESS_H

#include <stdint.h>

struct vm_config;

#define HARNESS_MAX_REPORTS 512

struct guest_result {
	int status;                        /* vm_run's exit status */
	char reason[256];                  /* vm->exit_reason */
	int nreports;
	char *reports[HARNESS_MAX_REPORTS];
	char console[65536];               /* the serial console output */
	double seconds;                    /* wall time of vm_run */
};

struct guest_opts {
	const char *cmdline;
	int cpus;                          /* 0: 1 */
	uint64_t memory;                   /* 0: 256 MiB */
	const char *cpu_template;          /* NULL: host */
	unsigned timeout_s;                /* 0: 60 */
	const char *kernel;                /* NULL: the test guest */
	/* Optional: adjust the config (add devices) before the VM is built. */
	void (*tweak)(struct vm_config *c, void *arg);
	void *tweak_arg;
};

/* Path of build/shoal-guest (from $BUILD or next to the test binary). */
const char *harness_guest_path(void);

/* Skip the calling cmocka test if KVM is unusable. */
void harness_require_kvm(void);

/* Boot and run to completion.  Returns 0 when the VM was created (whatever
 * the guest then did), -1 with `err` filled when vm_create failed. */
int harness_run(const struct guest_opts *o, struct guest_result *r, char *err, int errlen,
		int *err_status);

/* First report starting with `prefix`, or NULL. */
const char *harness_report(const struct guest_result *r, const char *prefix);

/* Integer value of key=... in a report line (e.g. "cpus"), or -1. */
long long harness_field(const char *line, const char *key);

void harness_free(struct guest_result *r);

#endif
