/*
 * rtc.c - the MC146818 CMOS real-time clock and its 128 bytes of NVRAM.
 *
 * The clock reads the host's UTC time plus an offset; a guest that sets the
 * clock changes the offset, not the host.  Time registers follow status
 * register B: BCD or binary (bit 2), 12- or 24-hour (bit 1).  UIP (update in
 * progress) always reads 0: reads are of a consistent host time, so a guest
 * never needs to wait for an update to finish.  Periodic and alarm
 * interrupts are not emulated (Linux uses the PIT, LAPIC timer or kvmclock).
 */
#include "devices/device.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/exitcode.h"

#define RTC_INDEX 0x70
#define RTC_DATA  0x71
#define RTC_STATE_VERSION 1

enum { RTC_SEC = 0x00, RTC_MIN = 0x02, RTC_HOUR = 0x04, RTC_WDAY = 0x06,
       RTC_MDAY = 0x07, RTC_MON = 0x08, RTC_YEAR = 0x09, RTC_REG_A = 0x0a,
       RTC_REG_B = 0x0b, RTC_REG_C = 0x0c, RTC_REG_D = 0x0d, RTC_CENTURY = 0x32 };

#define REGB_24H    0x02
#define REGB_BINARY 0x04

struct rtc {
	uint8_t index;
	uint8_t nvram[128];
	int64_t offset;           /* guest time minus host time, seconds */
	time_t (*now)(void);      /* host clock; replaced in tests */
};

static time_t rtc_host_now(void)
{
	return time(NULL);
}

