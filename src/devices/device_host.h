/*
 * device_host.h - what a device may use of whatever hosts it.
 *
 * A device model never sees the VM.  It is handed a `const struct
 * device_host *` when it is built and keeps it in struct device; through it,
 * and only through it, the device reaches:
 *
 *   - guest memory (`mem`), to walk rings and copy buffers;
 *   - the event loop (`loop`), to watch its host-side fds (TAPs, sockets,
 *     timers); NULL where there is none (unit tests);
 *   - interrupt delivery: an ISA/IOAPIC line (`irq_line`), and for PCI
 *     MSI-X the routing table, irqfds and ioeventfds (`set_irq_routing`,
 *     `irqfd`, `ioeventfd`), each a KVM ioctl in the VMM and absent
 *     elsewhere;
 *   - its place on the machine: attach (`add_device`, the host owns the
 *     device from then on) and claim port or MMIO ranges (`map`);
 *   - the console, for the serial port (`console_write`,
 *     `console_attach_input`);
 *   - stopping the machine with a status and a reason (`stop`: a reset or
 *     power-off request, the test device's exit port), and the test
 *     device's report lines (`report`).
 *
 * Two providers exist: the VMM (src/vmm/vm.c, one per struct vm) and the
 * vhost-user back end (src/devices/vhost_user.c: memory the front end
 * shared, its own event loop, no interrupts or buses).  Unit tests and
 * fuzzers make a third (tests/fake_host.h).  Any callback may be NULL: the
 * helpers below then do nothing (or fail, for add_device and map), which is
 * what a device outside a VM should see.
 *
 * Invariants: the host outlives every device it hosts; callbacks are safe
 * from any thread (vCPU, event loop, device I/O thread).  The guest reaches
 * none of this directly: every call is a device's decision.
 */
#ifndef SHOAL_DEVICES_DEVICE_HOST_H
#define SHOAL_DEVICES_DEVICE_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct device;
struct guest_mem;
struct eventloop;
struct pci_host;
struct kvm_irq_routing;
struct kvm_ioeventfd;

enum device_space { DEVICE_SPACE_IO = 0, DEVICE_SPACE_MMIO };

/* Console input for a device: called on the event loop thread. */
typedef void (*device_input_fn)(void *opaque, const uint8_t *buf, int len);

struct device_host {
	void *opaque;                     /* the provider's own state */
	struct guest_mem *mem;            /* guest RAM */
	struct eventloop *loop;           /* NULL: no event loop */
	uint64_t ram_size;                /* bytes of guest RAM (PCI windows) */
	struct pci_host *pci;             /* the PCI bus (pci.c), NULL: none */

	/* Take ownership of `d` (freed by the host, also on failure). 0 or -1. */
	int (*add_device)(const struct device_host *h, struct device *d);
	/* Claim [base, base+len) of port or MMIO space for `d`. 0 or -1. */
	int (*map)(const struct device_host *h, enum device_space space, uint64_t base,
		   uint64_t len, struct device *d);
	/* Interrupts. */
	void (*irq_line)(const struct device_host *h, unsigned gsi, int level);
	int (*set_irq_routing)(const struct device_host *h, const struct kvm_irq_routing *r);
	int (*irqfd)(const struct device_host *h, int fd, unsigned gsi);
	int (*ioeventfd)(const struct device_host *h, const struct kvm_ioeventfd *k);
	/* Stop the machine with `status` (EXIT_* or the guest's code); first wins. */
	void (*stop)(const struct device_host *h, int status, const char *reason);
	/* One complete test-device report line (no newline). */
	void (*report)(const struct device_host *h, const char *line);
	/* The console. */
	void (*console_write)(const struct device_host *h, const void *buf, size_t len);
	int (*console_attach_input)(const struct device_host *h, device_input_fn fn, void *opaque);
};

/* Helpers that tolerate a NULL host or callback (device.c). */
int device_host_attach(const struct device_host *h, struct device *d);
int device_host_map(const struct device_host *h, enum device_space space, uint64_t base,
		    uint64_t len, struct device *d);
void device_host_irq_line(const struct device_host *h, unsigned gsi, int level);
void device_host_stop(const struct device_host *h, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void device_host_report(const struct device_host *h, const char *line);
void device_host_console_write(const struct device_host *h, const void *buf, size_t len);

#endif
