/*
 * test_config.c - sizes, console specs, validation, the JSON config file
 * and `shoal run` flag parsing (flags override --config) and early exits;
 * each device's own readers and writer (devices/config_dev.h): flags ->
 * struct -> JSON -> struct is the identity, and JSON carries a comma.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/size.h"
#include "cli/commands.h"
#include "cli/run.h"
#include "base/exitcode.h"
#include "devices/config_dev.h"
#include "vmm/config.h"

static void test_parse_size(void **state)
{
	uint64_t v;

	assert_int_equal(size_parse("256M", &v), 0); assert_int_equal(v, 256ULL << 20);
	assert_int_equal(size_parse("2G", &v), 0); assert_int_equal(v, 2ULL << 30);
	assert_int_equal(size_parse("2GiB", &v), 0); assert_int_equal(v, 2ULL << 30);
	assert_int_equal(size_parse("512k", &v), 0); assert_int_equal(v, 512ULL << 10);
	assert_int_equal(size_parse("1048576", &v), 0); assert_int_equal(v, 1048576);
	assert_int_equal(size_parse("0x1000", &v), 0); assert_int_equal(v, 4096);
	assert_int_equal(size_parse("", &v), -1);
	assert_int_equal(size_parse("-1G", &v), -1);
	assert_int_equal(size_parse("12Q", &v), -1);
	assert_int_equal(size_parse("1G1", &v), -1);
	assert_int_equal(size_parse("99999999999999T", &v), -1);  /* overflow */
	/* one parser everywhere: leading zeros are decimal, every spelling of a unit */
	assert_int_equal(size_parse("0100M", &v), 0); assert_int_equal(v, 100ULL << 20);
	assert_int_equal(size_parse("1GiB", &v), 0); assert_int_equal(v, 1ULL << 30);
	assert_int_equal(size_parse("1gib", &v), 0); assert_int_equal(v, 1ULL << 30);
	assert_int_equal(size_parse("512MB", &v), 0); assert_int_equal(v, 512ULL << 20);
	assert_int_equal(size_parse("2P", &v), 0); assert_int_equal(v, 2ULL << 50);
	assert_int_equal(size_parse("4096B", &v), 0); assert_int_equal(v, 4096);
	assert_int_equal(size_parse("0x", &v), -1);
	assert_int_equal(size_parse("1iB", &v), -1);
	assert_int_equal(size_parse("1 G", &v), -1);
	assert_int_equal(size_parse(" 1G", &v), -1);
	assert_int_equal(size_parse("20000P", &v), -1);  /* overflow */
	/* a bare number in a given unit (--memory counts MiB, as QEMU's -m) */
	assert_int_equal(size_parse_unit("512", 20, &v), 0); assert_int_equal(v, 512ULL << 20);
	assert_int_equal(size_parse_unit("512K", 20, &v), 0); assert_int_equal(v, 512ULL << 10);
	assert_int_equal(size_parse_unit("4096B", 20, &v), 0); assert_int_equal(v, 4096);
	assert_int_equal(size_parse_unit("99999999999999", 20, &v), -1);
}

static void test_console_spec(void **state)
{
	struct vm_config c;
	struct error e;

	vm_config_init(&c);
	assert_int_equal(vm_config_set_console(&c, "none", &e), 0);
	assert_int_equal(c.console, CONSOLE_NONE);
	assert_int_equal(vm_config_set_console(&c, "file:/tmp/x.log", &e), 0);
	assert_int_equal(c.console, CONSOLE_FILE);
	assert_string_equal(c.console_path, "/tmp/x.log");
	assert_int_equal(vm_config_set_console(&c, "file:", &e), -1);
	assert_int_equal(vm_config_set_console(&c, "tty", &e), -1);
	assert_non_null(strstr(e.msg, "tty"));
	vm_config_free(&c);
}

