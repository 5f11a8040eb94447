/*
 * config_balloon.c - virtio-balloon's settings: on or off, and how often
 * the device asks the guest for fresh statistics, from the JSON "balloon"
 * value and back to it.  The flag `--balloon` has no value (it turns the
 * device on with the default period), so there is no flag reader here.
 *
 *   "balloon": true | false | {"stats_interval": SECONDS}
 *
 * The two fields live in struct vm_config (balloon, balloon_stats_s);
 * stats_s 0 is the device's default (5 s, devices/virtio_balloon.c).  An
 * object turns the device on; its interval is 1 to 3600 seconds.  The
 * writer gives back what the reader takes: the object when the device is
 * on with an interval, else the boolean.  The reader changes the caller's
 * fields only when it succeeds.
 */
#include "devices/config_dev.h"

#include "base/exitcode.h"

#define BALLOON_STATS_MAX_S 3600

int balloon_config_from_json(bool *on, uint32_t *stats_s, json_t *v, const char *where,
			     struct error *e)
{
	json_t *s = json_object_get(v, "stats_interval");

	if (json_is_boolean(v)) {
		*on = json_is_true(v);
		return 0;
	}
	if (json_is_object(v) && json_object_size(v) == 1 && json_is_integer(s) &&
	    json_integer_value(s) >= 1 && json_integer_value(s) <= BALLOON_STATS_MAX_S) {
		*on = true;
		*stats_s = (uint32_t)json_integer_value(s);
		return 0;
	}
	return error_set(e, EXIT_USAGE, "%s: \"balloon\" must be true, false or "
			 "{\"stats_interval\": SECONDS} (1 to %d)", where, BALLOON_STATS_MAX_S);
}

json_t *balloon_config_to_json(bool on, uint32_t stats_s)
{
	if (on && stats_s)
		return json_pack("{s:I}", "stats_interval", (json_int_t)stats_s);
	return json_boolean(on);
}
