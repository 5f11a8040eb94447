/*
 * vm.c - building, running and tearing down one VM (see vm.h).
 *
 * vm_create() does every step that can fail before any guest code runs, so
 * a bad kernel, a missing /dev/kvm or too much memory is reported before
 * threads exist.  It works in two stages:
 *
 *   1. without KVM: the config's ranges, the CPU template's name, the disk
 *      files, the host's memory, then guest RAM and the boot loaders, which
 *      read, check and load the kernel and initrd and check the command line
 *      against the boot protocol.  Every check on the user's input is here,
 *      each done once, by the code that owns it (vm_config_validate, the
 *      loaders), so bad input gets its own status (docs/cli.md) on any host,
 *      with or without /dev/kvm;
 *   2. with KVM: /dev/kvm and the VM fd, the memory slots over the RAM
 *      already loaded, irqchip and PIT, devices, vCPUs.  What can fail here
 *      is the host (68, 67 for a CPU template it cannot offer, 70), or a
 *      device's own file contents (a qcow2 header: 66).
 *
 * Order matters to KVM: the irqchip and PIT must exist before the first
 * vCPU, and CPUID must be set before the first KVM_RUN.
 *
 * Devices are built by the builder (vmm/devices.c) on vm->host, this VM's
 * struct device_host: the callbacks at "the device host" below are the
 * only way a device reaches the VM, and each is one KVM ioctl, a bus
 * registration, the console or vm_stop.
 *
 * vm_run() then starts the event loop and the vCPU threads and sleeps on a
 * condition variable until vm_stop() is called.  The first vm_stop() wins:
 * its status and reason are what the user sees.
 */
#include "vmm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/sysinfo.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "block/blockdev.h"
#include "devices/device.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"
#include "vmm/console.h"
#include "base/eventloop.h"
#include "base/layout.h"
#include "devices/pci.h"
#include "vmm/devices.h"
#include "vmm/mem_protect.h"
#include "vmm/mem_shared.h"
#include "vmm/mtrace.h"

/* Where KVM may put the VMX TSS and identity map (Intel only; the rest of
 * KVM ignores them).  Just below the IOAPIC-LAPIC area, in the 32-bit hole. */
#define KVM_TSS_ADDR        0xfffbd000ULL
#define KVM_IDMAP_ADDR      0xfffbc000ULL

static int vm_open_kvm(struct vm *vm, struct error *e)
{
	int ver;

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0)
		return error_set(e, EXIT_NOKVM, "/dev/kvm: %s%s", strerror(errno),
				 errno == ENOENT ? " (is the kvm module loaded?)" :
				 errno == EACCES ? " (add yourself to the kvm group)" : "");
	ver = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (ver != KVM_API_VERSION)
		return error_set(e, EXIT_NOKVM, "/dev/kvm: API version %d, expected %d",
				 ver, KVM_API_VERSION);
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return error_set(e, EXIT_NOKVM, "KVM_CREATE_VM: %s", strerror(errno));
	static const struct { int cap; const char *name; } need[] = {
		{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
		{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
		{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
		{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
	};
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
		if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, need[i].cap) <= 0)
			return error_set(e, EXIT_NOKVM, "/dev/kvm lacks %s", need[i].name);
	return 0;
}

/* Refuse memory the host plainly cannot give: more than its RAM + swap. */
static int vm_check_host_memory(uint64_t want, struct error *e)
{
	struct sysinfo si;
	uint64_t have;

	if (sysinfo(&si) < 0)
		return 0;
	have = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
	if (want > have)
		return error_set(e, EXIT_RESOURCE,
				 "memory: %llu MiB is more than this host has (%llu MiB RAM and swap)",
				 (unsigned long long)(want >> 20), (unsigned long long)(have >> 20));
	return 0;
}

/* Give KVM the guest RAM that stage 1 created and loaded: one slot per
 * region. */
static int vm_map_memory(struct vm *vm, struct error *e)
{
	for (int i = 0; i < vm->mem.nregions; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = (uint32_t)i,
			.guest_phys_addr = vm->mem.region[i].gpa,
			.memory_size = vm->mem.region[i].size,
			.userspace_addr = (uintptr_t)vm->mem.region[i].hva,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return error_set(e, EXIT_RESOURCE, "KVM_SET_USER_MEMORY_REGION: %s",
					 strerror(errno));
	}
	if (vm->boot.firmware) {   /* the BIOS image, read-only, ending at 4 GiB */
		struct kvm_userspace_memory_region r = {
			.slot = (uint32_t)vm->mem.nregions,
			.flags = KVM_MEM_READONLY,
			.guest_phys_addr = GUEST_MEM32_GAP_END - vm->boot.firmware_size,
			.memory_size = vm->boot.firmware_size,
			.userspace_addr = (uintptr_t)vm->boot.firmware,
		};
		if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) <= 0)
			return error_set(e, EXIT_NOKVM, "/dev/kvm lacks KVM_CAP_READONLY_MEM "
					 "(needed to map the firmware)");
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return error_set(e, EXIT_RESOURCE, "KVM_SET_USER_MEMORY_REGION (firmware): %s",
					 strerror(errno));
	}
	return 0;
}

