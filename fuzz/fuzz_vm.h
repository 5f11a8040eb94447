/*
 * fuzz_vm.h - what several fuzz targets share (header only: every .c in
 * fuzz/ is a target of its own).
 *
 * fuzz_fake_vm: a struct vm with `ncpus` vCPUs and no KVM (every fd -1),
 * its devices those built on a fake device host (tests/fake_host.h), for
 * code that reads state into a VM but stops before KVM is asked: the
 * snapshot and migration targets, and the control socket's two.  fuzz_count_fds: the process's open
 * descriptors, to catch a leak per input.
 */
#ifndef SHOAL_FUZZ_VM_H
#define SHOAL_FUZZ_VM_H

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>

#include "vmm/config.h"
#include "vmm/vm.h"
#include "../tests/fake_host.h"

static inline struct vm *fuzz_fake_vm(struct fake_host *h, int ncpus)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		abort();
	vm_config_init(&vm->cfg);
	vm->kvm_fd = vm->vm_fd = vm->mem.fd = -1;
	vm->ncpus = ncpus;
	vm->vcpus = calloc((size_t)ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		abort();
	for (int i = 0; i < ncpus; i++)
		vm->vcpus[i] = (struct vcpu){ .vm = vm, .index = i, .fd = -1 };
	pthread_mutex_init(&vm->stop_lock, NULL);
	pthread_cond_init(&vm->stop_cond, NULL);
	for (int i = 0; i < h->ndevices && i < VM_MAX_DEVICES; i++)
		vm->devices[vm->ndevices++] = h->devices[i];
	return vm;
}

static inline void fuzz_fake_vm_free(struct vm *vm)
{
	free(vm->vcpus);
	vm_config_free(&vm->cfg);
	pthread_mutex_destroy(&vm->stop_lock);
	pthread_cond_destroy(&vm->stop_cond);
	free(vm);
}

static inline int fuzz_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n;
}

#endif
