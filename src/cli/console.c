/*
 * console.c - `shoal console NAME`: a VM's serial console through shoald.
 *
 *   shoal console web1              attach (Ctrl-A x detaches; the VM runs on)
 *   shoal console web1 --force      take the console over from another client
 *   shoal console web1 --show-log   print the console log (the last 1 MiB) and exit
 *
 * Attach is an HTTP Upgrade (GET /v1/vms/NAME/console/attach, "Upgrade:
 * shoal-console"); after the 101 the socket carries raw console bytes both
 * ways.  On a terminal, stdin is in raw mode with the same escape keys as
 * `shoal run` (Ctrl-A x detach, Ctrl-A Ctrl-A a literal Ctrl-A).  When
 * stdin is a pipe its bytes go to the guest as they are; at its end the
 * command waits for output to go quiet (--linger, default 1 s) and exits,
 * so scripts can type commands and read the answers.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/commands.h"
#include "base/exitcode.h"
#include "base/io.h"
#include "base/log.h"

#define ESCAPE_KEY 0x01     /* Ctrl-A */

static const char console_usage[] =
"usage: shoal console NAME [--show-log [--max BYTES]] [--force] [--socket PATH]\n"
"\n"
"Attach to a VM's serial console (Ctrl-A x detaches, the VM keeps running),\n"
"or print its log with --show-log.  One client is attached at a time;\n"
"--force takes the console over.\n";

static struct termios saved;
static bool raw_on;

/* Put the terminal back (atexit too). */
static void term_restore(void)
{
	if (raw_on)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	raw_on = false;
}

/* Raw mode on a terminal, so every key goes to the guest. */
static void term_raw(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved) < 0)
		return;
	t = saved;
	cfmakeraw(&t);
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) {
		raw_on = true;
		atexit(term_restore);
	}
}

/* Keys from a terminal: handle the escape; 1 means detach. */
static int keys_to_guest(int sock, const char *in, size_t n, bool *esc)
{
	char out[4096];
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = in[i];
		if (*esc) {
			*esc = false;
			if (ch == 'x' || ch == 'X')
				return write_all(sock, out, o) ? -1 : 1;
			if (ch == 'h' || ch == 'H') {
				const char help[] = "\r\n[shoal console: Ctrl-A x detach, Ctrl-A Ctrl-A sends Ctrl-A]\r\n";
				write_all(STDOUT_FILENO, help, sizeof(help) - 1);
				continue;
			}
			if (ch != ESCAPE_KEY)
				continue;
		} else if (ch == ESCAPE_KEY) {
			*esc = true;
			continue;
		}
		out[o++] = ch;
	}
	return write_all(sock, out, o);
}

/* Copy until detach, the daemon closes, or (pipe input) output goes quiet. */
static int console_loop(int sock, int linger_ms)
{
	struct pollfd pf[2] = { { .fd = sock, .events = POLLIN },
				{ .fd = STDIN_FILENO, .events = POLLIN } };
	bool tty = isatty(STDIN_FILENO), esc = false, in_open = true;
	char buf[8192];
	ssize_t n;
	int rc;

	for (;;) {
		rc = poll(pf, in_open ? 2 : 1, in_open ? -1 : linger_ms);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return 0;                   /* quiet after stdin ended */
		if (pf[0].revents) {
			n = recv(sock, buf, sizeof(buf), 0);
			if (n <= 0)
				return 0;           /* the VM stopped or we were taken over */
			if (write_all(STDOUT_FILENO, buf, (size_t)n))
				return EXIT_HOST;
		}
		if (in_open && pf[1].revents) {
			n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n <= 0) {
				in_open = false;
				continue;
			}
			rc = tty ? keys_to_guest(sock, buf, (size_t)n, &esc) :
				   write_all(sock, buf, (size_t)n);
			if (rc)
				return rc > 0 ? 0 : EXIT_HOST;
		}
	}
}

/* Upgrade to the console and copy until detached or disconnected. */
static int console_attach(const char *sock, const char *name, bool force, int linger_ms)
{
	struct client_resp r;
	struct error e;
	char path[256];
	int fd, rc;

	snprintf(path, sizeof(path), "/v1/vms/%s/console/attach%s", name,
		 force ? "?force=true" : "");
	fd = client_upgrade(sock, path, "shoal-console", &r, &e);
	if (fd < 0) {
		rc = r.status ? client_print_error(&r) : (log_error("%s", e.msg), e.status);
		client_resp_free(&r);
		return rc;
	}
	if (isatty(STDIN_FILENO))
		fprintf(stderr, "[shoal: attached to %s; Ctrl-A x detaches]\r\n", name);
	term_raw();
	rc = r.len ? write_all(STDOUT_FILENO, r.body, r.len) : 0;
	client_resp_free(&r);
	if (!rc)
		rc = console_loop(fd, linger_ms);
	term_restore();
	close(fd);
	if (isatty(STDIN_FILENO))
		fprintf(stderr, "\n[shoal: detached from %s]\n", name);
	return rc;
}

/* Print the console log once. */
static int console_show_log(const char *sock, const char *name, long max)
{
	struct client_resp r;
	struct error e;
	char path[256];
	int rc = 0;

	snprintf(path, sizeof(path), "/v1/vms/%s/console", name);
	if (max >= 0)
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "?max=%ld", max);
	if (client_request(sock, "GET", path, NULL, 0, &r, &e)) {
		log_error("%s", e.msg);
		return e.status;
	}
	if (r.status != 200)
		rc = client_print_error(&r);
	else if (write_all(STDOUT_FILENO, r.body, r.len))
		rc = EXIT_HOST;
	client_resp_free(&r);
	return rc;
}

/* `shoal console NAME [--show-log] [--force]`. */
int cmd_console(int argc, char **argv)
{
	enum { OPT_SOCKET = 256, OPT_SHOW, OPT_FORCE, OPT_MAX, OPT_LINGER };
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "show-log", no_argument, NULL, OPT_SHOW },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ "max", required_argument, NULL, OPT_MAX },
		{ "linger", required_argument, NULL, OPT_LINGER },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL;
	bool show = false, force = false;
	long max = -1, linger_ms = 1000;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET: sock = optarg; break;
		case OPT_SHOW: show = true; break;
		case OPT_FORCE: force = true; break;
		case OPT_MAX: max = strtol(optarg, NULL, 10); break;
		case OPT_LINGER: linger_ms = (long)(strtod(optarg, NULL) * 1000); break;
		case 'h': fputs(console_usage, stdout); return 0;
		default: fputs(console_usage, stderr); return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fputs(console_usage, stderr);
		return EXIT_USAGE;
	}
	sock = client_socket(sock);
	if (show)
		return console_show_log(sock, argv[optind], max);
	return console_attach(sock, argv[optind], force, (int)linger_ms);
}