static int vm_setup_irqchip(struct vm *vm, struct error *e)
{
	struct kvm_pit_config pit = { .flags = 0 };
	uint64_t idmap = KVM_IDMAP_ADDR;

	/* Intel-only set-up; other back ends refuse or ignore it harmlessly. */
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0)
		log_debug("KVM_SET_TSS_ADDR: %s (ignored)", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		log_debug("KVM_SET_IDENTITY_MAP_ADDR: %s (ignored)", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return error_set(e, EXIT_NOKVM, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return error_set(e, EXIT_NOKVM, "KVM_CREATE_PIT2: %s", strerror(errno));
	return 0;
}

static int vm_setup_vcpus(struct vm *vm, struct error *e)
{
	vm->vcpus = calloc((size_t)vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return error_set(e, EXIT_HOST, "out of memory");
	for (int i = 0; i < vm->ncpus; i++)
		if (vcpu_create(vm, &vm->vcpus[i], i, e))
			return -1;
	return 0;
}

/* Refuse a disk image that is missing or that this process may not open
 * as asked (read-only or read-write), before KVM is touched.  Its contents
 * (a qcow2 header, a backing chain) are checked when the device opens it. */
static int vm_check_disk_files(const struct vm_config *cfg, struct error *e)
{
	for (int i = 0; i < cfg->ndisks; i++) {
		const struct vm_disk *d = &cfg->disks[i];
		int mode = d->readonly ? R_OK : R_OK | W_OK;

		if (d->path && !blockdev_is_scheme(d->path) &&	/* store:... is no file */
		    faccessat(AT_FDCWD, d->path, mode, AT_EACCESS) < 0)
			return error_set(e, EXIT_NOINPUT, "%s: %s", d->path, strerror(errno));
	}
	return 0;
}

/* Stage 1, the user's input, with no KVM: see the essay above. */
static int vm_check_config(struct vm *vm, const struct vm_config *cfg, struct error *e)
{
	if (vm_config_validate(cfg, e))
		return -1;
	vm->tmpl = cpu_template_find(cfg->cpu_template);
	if (!vm->tmpl)
		return error_set(e, EXIT_USAGE, "unknown CPU template '%s' "
				 "(`shoal cpu-templates` lists them)", cfg->cpu_template);
	if (vm_check_disk_files(cfg, e) || vm_check_host_memory(cfg->memory, e))
		return -1;
	return 0;
}

/* Stage 1, continued: guest RAM, and the boot loaders' own checks of the
 * kernel, initrd and command line as they load them into it. */
static int vm_load_guest(struct vm *vm, struct error *e)
{
	struct boot_request req = {
		.kernel_path = vm->cfg.kernel,
		.firmware_path = vm->cfg.firmware,
		.initrd_path = vm->cfg.initrd,
		.cmdline = vm->cfg.cmdline,
		.ncpus = vm->ncpus,
	};

	if (guest_mem_create(&vm->mem, vm->cfg.memory, e))
		return -1;
	return boot_load(&vm->mem, &req, &vm->boot, e);
}

/* ---- the device host: what devices may use of this VM ---- */

static int vm_host_add_device(const struct device_host *h, struct device *d)
{
	struct vm *vm = h->opaque;

	if (vm->ndevices == VM_MAX_DEVICES) {
		device_free(d);
		return -1;
	}
	vm->devices[vm->ndevices++] = d;
	return 0;
}

static int vm_host_map(const struct device_host *h, enum device_space space, uint64_t base,
		       uint64_t len, struct device *d)
{
	struct vm *vm = h->opaque;

	return bus_register(space == DEVICE_SPACE_IO ? &vm->iobus : &vm->mmiobus, base, len, d);
}

static void vm_host_irq_line(const struct device_host *h, unsigned gsi, int level)
{
	struct vm *vm = h->opaque;
	struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };

	if (vm->vm_fd < 0)
		return;
	if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq) < 0)
		log_warn("KVM_IRQ_LINE %u: %s", gsi, strerror(errno));
}