static void test_validate(void **state)
{
	struct vm_config c;
	struct error e;

	vm_config_init(&c);
	assert_int_equal(vm_config_validate(&c, &e), -1);           /* no kernel */
	assert_non_null(strstr(e.msg, "kernel"));
	c.kernel = strdup("k");
	assert_int_equal(vm_config_validate(&c, &e), 0);
	c.cpus = 0;
	assert_int_equal(vm_config_validate(&c, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	c.cpus = 65;
	assert_int_equal(vm_config_validate(&c, &e), -1);
	assert_non_null(strstr(e.msg, "65"));
	c.cpus = 64;
	c.memory = 1 << 20;
	assert_int_equal(vm_config_validate(&c, &e), -1);
	assert_non_null(strstr(e.msg, "too small"));
	c.memory = (256ULL << 20) + 1;
	assert_int_equal(vm_config_validate(&c, &e), -1);
	c.memory = 1ULL << 41;
	assert_int_equal(vm_config_validate(&c, &e), -1);
	vm_config_free(&c);
}

static void test_json(void **state)
{
	struct vm_config c;
	struct error e;
	char *s;

	vm_config_init(&c);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json",
		"{\"kernel\":\"k.elf\",\"cpus\":4,\"memory\":\"1G\",\"console\":\"none\","
		"\"cmdline\":\"info\",\"cpu_template\":\"baseline\",\"timeout\":9}", &e), 0);
	assert_string_equal(c.kernel, "k.elf");
	assert_int_equal(c.cpus, 4);
	assert_int_equal(c.memory, 1ULL << 30);
	assert_int_equal(c.console, CONSOLE_NONE);
	assert_string_equal(c.cpu_template, "baseline");
	assert_int_equal(c.timeout_s, 9);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"memory\": 33554432}", &e), 0);
	assert_int_equal(c.memory, 32ULL << 20);
	/* round trip through the writer */
	s = vm_config_to_json_text(&c);
	{
		struct vm_config d;

		vm_config_init(&d);
		assert_int_equal(vm_config_from_json_text(&d, "rt", s, &e), 0);
		assert_string_equal(d.kernel, c.kernel);
		assert_int_equal(d.memory, c.memory);
		assert_int_equal(d.cpus, c.cpus);
		assert_int_equal(d.console, c.console);
		vm_config_free(&d);
	}
	free(s);
	/* strictness: unknown keys, wrong types, broken JSON, duplicates */
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"kernal\":\"x\"}", &e), -1);
	assert_string_equal(e.msg, "vm.json: unknown key \"kernal\"");
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"cpus\":\"2\"}", &e), -1);
	assert_non_null(strstr(e.msg, "\"cpus\""));
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"memory\":\"lots\"}", &e), -1);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"cpus\":1,", &e), -1);
	assert_non_null(strstr(e.msg, "vm.json: line 1"));
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "[1]", &e), -1);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"cpus\":1,\"cpus\":2}", &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	vm_config_free(&c);
}

static int parse(struct vm_config *c, struct run_opts *o, struct error *e, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;

	va_start(ap, e);
	argv[argc++] = "run";
	for (char *a; (a = va_arg(ap, char *)); )
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	return run_parse_args(argc, argv, c, o, e);
}

