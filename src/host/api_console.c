/*
 * api_console.c - the API's console: the log (GET /v1/vms/NAME/console) and
 * interactive attach (GET /v1/vms/NAME/console/attach).
 *
 * The log is the VMM's ring buffer (console-log on its control socket)
 * while the VM runs, and the tail of the console file in the VM's directory
 * after it stopped (or when the VMM does not answer).
 *
 * Console attach (GET /v1/vms/NAME/console/attach with "Upgrade:
 * shoal-console"): the daemon first asks the VMM for console-attach, so a
 * refusal ("attached elsewhere") is an ordinary 409; then it answers 101
 * and a thread copies bytes both ways between the client's socket and the
 * VMM's control connection until either side closes.  The proxy thread
 * owns both ends and frees them; nothing else may touch them after the
 * upgrade callback.  An attach is a stream: it has no request deadline.
 */
#include "host/api.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include "base/mhd_dl.h"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/io.h"
#include "host/spec.h"
#include "host/vmctl.h"

#define CONSOLE_LOG_MAX (1u << 20)
#define PROXY_STALL_MS 10000      /* a side that takes no byte for this long is dropped */

/* ---- console ---- */

/* The tail (at most max bytes) of a file, for exited VMs. */
static int console_file_tail(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t n;

	*out = NULL;
	*len = 0;
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) < 0 || !(*out = malloc(max + 1))) {
		close(fd);
		return -EIO;
	}
	off_t from = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
	n = pread(fd, *out, max, from);
	close(fd);
	*len = n > 0 ? (size_t)n : 0;
	return 0;
}

/* The live ring buffer through console-log. */
static int console_live_log(const char *sock, size_t max, char **out, size_t *len,
			    char *err, size_t errlen)
{
	struct vmctl c;
	json_t *req, *r = NULL;
	json_int_t n;
	int rc;

	*out = NULL;
	rc = vmctl_connect(&c, sock, 2000, err, errlen);
	if (rc)
		return rc;
	req = json_pack("{s:s, s:I}", "cmd", "console-log", "max", (json_int_t)max);
	rc = vmctl_request(&c, req, &r, 5000, err, errlen);
	json_decref(req);
	n = rc ? 0 : json_integer_value(json_object_get(r, "bytes"));
	json_decref(r);
	if (!rc && (n < 0 || (size_t)n > CONSOLE_LOG_MAX)) {
		snprintf(err, errlen, "console-log: reply of %lld bytes", (long long)n);
		rc = -EPROTO;
	}
	if (!rc && !(*out = malloc((size_t)n + 1)))
		rc = -ENOMEM;
	if (!rc)
		rc = vmctl_read_exact(&c, *out, (size_t)n, 5000);
	vmctl_close(&c);
	if (rc) {
		free(*out);
		*out = NULL;
		return rc;
	}
	*len = (size_t)n;
	return 0;
}

/* The file in the VM's directory its serial console goes to, from its spec
 * ("console.log" unless the spec names one); `path` empty for "none". */
static void console_file_path(struct api_call *c, char *spec, char *path, size_t size)
{
	struct host_spec s;
	const char *name = "console.log";
	bool parsed = spec && host_spec_parse(spec, strlen(spec), false, &s, NULL) == 0;

	if (parsed)
		name = host_console_name(&s.cfg);
	path[0] = '\0';
	if (name)
		host_vm_path(c->h, c->name, name, path, size);
	if (parsed)
		host_spec_free(&s);
	free(spec);
}

/* GET /v1/vms/NAME/console: the ring while the VM runs, the log file after. */
int api_vm_console(struct api_call *c)
{
	const char *q_max = api_query(c, "max");
	long long max = CONSOLE_LOG_MAX;
	char path[4200], err[256], *spec;
	struct api_err e;
	struct hvm *vm;
	bool live;
	char *buf;
	size_t len;
	int rc;

	if (q_max && (max = api_parse_uint(q_max, CONSOLE_LOG_MAX)) < 0) {
		api_err_set(&e, 400, "invalid_request", "max: must be a byte count up to %u",
			    CONSOLE_LOG_MAX);
		return api_reply_error(c, &e);
	}
	vm = host_get(c->h, c->name, &e);
	if (!vm)
		return api_reply_error(c, &e);
	pthread_mutex_lock(&c->h->lock);
	live = vm->state == HVM_RUNNING || vm->state == HVM_PAUSED;
	spec = vm->rec.spec ? strdup(vm->rec.spec) : NULL;
	hvm_put_locked(vm);
	pthread_mutex_unlock(&c->h->lock);
	rc = -1;
	if (live)
		rc = console_live_log(host_vm_path(c->h, c->name, "control.sock", path, sizeof(path)),
				      (size_t)max, &buf, &len, err, sizeof(err));
	console_file_path(c, spec, path, sizeof(path));
	if (rc && !path[0]) {       /* console "none": nothing was ever kept */
		buf = NULL;
		len = 0;
		rc = 0;
	} else if (rc) {            /* not running, or it just stopped: the file */
		rc = console_file_tail(path, (size_t)max, &buf, &len);
	}
	if (rc) {
		api_err_set(&e, 500, "internal", "vm \"%s\": console log: %s", c->name, strerror(-rc));
		return api_reply_error(c, &e);
	}
	return api_reply_raw(c, 200, "application/octet-stream", buf, len);
}

/* ---- console attach ---- */

