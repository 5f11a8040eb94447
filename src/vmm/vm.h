/*
 * vm.h - one virtual machine: KVM handles, guest memory, vCPUs, buses,
 * devices, the console and the event loop.
 *
 * Life cycle:  vm_create() -> vm_run() -> vm_destroy().
 *
 *   main thread     vm_run(): starts the event loop thread and one thread
 *                   per vCPU, then waits until the VM stops.
 *   vCPU threads    KVM_RUN in a loop; exits are dispatched by one switch
 *                   in vcpu.c to the port-I/O and MMIO buses.
 *   event thread    epoll on host fds (console input, timers, later device
 *                   back ends); never polls, sleeps in epoll_wait.
 *
 * Devices see the VM only through vm->host, the VMM's struct device_host
 * (devices/device_host.h): guest memory, the event loop, KVM's interrupt
 * ioctls, the two buses, the console and vm_stop, each behind a callback.
 *
 * Stopping: anything (a device, a vCPU exit, the console escape, a timeout)
 * calls vm_stop(vm, status, reason).  The first call wins; it sets every
 * vCPU's immediate_exit and signals the vCPU threads out of KVM_RUN.
 */
#ifndef SHOAL_VMM_VM_H
#define SHOAL_VMM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "base/error.h"
#include "devices/device_host.h"
#include "vmm/bus.h"
#include "vmm/config.h"
#include "vmm/cpuid.h"
#include "base/guest_mem.h"
#include "boot/boot.h"
#include "base/state.h"

struct device;
struct control;
struct eventloop;
struct console;

#define VM_MAX_DEVICES 32

struct vcpu {
	struct vm *vm;
	int index;                     /* 0 is the boot CPU; also its APIC id */
	int fd;
	struct kvm_run *run;           /* mmap'd from the vCPU fd */
	size_t run_size;
	pthread_t thread;
	bool started;
	clockid_t cpu_clock;           /* this thread's CPU-time clock */
	_Atomic uint64_t exits;        /* KVM_RUN returns, for metrics */
};

/* Called on a vCPU thread for each complete report line from the test
 * device (without the newline). */
typedef void (*vm_report_fn)(void *opaque, const char *line);

/* A control-socket command that a higher layer adds (the state streams
 * add "snapshot"): called on the event loop thread with the request object;
 * returns the reply object (jansson's json_t). */
struct json_t;
typedef struct json_t *(*vm_command_fn)(struct vm *vm, struct json_t *req, void *opaque);

struct vm {
	struct vm_config cfg;          /* a private copy */
	int kvm_fd, vm_fd;
	struct guest_mem mem;
	struct boot_info boot;
	const struct cpu_template *tmpl;
	int ncpus;
	struct vcpu *vcpus;
	struct bus iobus, mmiobus;
	struct device *devices[VM_MAX_DEVICES];
	int ndevices;
	struct eventloop *loop;
	struct console *console;

	vm_report_fn report_fn;        /* optional, see vm_set_report_fn */
	void *report_opaque;

	atomic_bool stopping;
	int exit_status;               /* EXIT_* or the guest's code */
	char exit_reason[256];         /* one line, for the user */
	atomic_bool migrated;          /* the VM left by a completed live migration
	                                * (state/migrate.c): this copy stopped for good */
	pthread_mutex_t stop_lock;     /* also guards pause state below */
	pthread_cond_t stop_cond;      /* signalled on stop, park and resume */

