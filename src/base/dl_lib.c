/*
 * dl_lib.c - load a shared library on first use (see dl_lib.h for why).
 *
 * Invariants: a library is opened at most once per process (under its
 * lock), and either every listed symbol is resolved and `ok` is set, or
 * none is used and `why` names the file, the package and the reason.  The
 * handle is never closed once loaded: the shims' pointers stay valid for
 * the life of the process.
 */
#include "base/dl_lib.h"

#include <dlfcn.h>
#include <stdio.h>

static void load(struct dl_lib *l)
{
	void *h = dlopen(l->file, RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		snprintf(l->why, sizeof(l->why), "%s (install Debian's %s)", dlerror(), l->package);
		return;
	}
	for (size_t i = 0; i < l->n; i++) {
		l->ptrs[i] = dlsym(h, l->names[i]);
		if (!l->ptrs[i]) {
			snprintf(l->why, sizeof(l->why), "%s: no symbol %s (%s too old?)", l->file,
				 l->names[i], l->package);
			dlclose(h);
			return;
		}
	}
	__atomic_store_n(&l->ok, true, __ATOMIC_RELEASE);
}

bool dl_lib_ready(struct dl_lib *l)
{
	bool ok;

	if (__atomic_load_n(&l->ok, __ATOMIC_ACQUIRE))   /* the usual case, no lock */
		return true;
	pthread_mutex_lock(&l->lock);
	if (!l->tried) {
		l->tried = true;
		load(l);
	}
	ok = l->ok;
	pthread_mutex_unlock(&l->lock);
	return ok;
}