static void test_run_flags(void **state)
{
	struct vm_config c;
	struct run_opts o;
	struct error e;

	vm_config_init(&c);
	assert_int_equal(parse(&c, &o, &e, "--kernel", "g.elf", "-c", "3", "--memory", "512M",
			       "--cmdline", "info; exit 3", "--console", "file:/tmp/c.log",
			       "--cpu-template", "minimal", "-v", "-v", "--timeout", "5", NULL), 0);
	assert_string_equal(c.kernel, "g.elf");
	assert_int_equal(c.cpus, 3);
	assert_int_equal(c.memory, 512ULL << 20);
	assert_string_equal(c.cmdline, "info; exit 3");
	assert_int_equal(c.console, CONSOLE_FILE);
	assert_string_equal(c.cpu_template, "minimal");
	assert_int_equal(o.verbose, 2);
	assert_int_equal(c.timeout_s, 5);
	vm_config_free(&c);

	vm_config_init(&c);     /* a bare --memory is MiB, and never octal */
	assert_int_equal(parse(&c, &o, &e, "--kernel", "g.elf", "-m", "512", NULL), 0);
	assert_int_equal(c.memory, 512ULL << 20);
	assert_int_equal(parse(&c, &o, &e, "--memory", "0100M", NULL), 0);
	assert_int_equal(c.memory, 100ULL << 20);
	assert_int_equal(parse(&c, &o, &e, "--memory", "1GiB", NULL), 0);
	assert_int_equal(c.memory, 1ULL << 30);
	vm_config_free(&c);

	vm_config_init(&c);
	assert_int_equal(parse(&c, &o, &e, "--bogus", NULL), -1);
	assert_string_equal(e.msg, "run: unknown option --bogus (shoal run --help)");
	assert_int_equal(parse(&c, &o, &e, "--kernel", NULL), -1);
	assert_non_null(strstr(e.msg, "needs a value"));
	assert_int_equal(parse(&c, &o, &e, "--cpus", "two", NULL), -1);
	assert_non_null(strstr(e.msg, "--cpus"));
	assert_int_equal(parse(&c, &o, &e, "--memory", "big", NULL), -1);
	assert_int_equal(parse(&c, &o, &e, "stray", NULL), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_int_equal(parse(&c, &o, &e, "--help", NULL), 0);
	assert_true(o.help);
	vm_config_free(&c);
}

/* Flags override the file whatever their order on the command line. */
static void test_run_config_override(void **state)
{
	char path[] = "/tmp/shoal-cfg-XXXXXX";
	int fd = mkstemp(path);
	const char *json = "{\"kernel\":\"from-file\",\"cpus\":2,\"memory\":\"64M\"}";
	struct vm_config c;
	struct run_opts o;
	struct error e;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
	close(fd);
	vm_config_init(&c);
	assert_int_equal(parse(&c, &o, &e, "--cpus", "4", "--config", path, NULL), 0);
	assert_string_equal(c.kernel, "from-file");
	assert_int_equal(c.cpus, 4);
	assert_int_equal(c.memory, 64ULL << 20);
	vm_config_free(&c);
	vm_config_init(&c);
	assert_int_equal(parse(&c, &o, &e, "--config", "/nonexistent/vm.json", NULL), -1);
	assert_int_equal(e.status, EXIT_NOINPUT);
	assert_non_null(strstr(e.msg, "/nonexistent/vm.json"));
	vm_config_free(&c);
	unlink(path);
}

/* cmd_run with stdout sent to /dev/null (for --help and --print-config). */
static int run_quiet(int argc, char **argv)
{
	int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY);
	int status;

	fflush(stdout);
	dup2(null, STDOUT_FILENO);
	status = cmd_run(argc, argv);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	close(null);
	return status;
}

/* `shoal run`'s early ways out, each holding a malloc'd --api-socket: the
 * statuses, and (in the sanitizer tier, detect_leaks=1) nothing leaked. */
static void test_run_early_exits(void **state)
{
	char *nokernel[] = { "run", "--api-socket", "/tmp/shoal-test-api.sock",
			     "--kernel", "/nonexistent/vmlinux", NULL };
	char *badflag[] = { "run", "--api-socket", "/tmp/shoal-test-api.sock",
			    "--cpus", "lots", NULL };
	char *help[] = { "run", "--api-socket", "/tmp/shoal-test-api.sock", "--help", NULL };
	char *print[] = { "run", "--api-socket", "/tmp/shoal-test-api.sock",
			  "--kernel", "k", "--print-config", NULL };

	assert_int_equal(cmd_run(5, nokernel), EXIT_NOINPUT);
	assert_int_equal(cmd_run(5, badflag), EXIT_USAGE);
	assert_int_equal(run_quiet(4, help), 0);
	assert_int_equal(run_quiet(6, print), 0);
}

