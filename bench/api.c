/*
 * bench/api.c - shoald's API latency and VM creation throughput.
 *
 * It starts its own shoald on a temporary state directory and drives it
 * over the Unix socket with the CLI's HTTP client (one connection per
 * request, "Connection: close", as the CLI does).
 *
 *   latency     GET /v1/vms (list) and GET /v1/vms/NAME (show) with 1, 100
 *               and 500 VMs defined: median and 99th percentile of R
 *               requests each, one after another;
 *   throughput  K test-guest VMs created and started with P requests in
 *               flight (POST /v1/vms?start=true, the guest at its shell
 *               prompt): wall time from the first request until every VM
 *               is "api-ready" (its start answered: the VMM serves its
 *               control socket) and until every guest is "guest-ready"
 *               (its console shows "shoal-guest: ready"); VMs per second
 *               and per second per host core;
 *   bare        side by side in the same run: the same K VMMs started
 *               directly (fork+exec `shoal run --api-socket`, P at a time),
 *               to api-ready and guest-ready, with no daemon: the ratio of
 *               the two is the daemon's cost.
 *
 *   build/bench/api [-r R] [-k K] [-p P] [--shoald PATH] [--shoal PATH] [--guest PATH]
 *
 * A benchmark, not a test: it prints figures and never judges them
 * (docs/benchmarks.md, "## Host daemon", has results and the method).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/client.h"
#include "host/vmctl.h"

static char g_dir[64], g_sock[128];
static const char *g_shoald = "build/shoald", *g_shoal = "build/shoal", *g_guest = "build/shoal-guest";
static pid_t g_daemon;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One request; the HTTP status, or -1. */
static int request(const char *method, const char *path, const char *body)
{
	struct client_resp r;
	struct error e;
	int status;

	if (client_request(g_sock, method, path, body, body ? strlen(body) : 0, &r, &e))
		return -1;
	status = r.status;
	client_resp_free(&r);
	return status;
}

/* Median and p99 of R timed requests, in microseconds. */
static void measure(const char *what, int n_vms, const char *path, int reps)
{
	double *t = calloc((size_t)reps, sizeof(*t));

	for (int i = 0; i < reps; i++) {
		double t0 = now_s();
		if (request("GET", path, NULL) != 200) {
			fprintf(stderr, "api: GET %s failed\n", path);
			exit(1);
		}
		t[i] = (now_s() - t0) * 1e6;
	}
	qsort(t, (size_t)reps, sizeof(*t), cmp_double);
	printf("| %-5s | %4d VMs | %6d | %8.0f | %8.0f |\n", what, n_vms, reps, t[reps / 2],
	       t[(reps * 99) / 100]);
	free(t);
}

/* Define VMs vm0001.. up to n (created, not started). */
static void define_vms(int have, int n)
{
	char body[512];

	for (int i = have + 1; i <= n; i++) {
		snprintf(body, sizeof(body),
			 "{\"name\": \"vm%04d\", \"kernel\": \"%s\", \"cmdline\": \"shell\", \"memory\": \"16M\"}",
			 i, g_guest);
		if (request("POST", "/v1/vms", body) != 201) {
			fprintf(stderr, "api: create vm%04d failed\n", i);
			exit(1);
		}
	}
}

