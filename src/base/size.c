/*
 * size.c - parsing sizes such as "256M", "2GiB", "0100M" (see size.h).
 *
 * Hand-written because no Debian library parses qemu-img style sizes; it
 * replaces the two parsers the CLI had (one read "0100M" as octal, and
 * they disagreed on "1GiB").  Never reads past the string's end.
 */
#include "base/size.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

int size_parse_unit(const char *s, unsigned bare_shift, uint64_t *out)
{
	unsigned long long v;
	const char *p;
	char *end;
	unsigned shift = bare_shift;

	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		if (!isxdigit((unsigned char)s[2]))
			return -1;
		v = strtoull(s, &end, 16);
	} else {
		v = strtoull(s, &end, 10);
	}
	if (errno)
		return -1;
	p = end;
	switch (toupper((unsigned char)*p)) {
	case '\0': break;
	case 'B': shift = 0; p++; break;
	case 'K': shift = 10; p++; break;
	case 'M': shift = 20; p++; break;
	case 'G': shift = 30; p++; break;
	case 'T': shift = 40; p++; break;
	case 'P': shift = 50; p++; break;
	default: return -1;
	}
	if (shift && (*p == 'i' || *p == 'I'))
		p++;
	if (shift && (*p == 'B' || *p == 'b'))
		p++;
	if (*p != '\0')
		return -1;
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

int size_parse(const char *s, uint64_t *out)
{
	return size_parse_unit(s, 0, out);
}
