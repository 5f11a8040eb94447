/*
 * lib.h - the little of libc the test guest needs: memory and string
 * helpers, a bounded printf, and the number parser of the command language.
 */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The compiler may emit calls to these four even with -fno-builtin. */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

size_t strlen(const char *s);
bool str_eq(const char *a, const char *b);
bool str_starts(const char *s, const char *prefix);

/*
 * Bounded formatting into buf (always NUL-terminated when size > 0).
 * Supports %s %c %d %u %x %% with the l and ll modifiers, and a width with
 * optional 0 padding.  Returns the length written (truncated).
 */
size_t vfmt(char *buf, size_t size, const char *f, va_list ap);
size_t fmt(char *buf, size_t size, const char *f, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Parse a number of the command language: decimal or 0x hex, with an
 * optional K, M or G suffix (binary multiples).  Returns false on junk or
 * overflow.
 */
bool parse_u64(const char *s, uint64_t *out);

#define ALIGN_UP(x, a)   (((x) + (a) - 1) & ~((uint64_t)(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((uint64_t)(a) - 1))
#define ARRAY_SIZE(a)    (sizeof(a) / sizeof((a)[0]))

#endif
