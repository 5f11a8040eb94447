/*
 * config_rng.c - virtio-rng's settings: on or off, and a rate cap, from
 * the JSON "rng" value and back to it.  The flag `--rng` has no value (it
 * turns the device on at its default rate), and `shoal vhost-user rng
 * --rate N` sets the rate directly, so there is no flag reader here.
 *
 *   "rng": true | false | {"rate": BYTES_PER_S}
 *
 * The two fields live in struct vm_config (rng, rng_rate); rate 0 is the
 * device's default (devices/virtio_rng.c).  An object turns the device on;
 * its rate is a positive 32-bit count.  The writer gives back what the
 * reader takes: the object when the device is on with a rate, else the
 * boolean (a rate without the device is not kept).  The
 * reader changes the caller's fields only when it succeeds.
 */
#include "devices/config_dev.h"

#include "base/exitcode.h"

int rng_config_from_json(bool *on, uint32_t *rate, json_t *v, const char *where,
			 struct error *e)
{
	json_t *r = json_object_get(v, "rate");

	if (json_is_boolean(v)) {
		*on = json_is_true(v);
		return 0;
	}
	if (json_is_object(v) && json_object_size(v) == 1 && json_is_integer(r) &&
	    json_integer_value(r) > 0 && json_integer_value(r) <= UINT32_MAX) {
		*on = true;
		*rate = (uint32_t)json_integer_value(r);
		return 0;
	}
	return error_set(e, EXIT_USAGE, "%s: \"rng\" must be true, false or {\"rate\": BYTES_PER_S}",
			 where);
}

json_t *rng_config_to_json(bool on, uint32_t rate)
{
	if (on && rate)
		return json_pack("{s:I}", "rate", (json_int_t)rate);
	return json_boolean(on);
}
