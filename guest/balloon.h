/*
 * balloon.h - the test guest's balloon driver and its pv-shared hint
 * (balloon.c): the `vballoon` and `pvshared` commands.
 */
#ifndef GUEST_BALLOON_H
#define GUEST_BALLOON_H

#include <stdbool.h>

bool vballoon_cmd(int argc, char **argv);	/* vballoon ADDR LEN [hint=0|1] [wait=S] [dev=N] */
bool pvshared_cmd(int argc, char **argv);	/* pvshared ADDR LEN */

#endif