static void test_device_specs(void **state)
{
	struct vm_config c;
	struct error e;
	char *s;

	vm_config_init(&c);
	assert_int_equal(vm_config_add_disk(&c, "/img/a.qcow2,readonly,serial=abc,queues=2,mode=legacy", &e), 0);
	assert_string_equal(c.disks[0].path, "/img/a.qcow2");
	assert_true(c.disks[0].readonly);
	assert_string_equal(c.disks[0].serial, "abc");
	assert_int_equal(c.disks[0].queues, 2);
	assert_int_equal(c.disks[0].mode, VM_VIRTIO_LEGACY);
	assert_false(c.disks[0].direct);
	assert_int_equal(vm_config_add_disk(&c, "b.img,direct", &e), 0);
	assert_true(c.disks[1].direct);
	assert_int_equal(c.ndisks, 2);
	assert_int_equal(vm_config_add_disk(&c, "c.img,cache=32M", &e), 0);
	assert_int_equal(c.disks[2].cache_bytes, 32ULL << 20);
	assert_int_equal(vm_config_add_disk(&c, "c.img,cache=1k", &e), -1);
	c.ndisks--;
	free(c.disks[2].path);
	c.disks[2].path = NULL;
	assert_int_equal(vm_config_add_disk(&c, "c.img,bogus=1", &e), -1);
	assert_string_equal(e.msg, "--disk: unknown option 'bogus'");
	assert_int_equal(vm_config_add_disk(&c, "c.img,mode=ancient", &e), -1);
	assert_int_equal(vm_config_add_disk(&c, "c.img,serial=123456789012345678901", &e), -1);
	assert_int_equal(vm_config_add_disk(&c, "readonly=on", &e), -1);
	assert_int_equal(c.ndisks, 2);
	assert_int_equal(vm_config_add_net(&c, "tap=tap0,mac=52:54:00:12:34:56,queues=2", &e), 0);
	assert_string_equal(c.nets[0].tap, "tap0");
	assert_int_equal(c.nets[0].fd, -1);
	assert_int_equal(vm_config_add_net(&c, "fd=5", &e), 0);
	assert_int_equal(c.nets[1].fd, 5);
	assert_int_equal(vm_config_add_net(&c, "tap=a,fd=3", &e), -1);
	assert_int_equal(vm_config_add_net(&c, "mac=52:54:00:12:34:56", &e), -1);
	assert_int_equal(vm_config_add_net(&c, "tap=x,mac=01:00:5e:00:00:01", &e), -1);  /* multicast */
	assert_int_equal(vm_config_add_net(&c, "tap=x,mac=zz", &e), -1);
	assert_int_equal(vm_config_set_vsock(&c, "cid=3,socket=/tmp/v.sock", &e), 0);
	assert_int_equal(c.vsock_cid, 3);
	assert_int_equal(vm_config_set_vsock(&c, "cid=2,socket=/tmp/v.sock", &e), -1);
	{
		struct vm_config f;

		vm_config_init(&f);
		assert_int_equal(vm_config_set_vsock(&f, "cid=7", &e), -1);   /* no socket */
		assert_non_null(strstr(e.msg, "needs both"));
		vm_config_free(&f);
	}
	/* JSON round trip keeps every device */
	c.rng = true;
	s = vm_config_to_json_text(&c);
	{
		struct vm_config d;

		vm_config_init(&d);
		assert_int_equal(vm_config_from_json_text(&d, "rt", s, &e), 0);
		assert_int_equal(d.ndisks, 2);
		assert_true(d.disks[0].readonly);
		assert_false(d.disks[0].direct);
		assert_true(d.disks[1].direct);	/* "direct": true */
		assert_string_equal(d.disks[0].serial, "abc");
		assert_int_equal(d.disks[0].mode, VM_VIRTIO_LEGACY);
		assert_int_equal(d.nnets, 2);
		assert_string_equal(d.nets[0].mac, "52:54:00:12:34:56");
		assert_int_equal(d.nets[1].fd, 5);
		assert_true(d.rng);
		assert_int_equal(d.vsock_cid, 3);
		assert_string_equal(d.vsock_socket, "/tmp/v.sock");
		vm_config_free(&d);
	}
	free(s);
	/* JSON errors name the entry */
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"disks\": [{\"path\": \"x\", \"color\": \"red\"}]}", &e), -1);
	assert_string_equal(e.msg, "vm.json: disks[0]: unknown key \"color\"");
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"disks\": {}}", &e), -1);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"rng\": 5}", &e), -1);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"rng\": {\"rate\": 1000}}", &e), 0);
	assert_int_equal(c.rng_rate, 1000);
	vm_config_free(&c);
}