static uint8_t rtc_encode(const struct rtc *r, int v)
{
	if (r->nvram[RTC_REG_B] & REGB_BINARY)
		return (uint8_t)v;
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static int rtc_decode(const struct rtc *r, uint8_t v)
{
	if (r->nvram[RTC_REG_B] & REGB_BINARY)
		return v;
	return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t rtc_hour(const struct rtc *r, int hour)
{
	int pm;

	if (r->nvram[RTC_REG_B] & REGB_24H)
		return rtc_encode(r, hour);
	pm = hour >= 12;
	hour %= 12;
	return (uint8_t)(rtc_encode(r, hour ? hour : 12) | (pm ? 0x80 : 0));
}

static uint8_t rtc_read_time(const struct rtc *r, int reg)
{
	time_t t = r->now() + r->offset;
	struct tm tm;

	gmtime_r(&t, &tm);
	switch (reg) {
	case RTC_SEC: return rtc_encode(r, tm.tm_sec);
	case RTC_MIN: return rtc_encode(r, tm.tm_min);
	case RTC_HOUR: return rtc_hour(r, tm.tm_hour);
	case RTC_WDAY: return rtc_encode(r, tm.tm_wday + 1);
	case RTC_MDAY: return rtc_encode(r, tm.tm_mday);
	case RTC_MON: return rtc_encode(r, tm.tm_mon + 1);
	case RTC_YEAR: return rtc_encode(r, tm.tm_year % 100);
	default: return rtc_encode(r, (tm.tm_year + 1900) / 100);  /* century */
	}
}

/* A guest write to a time register moves the offset so that field reads
 * back as written. */
static void rtc_write_time(struct rtc *r, int reg, uint8_t v)
{
	time_t t = r->now() + r->offset, nt;
	struct tm tm;
	int val = rtc_decode(r, v & 0x7f);

	gmtime_r(&t, &tm);
	switch (reg) {
	case RTC_SEC: tm.tm_sec = val; break;
	case RTC_MIN: tm.tm_min = val; break;
	case RTC_HOUR:
		if (!(r->nvram[RTC_REG_B] & REGB_24H))
			val = val % 12 + ((v & 0x80) ? 12 : 0);
		tm.tm_hour = val;
		break;
	case RTC_MDAY: tm.tm_mday = val; break;
	case RTC_MON: tm.tm_mon = val - 1; break;
	case RTC_YEAR: tm.tm_year = (tm.tm_year + 1900) / 100 * 100 + val - 1900; break;
	case RTC_CENTURY: tm.tm_year = val * 100 + tm.tm_year % 100 - 1900; break;
	default: return;
	}
	nt = timegm(&tm);
	if (nt != (time_t)-1)
		r->offset += (int64_t)(nt - t);
}

static bool rtc_is_time_reg(int reg)
{
	return reg <= RTC_YEAR ? !(reg & 1) || reg == RTC_WDAY || reg == RTC_MDAY ||
				 reg == RTC_YEAR
			       : reg == RTC_CENTURY;
}

static void rtc_io_read(struct device *d, uint16_t port, void *data, int size)
{
	struct rtc *r = d->priv;
	uint8_t reg = r->index & 0x7f, v;

	memset(data, 0, (size_t)size);
	if (port == RTC_INDEX) {
		*(uint8_t *)data = r->index;
		return;
	}
	if (rtc_is_time_reg(reg))
		v = rtc_read_time(r, reg);
	else if (reg == RTC_REG_C)
		v = 0;
	else
		v = r->nvram[reg];
	*(uint8_t *)data = v;
}

static void rtc_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	struct rtc *r = d->priv;
	uint8_t v = *(const uint8_t *)data, reg = r->index & 0x7f;

	if (port == RTC_INDEX) {
		r->index = v;
		return;
	}
	if (rtc_is_time_reg(reg))
		rtc_write_time(r, reg, v);
	else if (reg == RTC_REG_A)
		r->nvram[reg] = v & 0x7f;   /* UIP is read-only */
	else if (reg != RTC_REG_C && reg != RTC_REG_D)
		r->nvram[reg] = v;
}

static void rtc_save(struct device *d, struct state_writer *w)
{
	struct rtc *r = d->priv;

	state_put_u8(w, r->index);
	state_put_bytes(w, r->nvram, sizeof(r->nvram));
	state_put_u64(w, (uint64_t)r->offset);
}

static int rtc_restore(struct device *d, uint16_t version, struct state_reader *rd)
{
	struct rtc *r = d->priv;

	r->index = state_get_u8(rd);
	state_get_bytes(rd, r->nvram, sizeof(r->nvram));
	r->offset = (int64_t)state_get_u64(rd);
	return 0;
}

void rtc_set_clock(struct device *d, time_t (*now)(void))
{
	((struct rtc *)d->priv)->now = now;
}

const struct device_ops rtc_ops = {
	.type = "rtc",
	.state_version = RTC_STATE_VERSION,
	.io_read = rtc_io_read,
	.io_write = rtc_io_write,
	.save = rtc_save,
	.restore = rtc_restore,
};

/* Fill the NVRAM with what a PC BIOS leaves there: status registers and
 * the memory-size fields that firmware and old guests read. */
static void rtc_init_nvram(struct rtc *r, uint64_t mem)
{
	uint64_t ext = mem > (1ULL << 20) ? (mem - (1ULL << 20)) >> 10 : 0;   /* KiB above 1M */
	uint64_t above16 = mem > (16ULL << 20) ? (mem - (16ULL << 20)) >> 16 : 0; /* 64K units */

	r->nvram[RTC_REG_A] = 0x26;     /* 32.768 kHz divider, 1024 Hz rate */
	r->nvram[RTC_REG_B] = REGB_24H;
	r->nvram[RTC_REG_D] = 0x80;     /* RTC battery good */
	if (ext > 0xffff)
		ext = 0xffff;
	if (above16 > 0xffff)
		above16 = 0xffff;
	r->nvram[0x15] = 0x80; r->nvram[0x16] = 0x02;   /* 640 KiB base */
	r->nvram[0x17] = r->nvram[0x30] = (uint8_t)ext;
	r->nvram[0x18] = r->nvram[0x31] = (uint8_t)(ext >> 8);
	r->nvram[0x34] = (uint8_t)above16;
	r->nvram[0x35] = (uint8_t)(above16 >> 8);
}

int rtc_create(const struct device_host *host, struct error *e)
{
	struct rtc *r = calloc(1, sizeof(*r));
	struct device *d = r ? device_new(host, &rtc_ops, "rtc", r) : NULL;

	if (!d) {
		free(r);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	r->now = rtc_host_now;
	rtc_init_nvram(r, host->ram_size);
	if (device_host_attach(host, d) || device_host_map(host, DEVICE_SPACE_IO, RTC_INDEX, 2, d))
		return error_set(e, EXIT_HOST, "cannot claim ports 0x70-0x71");
	return 0;
}
