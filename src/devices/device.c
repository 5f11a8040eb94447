/* device.c - common device plumbing (see device.h). */
#include "devices/device.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

struct device *device_new(struct vm *vm, const struct device_ops *ops,
			  const char *name, void *priv)
{
	struct device *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->ops = ops;
	d->vm = vm;
	d->priv = priv;
	snprintf(d->name, sizeof(d->name), "%s", name);
	pthread_mutex_init(&d->lock, NULL);
	return d;
}

void device_free(struct device *d)
{
	if (!d)
		return;
	if (d->ops->destroy)
		d->ops->destroy(d);
	else
		free(d->priv);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

void device_mark_broken(struct device *d, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	if (d->broken)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	d->broken = true;
	log_error("%s: device broken: %s (the guest keeps running without it)", d->name, why);
}

void device_save(struct device *d, struct state_writer *w)
{
	size_t mark = state_section_begin(w, d->name, d->ops->state_version);

	state_put_u8(w, d->broken);
	if (d->ops->save)
		d->ops->save(d, w);
	state_section_end(w, mark);
}

int device_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	if (version > d->ops->state_version || version == 0)
		return -1;
	d->broken = state_get_u8(r) != 0;
	if (d->ops->restore && d->ops->restore(d, version, r))
		return -1;
	return r->error ? -1 : 0;
}
