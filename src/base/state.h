/*
 * state.h - versioned, bounds-checked device state buffers.
 *
 * Design rule (docs/vision.md): every device has save and restore in its ops
 * table from day one.  Snapshots, migration and fault tolerance are all
 * "save, send, restore" with different timing, so the encoding lives here
 * once.  A device's state is a section:
 *
 *   u32 magic 'SDEV' | u8 name_len | name | u16 version | u32 length | payload
 *
 * The payload is little-endian fields written with state_put_* and read back
 * with state_get_*.  A reader never trusts a length: every get checks the
 * remaining bytes and latches an error flag instead of reading past the end,
 * so a device's restore code can read all its fields and check `r->error`
 * once at the end.  New fields are appended and the version bumped; a
 * restore reads the fields its version has and defaults the rest.
 */
#ifndef SHOAL_BASE_STATE_H
#define SHOAL_BASE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_SECTION_MAGIC 0x56454453u  /* "SDEV" */
#define STATE_SECTION_MAX   (16u << 20)  /* no device state is larger */

struct state_writer {
	uint8_t *data;
	size_t len, cap;
	bool error;           /* allocation failed; the buffer is unusable */
};

struct state_reader {
	const uint8_t *data;
	size_t len, pos;
	bool error;           /* a get ran past the end or a check failed */
};

void state_writer_init(struct state_writer *w);
void state_writer_free(struct state_writer *w);
void state_put_u8(struct state_writer *w, uint8_t v);
void state_put_u16(struct state_writer *w, uint16_t v);
void state_put_u32(struct state_writer *w, uint32_t v);
void state_put_u64(struct state_writer *w, uint64_t v);
void state_put_bytes(struct state_writer *w, const void *p, size_t n);

void state_reader_init(struct state_reader *r, const void *data, size_t len);
uint8_t state_get_u8(struct state_reader *r);
uint16_t state_get_u16(struct state_reader *r);
uint32_t state_get_u32(struct state_reader *r);
uint64_t state_get_u64(struct state_reader *r);
void state_get_bytes(struct state_reader *r, void *p, size_t n);

/* Section framing.  state_section_begin returns the offset to pass to
 * state_section_end, which patches in the payload length. */
size_t state_section_begin(struct state_writer *w, const char *name, uint16_t version);
void state_section_end(struct state_writer *w, size_t mark);

/* Read a section header; on success `*payload` is a reader over exactly the
 * payload, and `r` is advanced past it.  Returns 0 or -1 (bad magic, name
 * too long, length past the end or over STATE_SECTION_MAX). */
int state_section_read(struct state_reader *r, char name[64], uint16_t *version,
		       struct state_reader *payload);

#endif