static int vm_host_set_irq_routing(const struct device_host *h, const struct kvm_irq_routing *r)
{
	struct vm *vm = h->opaque;

	if (vm->vm_fd < 0)
		return 0;
	return ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, r);
}

static int vm_host_irqfd(const struct device_host *h, int fd, unsigned gsi)
{
	struct vm *vm = h->opaque;
	struct kvm_irqfd irqfd = { .fd = (uint32_t)fd, .gsi = gsi };

	return ioctl(vm->vm_fd, KVM_IRQFD, &irqfd);
}

static int vm_host_ioeventfd(const struct device_host *h, const struct kvm_ioeventfd *k)
{
	struct vm *vm = h->opaque;

	if (vm->vm_fd < 0) {
		errno = EBADF;
		return -1;
	}
	return ioctl(vm->vm_fd, KVM_IOEVENTFD, k);
}

static void vm_host_stop(const struct device_host *h, int status, const char *reason)
{
	vm_stop(h->opaque, status, "%s", reason);
}

static void vm_host_report(const struct device_host *h, const char *line)
{
	struct vm *vm = h->opaque;

	if (vm->report_fn)
		vm->report_fn(vm->report_opaque, line);
}

static void vm_host_console_write(const struct device_host *h, const void *buf, size_t len)
{
	struct vm *vm = h->opaque;

	if (vm->console)
		console_write(vm->console, buf, len);
}

static int vm_host_console_attach_input(const struct device_host *h, device_input_fn fn,
					void *opaque)
{
	struct vm *vm = h->opaque;

	return vm->console ? console_attach_input(vm->console, fn, opaque) : 0;
}

/* A VM shell: fds -1, stop lock and condition, empty buses, the device
 * host (memory, loop and RAM size are filled in as vm_create makes them). */
static struct vm *vm_alloc(void)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	vm->kvm_fd = vm->vm_fd = -1;
	vm->mem.fd = -1;
	pthread_mutex_init(&vm->stop_lock, NULL);
	pthread_cond_init(&vm->stop_cond, NULL);
	bus_init(&vm->iobus, "io");
	bus_init(&vm->mmiobus, "mmio");
	vm->host = (struct device_host){
		.opaque = vm,
		.mem = &vm->mem,
		.add_device = vm_host_add_device,
		.map = vm_host_map,
		.irq_line = vm_host_irq_line,
		.set_irq_routing = vm_host_set_irq_routing,
		.irqfd = vm_host_irqfd,
		.ioeventfd = vm_host_ioeventfd,
		.stop = vm_host_stop,
		.report = vm_host_report,
		.console_write = vm_host_console_write,
		.console_attach_input = vm_host_console_attach_input,
	};
	return vm;
}

#define VM_MEM_INCOMING (-2)   /* vm_build's mem_fd: empty RAM, filled later */

/* Stage 1 for a restore: RAM from the snapshot's memory file instead of
 * the boot loaders (the kernel was loaded when the VM first booted). */
static int vm_load_memory_file(struct vm *vm, int mem_fd, bool clone, struct error *e)
{
	if (clone)
		return guest_mem_map_file_private(&vm->mem, mem_fd, vm->cfg.memory, e);
	if (guest_mem_create(&vm->mem, vm->cfg.memory, e))
		return -1;
	if (mem_fd == VM_MEM_INCOMING)   /* a migration stream fills it */
		return 0;
	return guest_mem_load_file(&vm->mem, mem_fd, e);
}

/* The ways in: booting (mem_fd -1), restoring (a memory file) and an
 * incoming migration (VM_MEM_INCOMING: empty RAM). */
static struct vm *vm_build(const struct vm_config *cfg, int mem_fd, bool clone,
			   struct error *e)
{
	struct vm *vm = vm_alloc();

