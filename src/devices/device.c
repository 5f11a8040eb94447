/*
 * device.c - common device plumbing (see device.h), the helpers devices
 * call their host through (device_host.h), and saving and restoring a set
 * of devices as state sections.
 *
 * Restore reads untrusted bytes: a section that is cut short, names no
 * device of this set, or carries a version the device does not know is
 * refused with EXIT_GUEST_BAD, never half-applied past that section.
 */
#include "devices/device.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "base/log.h"

struct device *device_new(const struct device_host *host, const struct device_ops *ops,
			  const char *name, void *priv)
{
	struct device *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->ops = ops;
	d->host = host;
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

int devices_save(struct device *const *devs, int n, struct state_writer *w)
{
	for (int i = 0; i < n; i++) {
		pthread_mutex_lock(&devs[i]->lock);
		device_save(devs[i], w);
		pthread_mutex_unlock(&devs[i]->lock);
	}
	return w->error ? -1 : 0;
}

static struct device *devices_find(struct device *const *devs, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(devs[i]->name, name))
			return devs[i];
	return NULL;
}

int devices_restore(struct device *const *devs, int n, const void *buf, size_t len,
		    struct error *e)
{
	struct state_reader r, payload;
	char name[64];
	uint16_t version;

	state_reader_init(&r, buf, len);
	while (r.pos < r.len) {
		struct device *d;
		int rc;

		if (state_section_read(&r, name, &version, &payload))
			return error_set(e, EXIT_GUEST_BAD, "device state: corrupt section at byte %zu", r.pos);
		d = devices_find(devs, n, name);
		if (!d)
			return error_set(e, EXIT_GUEST_BAD, "device state: no device named %s in this VM", name);
		pthread_mutex_lock(&d->lock);
		rc = device_restore(d, version, &payload);
		pthread_mutex_unlock(&d->lock);
		if (rc)
			return error_set(e, EXIT_GUEST_BAD, "device state: %s: cannot restore version %u",
					 name, version);
	}
	return 0;
}

/* ---- the host, through its callbacks (device_host.h) ---- */

int device_host_attach(const struct device_host *h, struct device *d)
{
	if (!h || !h->add_device) {
		device_free(d);
		return -1;
	}
	return h->add_device(h, d);
}

int device_host_map(const struct device_host *h, enum device_space space, uint64_t base,
		    uint64_t len, struct device *d)
{
	if (!h || !h->map)
		return -1;
	return h->map(h, space, base, len, d);
}

void device_host_irq_line(const struct device_host *h, unsigned gsi, int level)
{
	if (h && h->irq_line)
		h->irq_line(h, gsi, level);
}

void device_host_stop(const struct device_host *h, int status, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	if (!h || !h->stop)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	h->stop(h, status, why);
}

void device_host_report(const struct device_host *h, const char *line)
{
	if (h && h->report)
		h->report(h, line);
}

void device_host_console_write(const struct device_host *h, const void *buf, size_t len)
{
	if (h && h->console_write)
		h->console_write(h, buf, len);
}