static void start_daemon(void)
{
	char sdir[80], gdir[PATH_MAX];

	snprintf(g_dir, sizeof(g_dir), "/tmp/shoal-bench-api.XXXXXX");
	if (!mkdtemp(g_dir))
		exit(1);
	snprintf(sdir, sizeof(sdir), "%s/state", g_dir);
	snprintf(g_sock, sizeof(g_sock), "%s/shoald.sock", sdir);
	g_daemon = fork();
	if (g_daemon == 0) {
		int fd = open("/dev/null", O_WRONLY);
		dup2(fd, 2);
		/* shoald refuses kernels outside its --allow-dir directories */
		snprintf(gdir, sizeof(gdir), "%s", g_guest);
		execl(g_shoald, "shoald", "--state-dir", sdir, "--vmm", g_shoal,
		      "--allow-dir", dirname(gdir), (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 400 && request("GET", "/v1/version", NULL) != 200; i++)
		usleep(10000);
}

/* ---- throughput ---- */

struct job {
	int next, k;                /* next VM index to start, count */
	bool bare;
	pthread_mutex_t lock;
	double *api_ready;          /* per VM: seconds from t0 */
	double t0;
	pid_t *pids;                /* bare: the VMMs */
};

/* Has the guest reported ready on its console?  Through the daemon's API
 * or, bare, the VMM's control socket. */
static bool guest_ready(struct job *j, int i)
{
	char path[256], err[128];
	bool ready = false;

	if (!j->bare) {
		struct client_resp r;
		struct error e;
		snprintf(path, sizeof(path), "/v1/vms/b%04d/console?max=65536", i);
		if (client_request(g_sock, "GET", path, NULL, 0, &r, &e) == 0) {
			ready = r.status == 200 && strstr(r.body, "shoal-guest: ready");
			client_resp_free(&r);
		}
		return ready;
	}
	struct vmctl c;
	json_t *req, *rep = NULL;
	char buf[65536 + 1];
	snprintf(path, sizeof(path), "%s/bare%04d.sock", g_dir, i);
	if (vmctl_connect(&c, path, 1000, err, sizeof(err)))
		return false;
	req = json_pack("{s:s, s:i}", "cmd", "console-log", "max", 65536);
	if (vmctl_request(&c, req, &rep, 2000, err, sizeof(err)) == 0) {
		json_int_t n = json_integer_value(json_object_get(rep, "bytes"));
		if (n >= 0 && n <= 65536 && vmctl_read_exact(&c, buf, (size_t)n, 2000) == 0) {
			buf[n] = '\0';
			ready = strstr(buf, "shoal-guest: ready") != NULL;
		}
	}
	json_decref(req);
	json_decref(rep);
	vmctl_close(&c);
	return ready;
}

/* Start one bare VMM and wait until its control socket answers. */
static int bare_start(struct job *j, int i)
{
	char sock[128], err[128];
	json_t *r;
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/bare%04d.sock", g_dir, i);
	pid = fork();
	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(g_shoal, "shoal", "run", "--kernel", g_guest, "--cmdline", "shell", "--memory", "16M",
		      "--console", "none", "--api-socket", sock, (char *)NULL);
		_exit(127);
	}
	j->pids[i] = pid;
	for (int w = 0; w < 30000; w++) {
		if (access(sock, F_OK) == 0 && vmctl_call(sock, "status", &r, 2000, err, sizeof(err)) == 0) {
			json_decref(r);
			return 0;
		}
		usleep(500);
	}
	return -1;
}

static void *job_thread(void *arg)
{
	struct job *j = arg;
	char body[512];
	int i;

	for (;;) {
		pthread_mutex_lock(&j->lock);
		i = j->next++;
		pthread_mutex_unlock(&j->lock);
		if (i >= j->k)
			return NULL;
		if (j->bare) {
			if (bare_start(j, i))
				fprintf(stderr, "api: bare VMM %d did not answer\n", i);
		} else {
			snprintf(body, sizeof(body),
				 "{\"name\": \"b%04d\", \"kernel\": \"%s\", \"cmdline\": \"shell\", \"memory\": \"16M\"}",
				 i, g_guest);
			if (request("POST", "/v1/vms?start=true", body) != 201)
				fprintf(stderr, "api: create+start b%04d failed\n", i);
		}
		j->api_ready[i] = now_s() - j->t0;
	}
}

/* Start K VMs P at a time; print api-ready and guest-ready rates. */
static void throughput(bool bare, int k, int p, double *api_s, double *guest_s)
{
	struct job j = { .k = k, .bare = bare };
	pthread_t *t = calloc((size_t)p, sizeof(*t));
	char path[128];
	int done = 0;

	pthread_mutex_init(&j.lock, NULL);
	j.api_ready = calloc((size_t)k, sizeof(double));
	j.pids = calloc((size_t)k, sizeof(pid_t));
	j.t0 = now_s();
	for (int i = 0; i < p; i++)
		pthread_create(&t[i], NULL, job_thread, &j);
	for (int i = 0; i < p; i++)
		pthread_join(t[i], NULL);
	*api_s = now_s() - j.t0;
	bool *ok = calloc((size_t)k, sizeof(bool));
	while (done < k && now_s() - j.t0 < 120) {
		for (int i = 0; i < k; i++)
			if (!ok[i] && guest_ready(&j, i)) {
				ok[i] = true;
				done++;
			}
	}
	*guest_s = now_s() - j.t0;
	for (int i = 0; i < k; i++) {
		if (bare) {
			kill(j.pids[i], SIGKILL);
			waitpid(j.pids[i], NULL, 0);
		} else {
			snprintf(path, sizeof(path), "/v1/vms/b%04d?force=true", i);
			request("DELETE", path, NULL);
		}
	}
	free(ok);
	free(j.api_ready);
	free(j.pids);
	free(t);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "shoald", required_argument, NULL, 'd' }, { "shoal", required_argument, NULL, 's' },
		{ "guest", required_argument, NULL, 'g' }, { 0 },
	};
	int reps = 1000, k = 40, p = 4, c, ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	double d_api, d_guest, b_api, b_guest;
	char cmd[128];
	static char guest_abs[PATH_MAX];

	while ((c = getopt_long(argc, argv, "r:k:p:", opts, NULL)) != -1) {
		switch (c) {
		case 'r': reps = atoi(optarg); break;
		case 'k': k = atoi(optarg); break;
		case 'p': p = atoi(optarg); break;
		case 'd': g_shoald = optarg; break;
		case 's': g_shoal = optarg; break;
		case 'g': g_guest = optarg; break;
		default: return 64;
		}
	}
	if (realpath(g_guest, guest_abs))     /* the daemon wants an absolute path */
		g_guest = guest_abs;
	start_daemon();
	printf("## API latency (one connection per request), microseconds\n\n"
	       "| req   | defined  |  count |   median |      p99 |\n|---|---|---|---|---|\n");
	int have = 0;
	const int sizes[] = { 1, 100, 500 };
	for (size_t s = 0; s < 3; s++) {
		define_vms(have, sizes[s]);
		have = sizes[s];
		measure("list", have, "/v1/vms", sizes[s] >= 500 ? reps / 2 : reps);
		measure("show", have, "/v1/vms/vm0001", reps);
	}
	for (int i = 1; i <= have; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/v1/vms/vm%04d", i);
		request("DELETE", path, NULL);
	}
	/* interleaved: bare, daemon, bare, daemon */
	double br[2][2], dr[2][2];
	for (int round = 0; round < 2; round++) {
		throughput(true, k, p, &br[round][0], &br[round][1]);
		throughput(false, k, p, &dr[round][0], &dr[round][1]);
	}
	b_api = (br[0][0] + br[1][0]) / 2; b_guest = (br[0][1] + br[1][1]) / 2;
	d_api = (dr[0][0] + dr[1][0]) / 2; d_guest = (dr[0][1] + dr[1][1]) / 2;
	printf("\n## Creation throughput: %d test-guest VMs, %d in flight, %d host cores (mean of 2 rounds)\n\n"
	       "| path | to api-ready s | VMs/s | VMs/s/core | to guest-ready s | VMs/s | VMs/s/core |\n"
	       "|---|---|---|---|---|---|---|\n", k, p, ncpu);
	printf("| shoald (create+start) | %.2f | %.1f | %.2f | %.2f | %.1f | %.2f |\n", d_api, k / d_api,
	       k / d_api / ncpu, d_guest, k / d_guest, k / d_guest / ncpu);
	printf("| bare `shoal run` | %.2f | %.1f | %.2f | %.2f | %.1f | %.2f |\n", b_api, k / b_api,
	       k / b_api / ncpu, b_guest, k / b_guest, k / b_guest / ncpu);
	printf("\nratio shoald/bare, time to guest-ready: %.2f\n", d_guest / b_guest);
	kill(g_daemon, SIGTERM);
	waitpid(g_daemon, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
	return system(cmd) ? 1 : 0;
}