	if (!vm) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	vm_config_copy(&vm->cfg, cfg);
	vm->ncpus = cfg->cpus;
	vm->restoring = mem_fd >= 0 || mem_fd == VM_MEM_INCOMING;
	if (path_confine((const char *const *)cfg->confine, cfg->nconfine, e))
		goto fail;              /* before any file the config names is opened */
	if (vm_check_config(vm, cfg, e) ||
	    (vm->restoring ? vm_load_memory_file(vm, mem_fd, clone, e) : vm_load_guest(vm, e)))
		goto fail;
	if (vm->restoring && cfg->firmware && boot_firmware_read(cfg->firmware, &vm->boot, e))
		goto fail;              /* RAM has its low copy; map the image again */
	if (vm_open_kvm(vm, e) || vm_map_memory(vm, e) || vm_setup_irqchip(vm, e))
		goto fail;
	vm->loop = eventloop_new();
	if (!vm->loop) {
		error_set(e, EXIT_HOST, "cannot create the event loop: %s", strerror(errno));
		goto fail;
	}
	vm->console = console_open(vm, cfg->console, cfg->console_path, e);
	vm->host.loop = vm->loop;
	vm->host.ram_size = vm->mem.size ? vm->mem.size : vm->cfg.memory;
	if (!vm->console || pci_init(&vm->host, &vm->host.pci, e) ||
	    devices_create_all(&vm->host, cfg, e) || vm_protect_create(vm, e) ||
	    vm_shared_create(vm, e) ||
	    vm_setup_vcpus(vm, e))
		goto fail;
	return vm;
fail:
	vm_destroy(vm);
	return NULL;
}

struct vm *vm_create(const struct vm_config *cfg, struct error *e)
{
	return vm_build(cfg, -1, false, e);
}

struct vm *vm_create_restored(const struct vm_config *cfg, int mem_fd, bool clone,
				struct error *e)
{
	if (mem_fd < 0) {
		error_set(e, EXIT_HOST, "internal: no memory file to restore from");
		return NULL;
	}
	return vm_build(cfg, mem_fd, clone, e);
}

struct vm *vm_create_incoming(const struct vm_config *cfg, struct error *e)
{
	return vm_build(cfg, VM_MEM_INCOMING, false, e);
}

int vm_add_command(struct vm *vm, const char *name, vm_command_fn fn, void *opaque)
{
	if (vm->ncommands == (int)(sizeof(vm->commands) / sizeof(vm->commands[0])))
		return -1;
	vm->commands[vm->ncommands++] = (struct vm_command){ name, fn, opaque };
	return 0;
}

void vm_quiesce_devices(struct vm *vm, bool on)
{
	for (int i = 0; i < vm->ndevices; i++) {
		struct device *d = vm->devices[i];

		if (!d->ops->quiesce)
			continue;
		pthread_mutex_lock(&d->lock);
		d->ops->quiesce(d, on);
		pthread_mutex_unlock(&d->lock);
	}
}

void vm_set_report_fn(struct vm *vm, vm_report_fn fn, void *opaque)
{
	vm->report_fn = fn;
	vm->report_opaque = opaque;
}

void vm_stop(struct vm *vm, int status, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&vm->stop_lock);
	if (atomic_load(&vm->stopping)) {
		pthread_mutex_unlock(&vm->stop_lock);
		return;
	}
	vm->exit_status = status;
	va_start(ap, fmt);
	vsnprintf(vm->exit_reason, sizeof(vm->exit_reason), fmt, ap);
	va_end(ap);
	atomic_store(&vm->stopping, true);
	for (int i = 0; i < vm->ncpus && vm->vcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	pthread_cond_broadcast(&vm->stop_cond);
	pthread_mutex_unlock(&vm->stop_lock);
}

static int vm_on_timeout(int fd, uint32_t events, void *opaque)
{
	struct vm *vm = opaque;

	vm_stop(vm, EXIT_GUEST_BAD, "guest did not finish within %u s (--timeout)",
		vm->cfg.timeout_s);
	return -1;
}

