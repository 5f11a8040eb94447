/* netutil.c - see netutil.h. */
#include "netutil.h"

void net_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

uint16_t net_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

uint16_t net_inet_sum(const uint8_t *p, size_t n)
{
	uint32_t s = 0;
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		s += net_get16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

bool net_parse_ip(const char *s, uint8_t ip[4])
{
	unsigned i;

	for (i = 0; i < 4; i++) {
		uint32_t v = 0, n = 0;

		while (*s >= '0' && *s <= '9' && n < 3)
			v = v * 10 + (uint32_t)(*s++ - '0'), n++;
		if (!n || v > 255 || (i < 3 ? *s != '.' : *s != 0))
			return false;
		ip[i] = (uint8_t)v;
		s++;
	}
	return true;
}
