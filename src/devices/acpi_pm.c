/*
 * acpi_pm.c - ACPI PM1a event and control blocks: how a guest powers off.
 *
 * The FADT (src/boot/acpi.c) points PM1a_EVT_BLK at 0x600 (status, enable:
 * 16 bits each) and PM1a_CNT_BLK at 0x604.  The DSDT says \_S5 = {5, 5}, so
 * an ACPI guest powers off by writing SLP_TYP=5 with SLP_EN.  Other sleep
 * states are not offered.  SCI_EN reads as set: the FADT has no SMI command
 * port, so the machine is always in ACPI mode.
 */
#include "devices/device.h"

#include <stdlib.h>
#include <string.h>

#include "abi/testdev.h"
#include "base/exitcode.h"

#define ACPI_PM_STATE_VERSION 1
#define PM1_SCI_EN 0x0001
#define PM1_PWRBTN 0x0100   /* PWRBTN_STS / PWRBTN_EN */

struct acpi_pm {
	uint16_t sts, en, cnt;
	int sci_level;         /* level driven on the SCI line */
};

/* The SCI is level-triggered (MADT override): high while an enabled
 * status bit is set. */
static void acpi_pm_update_sci(struct device *d)
{
	struct acpi_pm *p = d->priv;
	int level = (p->sts & p->en) != 0;

	if (level != p->sci_level) {
		p->sci_level = level;
		if (d->host)
			device_host_irq_line(d->host, ACPI_SCI_IRQ, level);
	}
}

void acpi_pm_power_button(struct device *d)
{
	pthread_mutex_lock(&d->lock);
	((struct acpi_pm *)d->priv)->sts |= PM1_PWRBTN;
	acpi_pm_update_sci(d);
	pthread_mutex_unlock(&d->lock);
}

static uint16_t *acpi_pm_reg(struct acpi_pm *p, uint16_t off)
{
	switch (off) {
	case 0: return &p->sts;
	case 2: return &p->en;
	case 4: return &p->cnt;
	default: return NULL;
	}
}

static void acpi_pm_io_read(struct device *d, uint16_t port, void *data, int size)
{
	struct acpi_pm *p = d->priv;
	uint16_t off = port - ACPI_PM1A_EVT_PORT, *reg = acpi_pm_reg(p, off & ~1);
	uint32_t v = reg ? *reg : 0;

	if (off == 4)
		v |= PM1_SCI_EN;
	if (size == 4 && off == 0)
		v = p->sts | ((uint32_t)p->en << 16);
	else if (off & 1)
		v >>= 8;
	memcpy(data, &v, (size_t)size);
}

static void acpi_pm_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	struct acpi_pm *p = d->priv;
	uint16_t off = port - ACPI_PM1A_EVT_PORT, v = 0;
	uint32_t v32 = 0;

	memcpy(&v32, data, (size_t)size);
	v = (uint16_t)v32;
	if (off == 0) {
		p->sts &= ~v;              /* write 1 to clear */
		if (size == 4)
			p->en = (uint16_t)(v32 >> 16);
	} else if (off == 2) {
		p->en = v;
	} else if (off == 4) {
		p->cnt = v & ~ACPI_PM1_CNT_SLP_EN;
		if ((v & ACPI_PM1_CNT_SLP_EN) &&
		    ((v >> ACPI_PM1_CNT_SLP_TYP_SHIFT) & 7) == ACPI_S5_SLP_TYP && d->host)
			device_host_stop(d->host, EXIT_POWEROFF, "guest powered off");
	}
	acpi_pm_update_sci(d);
}

static void acpi_pm_save(struct device *d, struct state_writer *w)
{
	struct acpi_pm *p = d->priv;

	state_put_u16(w, p->sts); state_put_u16(w, p->en); state_put_u16(w, p->cnt);
}

static int acpi_pm_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	struct acpi_pm *p = d->priv;

	p->sts = state_get_u16(r); p->en = state_get_u16(r); p->cnt = state_get_u16(r);
	return 0;
}

const struct device_ops acpi_pm_ops = {
	.type = "acpi-pm",
	.state_version = ACPI_PM_STATE_VERSION,
	.io_read = acpi_pm_io_read,
	.io_write = acpi_pm_io_write,
	.save = acpi_pm_save,
	.restore = acpi_pm_restore,
};

int acpi_pm_create(const struct device_host *host, struct error *e)
{
	struct acpi_pm *p = calloc(1, sizeof(*p));
	struct device *d = p ? device_new(host, &acpi_pm_ops, "acpi-pm", p) : NULL;

	if (!d) {
		free(p);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (device_host_attach(host, d) || device_host_map(host, DEVICE_SPACE_IO, ACPI_PM1A_EVT_PORT, 6, d))
		return error_set(e, EXIT_HOST, "cannot claim ports 0x600-0x605");
	return 0;
}