static int vm_arm_timeout(struct vm *vm)
{
	struct itimerspec its = { .it_value = { .tv_sec = vm->cfg.timeout_s } };
	int fd;

	if (!vm->cfg.timeout_s)
		return -1;
	fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) < 0 ||
	    eventloop_add(vm->loop, fd, EPOLLIN, vm_on_timeout, vm) < 0) {
		log_warn("cannot arm the %u s timeout: %s", vm->cfg.timeout_s, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

void vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->stop_lock);
	atomic_store(&vm->pause_requested, true);
	for (int i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	while (vm->parked < vm->ncpus && !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->stop_cond, &vm->stop_lock);
	pthread_mutex_unlock(&vm->stop_lock);
}

void vm_pause_at_start(struct vm *vm)
{
	atomic_store(&vm->pause_requested, true);
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->stop_lock);
	atomic_store(&vm->pause_requested, false);
	pthread_cond_broadcast(&vm->stop_cond);
	pthread_mutex_unlock(&vm->stop_lock);
}

bool vm_is_paused(struct vm *vm)
{
	return atomic_load(&vm->pause_requested);
}

void vm_park_vcpu(struct vm *vm)
{
	pthread_mutex_lock(&vm->stop_lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->stop_cond);
	while ((atomic_load(&vm->pause_requested) || atomic_load(&vm->hold)) &&
	       !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->stop_cond, &vm->stop_lock);
	vm->parked--;
	pthread_mutex_unlock(&vm->stop_lock);
}

static void vm_kick_signal(int sig)
{
	(void)sig;   /* only interrupts KVM_RUN */
}

int vm_run(struct vm *vm)
{
	struct sigaction sa = { .sa_handler = vm_kick_signal };
	int timer_fd, started = 0;

	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	vm->started_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	mtrace_first(MTRACE_VM_RUN, "dst.vm_run");
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);   /* no SA_RESTART: KVM_RUN returns EINTR */
	timer_fd = vm_arm_timeout(vm);
	if (eventloop_start(vm->loop) < 0) {
		vm_stop(vm, EXIT_HOST, "cannot start the event loop thread");
		goto out;
	}
	mtrace_first(MTRACE_LOOP, "dst.loop_started");
	for (int i = 0; i < vm->ncpus; i++) {
		if (pthread_create(&vm->vcpus[i].thread, NULL, vcpu_thread, &vm->vcpus[i])) {
			vm_stop(vm, EXIT_HOST, "cannot start vCPU thread %d", i);
			break;
		}
		vm->vcpus[i].started = true;
		started++;
	}
	mtrace_first(MTRACE_THREADS, "dst.vcpu_threads");
	seccomp_thread_enter(SECCOMP_MAIN);   /* every thread is started */
	pthread_mutex_lock(&vm->stop_lock);
	while (!atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->stop_cond, &vm->stop_lock);
	pthread_mutex_unlock(&vm->stop_lock);
	for (int i = 0; i < started; i++) {
		vcpu_kick(&vm->vcpus[i]);
		pthread_join(vm->vcpus[i].thread, NULL);
		vm->vcpus[i].started = false;
	}
out:
	eventloop_stop(vm->loop);
	if (timer_fd >= 0)
		close(timer_fd);
	return vm->exit_status;
}

int vm_save_devices(struct vm *vm, struct state_writer *w)
{
	return devices_save(vm->devices, vm->ndevices, w);
}

struct device *vm_find_device(struct vm *vm, const char *name)
{
	for (int i = 0; i < vm->ndevices; i++)
		if (!strcmp(vm->devices[i]->name, name))
			return vm->devices[i];
	return NULL;
}

int vm_restore_devices(struct vm *vm, const void *buf, size_t len, struct error *e)
{
	return devices_restore(vm->devices, vm->ndevices, buf, len, e);
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	mtrace_first(MTRACE_DESTROY, "src.destroy");
	if (vm->loop)
		eventloop_stop(vm->loop);
	for (int i = 0; vm->vcpus && i < vm->ncpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
	free(vm->vcpus);
	pci_destroy(vm->host.pci);
	vm->host.pci = NULL;
	vm_protect_destroy(vm);
	for (int i = 0; i < vm->ndevices; i++)
		device_free(vm->devices[i]);
	console_close(vm->console);
	eventloop_free(vm->loop);
	guest_mem_destroy(&vm->mem);
	boot_info_release(&vm->boot);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	vm_config_free(&vm->cfg);
	pthread_mutex_destroy(&vm->stop_lock);
	pthread_cond_destroy(&vm->stop_cond);
	free(vm);
	mtrace_first(MTRACE_DESTROYED, "src.destroyed");
}