	atomic_bool pause_requested;   /* vCPUs park outside KVM_RUN while set */
	/* Set while the VM may not be resumed before something is settled
	 * (an incoming migration in doubt, state/migrate.c): the control
	 * command "resume" asks it first; 0 (it may clear itself), or -1
	 * with `e`, and the VM stays paused.  Event-loop thread. */
	int (*resume_gate)(struct vm *vm, struct error *e);
	int parked;                    /* vCPUs parked now (under stop_lock) */
	atomic_bool hold;              /* guest-set page protection changes memory
	                                  slots: park as for a pause (mem_protect.c) */
	struct device *protect;        /* the pv-protect device (mem_protect.c) */
	struct vm_protect *protect_be; /* its memory-slot backend */
	uint64_t started_ns;           /* CLOCK_MONOTONIC when vm_run began */
	struct control *control;       /* the --api-socket server, or NULL */
	bool restoring;                /* built from a snapshot: no boot loading */
	int ncommands;                 /* control commands added from above */
	struct vm_command {
		const char *name;
		vm_command_fn fn;
		void *opaque;
	} commands[8];
	struct device_host host;       /* what devices see of us (host.pci: the bus) */
	_Atomic unsigned dirty_starts; /* vm_dirty_start calls: a user of the dirty
	                                  log (mem/page_hash.c checks for others) */
};

/* Build a VM from `cfg`: open KVM, create memory, irqchip, PIT, vCPUs with
 * CPUID, devices, load the kernel.  Returns NULL with `e` filled. */
struct vm *vm_create(const struct vm_config *cfg, struct error *e);

/* Build a VM of `cfg` whose RAM comes from `mem_fd`, an image of the
 * memfd (base/guest_mem.h: guest_mem_load_file), with no kernel loaded and
 * no boot registers: the caller restores vCPU, KVM and device state next
 * (state/snapshot.c).  With `clone`, RAM is a copy-on-write mapping of
 * the file (guest_mem_map_file_private) instead of a copy in a memfd.
 * NULL with `e` filled. */
struct vm *vm_create_restored(const struct vm_config *cfg, int mem_fd, bool clone,
				struct error *e);

/* Build a VM of `cfg` as vm_create_restored does, with empty (all zero)
 * RAM: for an incoming migration (state/migrate.c), which fills RAM and
 * restores the vCPU, KVM and device state before vm_run. */
struct vm *vm_create_incoming(const struct vm_config *cfg, struct error *e);

/* Add control command `name` (up to 8); 0, or -1 when the table is full. */
int vm_add_command(struct vm *vm, const char *name, vm_command_fn fn, void *opaque);

/* Stop every device from touching guest memory on its own (a disk's I/O
 * thread: nothing new is started and what is in flight is waited for), or
 * let it go on.  For a snapshot of a paused VM: paused vCPUs make no new
 * requests, and the event loop, which feeds the other devices, is the
 * thread that takes the snapshot. */
void vm_quiesce_devices(struct vm *vm, bool on);

/* Run until the guest powers off, exits, faults or vm_stop is called.
 * Returns the process exit status; vm->exit_reason says why. */
int vm_run(struct vm *vm);

/* Ask the VM to stop with `status`.  Safe from any thread; first call wins. */
void vm_stop(struct vm *vm, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void vm_destroy(struct vm *vm);

/* Take every vCPU out of the guest and keep it out; returns when all are
 * parked (or the VM is stopping).  vm_resume lets them run again.  Both are
 * idempotent and safe from any thread but a vCPU thread. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
/* Before vm_run: its vCPUs park at once, until vm_resume. */
void vm_pause_at_start(struct vm *vm);
bool vm_is_paused(struct vm *vm);

/* Park the calling vCPU thread while a pause is requested (vcpu.c). */
void vm_park_vcpu(struct vm *vm);

/* Find a device by instance name ("serial0"), or NULL. */
struct device *vm_find_device(struct vm *vm, const char *name);

/* Receive test-device report lines (for test harnesses and benchmarks). */
void vm_set_report_fn(struct vm *vm, vm_report_fn fn, void *opaque);

/* Save every device's state as sections; restore them by instance name. */
int vm_save_devices(struct vm *vm, struct state_writer *w);
int vm_restore_devices(struct vm *vm, const void *buf, size_t len, struct error *e);

/* vcpu.c */
int vcpu_create(struct vm *vm, struct vcpu *v, int index, struct error *e);
void vcpu_destroy(struct vcpu *v);
void *vcpu_thread(void *arg);
void vcpu_kick(struct vcpu *v);
void vcpu_dump_regs(struct vcpu *v);

#endif
