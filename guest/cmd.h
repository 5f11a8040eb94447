/*
 * cmd.h - the command language (see docs/test-guest.md).
 */
#ifndef GUEST_CMD_H
#define GUEST_CMD_H

#include <stdbool.h>

/* Set once any command has failed; decides the final exit code. */
extern bool cmd_failed;

/* Run the kernel command line: its ';'-separated commands, or the
 * interactive shell when it is empty.  Returns unless a command ended
 * the VM (exit, poweroff). */
void cmd_run_boot(char *cmdline);

#endif