static void assert_disk_equal(const struct vm_disk *a, const struct vm_disk *b)
{
	assert_string_equal(a->path, b->path);
	assert_int_equal(a->readonly, b->readonly);
	assert_int_equal(a->direct, b->direct);
	if (a->serial || b->serial)
		assert_string_equal(a->serial, b->serial);
	assert_int_equal(a->queues, b->queues);
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->cache_bytes, b->cache_bytes);
}

static void assert_net_equal(const struct vm_net *a, const struct vm_net *b)
{
	if (a->tap || b->tap)
		assert_string_equal(a->tap, b->tap);
	assert_int_equal(a->fd, b->fd);
	if (a->mac || b->mac)
		assert_string_equal(a->mac, b->mac);
	assert_int_equal(a->queues, b->queues);
	assert_int_equal(a->mode, b->mode);
}

/* flags -> struct -> JSON -> struct is the identity, device by device and
 * for the whole VM, never through text. */
static void test_device_identity(void **state)
{
	static const char *disks[] = {
		"a.img", "/img/b.qcow2,readonly,serial=abc,queues=2,mode=legacy",
		"c.img,direct,cache=32M,mode=modern", "path=d.img,ro=on,serial=12345678901234567890",
	};
	static const char *nets[] = {
		"tap=tap0", "tap=t1,mac=52:54:00:12:34:56,queues=4,mode=modern", "fd=5,mode=legacy",
	};
	struct vm_config c, d;
	struct error e;
	json_t *j;

	vm_config_init(&c);
	for (size_t i = 0; i < sizeof(disks) / sizeof(disks[0]); i++) {
		struct vm_disk x, y;

		assert_int_equal(disk_config_from_flags(&x, disks[i], &e), 0);
		j = disk_config_to_json(&x);
		assert_int_equal(disk_config_from_json(&y, j, "t", &e), 0);
		assert_disk_equal(&x, &y);
		json_decref(j);
		disk_config_free(&x);
		disk_config_free(&y);
		assert_int_equal(vm_config_add_disk(&c, disks[i], &e), 0);
	}
	for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++) {
		struct vm_net x, y;

		assert_int_equal(net_config_from_flags(&x, nets[i], &e), 0);
		j = net_config_to_json(&x);
		assert_int_equal(net_config_from_json(&y, j, "t", &e), 0);
		assert_net_equal(&x, &y);
		json_decref(j);
		net_config_free(&x);
		net_config_free(&y);
		assert_int_equal(vm_config_add_net(&c, nets[i], &e), 0);
	}
	assert_int_equal(vm_config_set_vsock(&c, "cid=4294967294,socket=/run/v.sock", &e), 0);
	assert_int_equal(vconsole_config_from_flags(&c.vconsole, "file:/tmp/o,in=/tmp/i", &e), 0);
	c.rng = true;
	c.rng_rate = 4096;
	c.kernel = strdup("k");

	/* the whole VM: struct -> JSON object -> struct */
	j = vm_config_to_json(&c);
	assert_non_null(j);
	vm_config_init(&d);
	assert_int_equal(vm_config_from_json(&d, "rt", j, &e), 0);
	json_decref(j);
	assert_int_equal(d.ndisks, c.ndisks);
	for (int i = 0; i < c.ndisks; i++)
		assert_disk_equal(&c.disks[i], &d.disks[i]);
	assert_int_equal(d.nnets, c.nnets);
	for (int i = 0; i < c.nnets; i++)
		assert_net_equal(&c.nets[i], &d.nets[i]);
	assert_int_equal(d.vsock_cid, 4294967294u);
	assert_string_equal(d.vsock_socket, "/run/v.sock");
	assert_string_equal(d.vconsole, "file:/tmp/o,in=/tmp/i");
	assert_true(d.rng);
	assert_int_equal(d.rng_rate, 4096);
	vm_config_free(&d);
	vm_config_free(&c);

	/* rng and vsock off, console none: null and false come back as such */
	vm_config_init(&c);
	c.kernel = strdup("k");
	j = vm_config_to_json(&c);
	assert_true(json_is_null(json_object_get(j, "vsock")));
	assert_true(json_is_null(json_object_get(j, "virtio_console")));
	assert_true(json_is_false(json_object_get(j, "rng")));
	vm_config_init(&d);
	assert_int_equal(vm_config_from_json(&d, "rt", j, &e), 0);
	assert_int_equal(d.vsock_cid, 0);
	assert_null(d.vconsole);
	assert_false(d.rng);
	json_decref(j);
	vm_config_free(&d);
	vm_config_free(&c);
}

