/* img.c - placeholder until the block layer lands (issue 3). */
#include "cli/commands.h"
#include "util/exitcode.h"
#include "util/log.h"

int cmd_img(int argc, char **argv)
{
	log_error("img: not built yet");
	return EXIT_USAGE;
}