struct console_proxy {
	struct vmctl vm;            /* the VMM's control connection, now the console */
	MHD_socket sock;            /* the client's upgraded socket */
	struct MHD_UpgradeResponseHandle *urh;
	char *extra;                /* client bytes libmicrohttpd read ahead */
	size_t extra_len;
};

/* Thread: copy both ways until one side closes. */
static void *console_proxy_thread(void *arg)
{
	struct console_proxy *p = arg;
	struct pollfd pf[2] = { { .fd = p->sock, .events = POLLIN },
				{ .fd = p->vm.fd, .events = POLLIN } };
	char buf[8192];
	ssize_t n;

	if ((p->vm.len && write_all_stall(p->sock, p->vm.buf, p->vm.len, PROXY_STALL_MS)) ||
	    (p->extra_len && write_all_stall(p->vm.fd, p->extra, p->extra_len, PROXY_STALL_MS)))
		goto out;
	for (;;) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[0].revents) {
			n = recv(p->sock, buf, sizeof(buf), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
			if (n > 0 && write_all_stall(p->vm.fd, buf, (size_t)n, PROXY_STALL_MS))
				break;
		}
		if (pf[1].revents) {
			n = recv(p->vm.fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
			if (n > 0 && write_all_stall(p->sock, buf, (size_t)n, PROXY_STALL_MS))
				break;
		}
	}
out:
	vmctl_close(&p->vm);
	MHD_upgrade_action(p->urh, MHD_UPGRADE_ACTION_CLOSE);
	free(p->extra);
	free(p);
	return NULL;
}

/* libmicrohttpd's upgrade callback: hand the socket to a proxy thread. */
static void console_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls,
			     const char *extra_in, size_t extra_in_size, MHD_socket sock,
			     struct MHD_UpgradeResponseHandle *urh)
{
	struct console_proxy *p = cls;
	pthread_t t;

	p->sock = sock;
	p->urh = urh;
	if (extra_in_size && (p->extra = malloc(extra_in_size))) {
		memcpy(p->extra, extra_in, extra_in_size);
		p->extra_len = extra_in_size;
	}
	if (pthread_create(&t, NULL, console_proxy_thread, p)) {
		vmctl_close(&p->vm);
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		free(p->extra);
		free(p);
		return;
	}
	pthread_detach(t);
}

/* Open the VMM side: console-attach on a fresh control connection. */
static struct console_proxy *console_open_vmm(struct api_call *c, bool force,
					      struct api_err *e)
{
	struct console_proxy *p = calloc(1, sizeof(*p));
	char sock[4200], err[256];
	json_t *req, *r = NULL;
	int rc;

	if (!p) {
		api_err_set(e, 500, "internal", "out of memory");
		return NULL;
	}
	host_vm_path(c->h, c->name, "control.sock", sock, sizeof(sock));
	rc = vmctl_connect(&p->vm, sock, 2000, err, sizeof(err));
	if (!rc) {
		req = json_pack("{s:s, s:b}", "cmd", "console-attach", "force", force);
		rc = vmctl_request(&p->vm, req, &r, 5000, err, sizeof(err));
		json_decref(req);
		json_decref(r);
	}
	if (rc) {
		vmctl_close(&p->vm);
		free(p);
		if (strstr(err, "attached elsewhere"))
			api_err_set(e, 409, "console_busy",
				    "vm \"%s\": the console is attached elsewhere (force=true takes it over)",
				    c->name);
		else
			api_err_set(e, 500, "vmm_error", "vm \"%s\": console: %s", c->name, err);
		return NULL;
	}
	return p;
}

/* GET /v1/vms/NAME/console/attach: VMM first (so a refusal is a 409), then 101. */
int api_vm_console_attach(struct api_call *c)
{
	const char *up = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Upgrade");
	struct console_proxy *p;
	struct MHD_Response *r;
	struct api_err e;
	struct hvm *vm;
	bool live;
	int ret = 0, force;

	if (!up || strcasecmp(up, "shoal-console")) {
		api_err_set(&e, 400, "invalid_request",
			    "console attach needs \"Connection: Upgrade\" and \"Upgrade: shoal-console\"");
		return api_reply_error(c, &e);
	}
	force = api_query(c, "force") ? api_parse_bool(api_query(c, "force")) : 0;
	if (force < 0) {
		api_err_set(&e, 400, "invalid_request", "force: not true or false");
		return api_reply_error(c, &e);
	}
	vm = host_get(c->h, c->name, &e);
	if (!vm)
		return api_reply_error(c, &e);
	pthread_mutex_lock(&c->h->lock);
	live = vm->state == HVM_RUNNING || vm->state == HVM_PAUSED;
	if (!live)
		api_err_set(&e, 409, "wrong_state", "vm \"%s\" is %s: no console to attach to",
			    c->name, hvm_state_name(vm->state));
	hvm_put_locked(vm);
	pthread_mutex_unlock(&c->h->lock);
	if (!live || !(p = console_open_vmm(c, force, &e)))
		return api_reply_error(c, &e);
	r = MHD_create_response_for_upgrade(console_upgraded, p);
	if (!r) {
		vmctl_close(&p->vm);
		free(p);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "shoal-console");
	api_peer_upgraded(c->peer);      /* a stream now: no request deadline */
	ret = MHD_queue_response(c->conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
	api_access_log(c, MHD_HTTP_SWITCHING_PROTOCOLS, 0);
	MHD_destroy_response(r);
	return ret;
}
