/* state.c - see state.h.  Little-endian encoding on an x86 host. */
#include "base/state.h"

#include <stdlib.h>
#include <string.h>

void state_writer_init(struct state_writer *w)
{
	memset(w, 0, sizeof(*w));
}

void state_writer_free(struct state_writer *w)
{
	free(w->data);
	memset(w, 0, sizeof(*w));
}

void state_put_bytes(struct state_writer *w, const void *p, size_t n)
{
	if (w->error)
		return;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 256;
		uint8_t *d;

		while (cap < w->len + n)
			cap *= 2;
		d = realloc(w->data, cap);
		if (!d) {
			w->error = true;
			return;
		}
		w->data = d;
		w->cap = cap;
	}
	memcpy(w->data + w->len, p, n);
	w->len += n;
}

void state_put_u8(struct state_writer *w, uint8_t v) { state_put_bytes(w, &v, 1); }
void state_put_u16(struct state_writer *w, uint16_t v) { state_put_bytes(w, &v, 2); }
void state_put_u32(struct state_writer *w, uint32_t v) { state_put_bytes(w, &v, 4); }
void state_put_u64(struct state_writer *w, uint64_t v) { state_put_bytes(w, &v, 8); }

void state_reader_init(struct state_reader *r, const void *data, size_t len)
{
	r->data = data;
	r->len = len;
	r->pos = 0;
	r->error = false;
}

void state_get_bytes(struct state_reader *r, void *p, size_t n)
{
	if (r->error || n > r->len - r->pos) {
		r->error = true;
		memset(p, 0, n);
		return;
	}
	memcpy(p, r->data + r->pos, n);
	r->pos += n;
}

uint8_t state_get_u8(struct state_reader *r) { uint8_t v; state_get_bytes(r, &v, 1); return v; }
uint16_t state_get_u16(struct state_reader *r) { uint16_t v; state_get_bytes(r, &v, 2); return v; }
uint32_t state_get_u32(struct state_reader *r) { uint32_t v; state_get_bytes(r, &v, 4); return v; }
uint64_t state_get_u64(struct state_reader *r) { uint64_t v; state_get_bytes(r, &v, 8); return v; }

size_t state_section_begin(struct state_writer *w, const char *name, uint16_t version)
{
	size_t nlen = strnlen(name, 63), mark;

	state_put_u32(w, STATE_SECTION_MAGIC);
	state_put_u8(w, (uint8_t)nlen);
	state_put_bytes(w, name, nlen);
	state_put_u16(w, version);
	mark = w->len;
	state_put_u32(w, 0);  /* length, patched by state_section_end */
	return mark;
}

void state_section_end(struct state_writer *w, size_t mark)
{
	uint32_t len;

	if (w->error)
		return;
	len = (uint32_t)(w->len - mark - 4);
	memcpy(w->data + mark, &len, 4);
}

int state_section_read(struct state_reader *r, char name[64], uint16_t *version,
		       struct state_reader *payload)
{
	uint32_t magic = state_get_u32(r), len;
	uint8_t nlen;

	if (r->error || magic != STATE_SECTION_MAGIC)
		return -1;
	nlen = state_get_u8(r);
	if (nlen > 63)
		return -1;
	state_get_bytes(r, name, nlen);
	name[nlen] = '\0';
	*version = state_get_u16(r);
	len = state_get_u32(r);
	if (r->error || len > STATE_SECTION_MAX || len > r->len - r->pos)
		return -1;
	state_reader_init(payload, r->data + r->pos, len);
	r->pos += len;
	return 0;
}
