/*
 * exitcode.h - the exit statuses of `shoal` (documented in docs/cli.md).
 *
 * 0 and the guest's own code (0-63, through the test device) belong to the
 * guest.  Shoal's own failures use 64 and up, one value per kind of failure,
 * so scripts can tell "bad flag" from "bad kernel" from "guest crashed".
 */
#ifndef SHOAL_BASE_EXITCODE_H
#define SHOAL_BASE_EXITCODE_H

enum {
	EXIT_POWEROFF      = 0,   /* guest powered off (ACPI S5) or reset */
	EXIT_GUEST_MAX     = 63,  /* test-device codes 0..63 pass through */
	EXIT_USAGE         = 64,  /* bad command line, bad config file */
	EXIT_BADKERNEL     = 65,  /* kernel/initrd not loadable: not a kernel, truncated, too big */
	EXIT_NOINPUT       = 66,  /* kernel, initrd or config missing or unreadable */
	EXIT_RESOURCE      = 67,  /* memory or vCPUs the host cannot give */
	EXIT_NOKVM         = 68,  /* /dev/kvm missing or lacking a needed capability */
	EXIT_HOST          = 70,  /* other fatal host error (syscall failure) */
	EXIT_TRIPLE_FAULT  = 80,  /* guest triple-faulted (KVM_EXIT_SHUTDOWN) */
	EXIT_KVM_INTERNAL  = 81,  /* KVM internal error / emulation failure */
	EXIT_GUEST_BAD     = 82,  /* unhandled exit, guest hung, or guest reported failure */
	EXIT_ESCAPE        = 83,  /* user quit with the console escape key */
	EXIT_BADSTATE      = 84,  /* a snapshot that is damaged, of another version, or
	                           * that this host or VM cannot take */
};

#endif