/* A comma in a value: JSON carries it (through --config too); the --disk
 * flag, whose separator it is, refuses it and says what to do. */
static void test_comma_in_json(void **state)
{
	char path[] = "/tmp/shoal-cfg-XXXXXX";
	const char *json = "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a,b.img\", \"serial\": \"x,y\"}],"
			   " \"vsock\": {\"cid\": 3, \"socket\": \"/r,un/v.sock\"}}";
	struct vm_config c, d;
	struct run_opts o;
	struct error e;
	char *text;
	int fd;

	vm_config_init(&c);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", json, &e), 0);
	assert_string_equal(c.disks[0].path, "a,b.img");
	assert_string_equal(c.disks[0].serial, "x,y");
	assert_string_equal(c.vsock_socket, "/r,un/v.sock");
	text = vm_config_to_json_text(&c);
	vm_config_init(&d);
	assert_int_equal(vm_config_from_json_text(&d, "rt", text, &e), 0);
	assert_string_equal(d.disks[0].path, "a,b.img");
	assert_string_equal(d.disks[0].serial, "x,y");
	assert_string_equal(d.vsock_socket, "/r,un/v.sock");
	vm_config_free(&d);
	vm_config_free(&c);

	/* --config FILE, then --disk on the command line */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	free(text);
	vm_config_init(&c);
	assert_int_equal(parse(&c, &o, &e, "--config", path, "--disk", "c.img,readonly", NULL), 0);
	assert_int_equal(c.ndisks, 2);
	assert_string_equal(c.disks[0].path, "a,b.img");
	assert_string_equal(c.disks[1].path, "c.img");
	assert_int_equal(parse(&c, &o, &e, "--disk", "a,b.img", NULL), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_non_null(strstr(e.msg, "--disk: unknown option 'b.img'"));
	assert_non_null(strstr(e.msg, "--config"));
	vm_config_free(&c);
	unlink(path);

	/* JSON values are typed; messages name the entry and the key */
	vm_config_init(&c);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"disks\": [{\"path\": \"x\", \"readonly\": \"yes\"}]}", &e), -1);
	assert_string_equal(e.msg, "vm.json: disks[0]: \"readonly\" must be true or false");
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"disks\": [{\"readonly\": true}]}", &e), -1);
	assert_non_null(strstr(e.msg, "disks[0]: no image path"));
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"disks\": [{\"path\": \"x\", \"queues\": 17}]}", &e), -1);
	assert_non_null(strstr(e.msg, "disks[0]: queues '17'"));
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"disks\": [{\"path\": \"x\", \"cache\": \"8M\"}]}", &e), 0);
	assert_int_equal(c.disks[0].cache_bytes, 8ULL << 20);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"nets\": [{\"tap\": \"a\", \"fd\": 3}]}", &e), -1);
	assert_non_null(strstr(e.msg, "nets[0]: give exactly one"));
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"nets\": [{\"tap\": \"a\", \"mac\": \"01:00:5e:00:00:01\"}]}", &e), -1);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"vsock\": {\"cid\": 2, \"socket\": \"/s\"}}", &e), -1);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"vsock\": {\"cid\": 3}}", &e), -1);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"virtio_console\": \"file:\"}", &e), -1);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"virtio_console\": \"file:o,in=\"}", &e), -1);
	assert_int_equal(c.ndisks, 1);       /* refused entries leave nothing behind */
	assert_int_equal(c.nnets, 0);
	vm_config_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_console_spec),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_run_flags),
		cmocka_unit_test(test_run_config_override),
		cmocka_unit_test(test_run_early_exits),
		cmocka_unit_test(test_device_specs),
		cmocka_unit_test(test_device_identity),
		cmocka_unit_test(test_comma_in_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
