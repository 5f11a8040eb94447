/*
 * lib.c - freestanding memory, string, formatting and number parsing.
 *
 * Nothing here touches hardware, so every function is safe in ring 0 and
 * ring 3 and on every CPU at once (no static state).
 */
#include "lib.h"

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (d <= s)
		return memcpy(dst, src, n);
	while (n--)
		d[n] = s[n];
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;

	while (n--)
		*d++ = (unsigned char)c;
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

bool str_eq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

bool str_starts(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return false;
	return true;
}

/* Output cursor of vfmt: writes what fits, counts nothing beyond. */
struct out {
	char *buf;
	size_t size, len;
};

static void out_c(struct out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len++] = c;
}

static void out_num(struct out *o, uint64_t v, unsigned base, int width, char pad)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (width-- > n)
		out_c(o, pad);
	while (n)
		out_c(o, tmp[--n]);
}

/* Fetch an integer argument of the given length modifier count. */
static uint64_t arg_u(va_list *ap, int longs, bool is_signed, bool *neg)
{
	int64_t s;

	*neg = false;
	if (!is_signed)
		return longs ? va_arg(*ap, unsigned long) : va_arg(*ap, unsigned int);
	s = longs ? va_arg(*ap, long) : va_arg(*ap, int);
	if (s < 0) {
		*neg = true;
		return (uint64_t)0 - (uint64_t)s;
	}
	return (uint64_t)s;
}

size_t vfmt(char *buf, size_t size, const char *f, va_list ap)
{
	struct out o = { buf, size, 0 };
	va_list aq;

	va_copy(aq, ap);
	for (; *f; f++) {
		int width = 0, longs = 0;
		char pad = ' ';
		bool neg;
		uint64_t v;
		const char *s;

		if (*f != '%') {
			out_c(&o, *f);
			continue;
		}
		f++;
		if (*f == '0')
			pad = '0', f++;
		while (*f >= '0' && *f <= '9')
			width = width * 10 + (*f++ - '0');
		while (*f == 'l')
			longs++, f++;
		switch (*f) {
		case 's':
			s = va_arg(aq, const char *);
			for (s = s ? s : "(null)"; *s; s++)
				out_c(&o, *s);
			break;
		case 'c':
			out_c(&o, (char)va_arg(aq, int));
			break;
		case 'd':
			v = arg_u(&aq, longs, true, &neg);
			if (neg)
				out_c(&o, '-');
			out_num(&o, v, 10, width, pad);
			break;
		case 'u':
		case 'x':
			v = arg_u(&aq, longs, false, &neg);
			out_num(&o, v, *f == 'x' ? 16 : 10, width, pad);
			break;
		case '%':
			out_c(&o, '%');
			break;
		default:
			out_c(&o, '?');
			if (!*f)
				f--;
			break;
		}
	}
	va_end(aq);
	if (size)
		buf[o.len] = 0;
	return o.len;
}

size_t fmt(char *buf, size_t size, const char *f, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, f);
	n = vfmt(buf, size, f, ap);
	va_end(ap);
	return n;
}

static int digit_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return 99;
}

bool parse_u64(const char *s, uint64_t *out)
{
	unsigned base = 10, shift = 0;
	uint64_t v = 0;
	int d, n = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		base = 16, s += 2;
	for (; (d = digit_val(*s)) < (int)base; s++, n++) {
		if (v > (UINT64_MAX - d) / base)
			return false;
		v = v * base + d;
	}
	if (*s == 'k' || *s == 'K')
		shift = 10, s++;
	else if (*s == 'm' || *s == 'M')
		shift = 20, s++;
	else if (*s == 'g' || *s == 'G')
		shift = 30, s++;
	if (!n || *s || (shift && v > (UINT64_MAX >> shift)))
		return false;
	*out = v << shift;
	return true;
}
