/*
 * test_host_net.c - the pure parts of shoald's networks (src/host/net.c):
 * network names, subnets (what is refused, and why), overlap, the TAP
 * name a VM's card gets, a spec's {"network": NAME} cards (the canonical
 * spec names the network, the VMM's config the TAP), and the database's
 * networks table with the upgrade from schema 4.  Nothing here runs ip,
 * nft or dnsmasq: tests/system/slow_linux_daemon_net.sh does, in the KVM box.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/db.h"
#include "host/net.h"
#include "host/spec.h"

static void test_names(void **state)
{
	(void)state;
	assert_true(net_name_valid("n1"));
	assert_true(net_name_valid("lab-net_2"));
	assert_true(net_name_valid("abcdefghijkl"));           /* 12 */
	assert_false(net_name_valid(""));
	assert_false(net_name_valid("abcdefghijklm"));         /* 13: sb-NAME > 15 */
	assert_false(net_name_valid("Net"));                   /* upper case */
	assert_false(net_name_valid("-x"));
	assert_false(net_name_valid("_x"));
	assert_false(net_name_valid("a.b"));
	assert_false(net_name_valid("a b"));
	assert_false(net_name_valid("a;rm"));
	assert_false(net_name_valid("a/b"));
}

static void expect_subnet_bad(const char *s, const char *why_part)
{
	struct net_subnet sn;
	char why[200] = "";

	assert_int_equal(net_subnet_parse(s, &sn, why, sizeof(why)), -1);
	if (!strstr(why, why_part))
		fail_msg("%s: \"%s\" does not say \"%s\"", s, why, why_part);
}

static void test_subnets(void **state)
{
	struct net_subnet sn, b;
	char why[200], out[32];

	(void)state;
	assert_int_equal(net_subnet_parse("10.89.3.0/24", &sn, why, sizeof(why)), 0);
	assert_int_equal(sn.addr, 0x0a590300u);
	assert_int_equal(sn.prefix, 24);
	net_subnet_format(&sn, out, sizeof(out));
	assert_string_equal(out, "10.89.3.0/24");
	net_subnet_addr(&sn, 1, out, sizeof(out));
	assert_string_equal(out, "10.89.3.1");
	assert_int_equal(net_subnet_parse("172.16.0.0/16", &sn, why, sizeof(why)), 0);
	assert_int_equal(net_subnet_parse("192.168.7.16/28", &sn, why, sizeof(why)), 0);

	expect_subnet_bad("10.89.3.1/24", "host bits set (the network is 10.89.3.0/24)");
	expect_subnet_bad("8.8.8.0/24", "not a private network");
	expect_subnet_bad("172.32.0.0/16", "not a private network");
	expect_subnet_bad("10.0.0.0/8", "prefix must be 16 to 28");
	expect_subnet_bad("10.0.0.0/30", "prefix must be 16 to 28");
	expect_subnet_bad("10.0.0.256/24", "0 to 255");
	expect_subnet_bad("10.0.0.0", "is not an IPv4 subnet");
	expect_subnet_bad("10.0.0.0/24x", "is not an IPv4 subnet");
	expect_subnet_bad("10.0.0.0/24 ", "is not an IPv4 subnet");
	expect_subnet_bad(" 10.0.0.0/24", "is not an IPv4 subnet");
	expect_subnet_bad("10.0.0.0/+24", "is not an IPv4 subnet");
	expect_subnet_bad("10.0.0.0/24;rm", "is not an IPv4 subnet");
	expect_subnet_bad("", "is not an IPv4 subnet");

	net_subnet_parse("10.89.0.0/16", &sn, why, sizeof(why));
	net_subnet_parse("10.89.4.0/24", &b, why, sizeof(why));
	assert_true(net_subnet_overlap(&sn, &b));
	assert_true(net_subnet_overlap(&b, &sn));
	net_subnet_parse("10.90.4.0/24", &b, why, sizeof(why));
	assert_false(net_subnet_overlap(&sn, &b));
	net_subnet_parse("10.89.4.16/28", &sn, why, sizeof(why));
	net_subnet_parse("10.89.4.32/28", &b, why, sizeof(why));
	assert_false(net_subnet_overlap(&sn, &b));
}

static void test_tap_names(void **state)
{
	char a[16], b[16], c[16];
	char longname[64];

	(void)state;
	memset(longname, 'x', 63);
	longname[63] = '\0';
	net_tap_name(longname, 7, a);
	assert_true(strlen(a) <= 15);
	assert_true(host_tap_name_valid(a));
	net_tap_name("web1", 0, a);
	net_tap_name("web1", 1, b);
	assert_string_not_equal(a, b);
	assert_int_equal(strncmp(a, "tweb1-", 6), 0);
	/* two VMs with one prefix get different TAPs */
	net_tap_name("worker-0001", 0, a);
	net_tap_name("worker-0002", 0, c);
	assert_string_not_equal(a, c);
	net_tap_name("worker-0001", 0, b);
	assert_string_equal(a, b);               /* the same every start */
}

/* Two names whose TAPs collide (same first six characters, same 24-bit
 * hash, found by search): the second VM's start is refused with 409 while
 * the first runs, before any TAP is made or removed; not once it exited. */
static void test_tap_collision(void **state)
{
	const char *spec = "{\"name\": \"x\", \"nets\": [{\"network\": \"lan\"}]}";
	struct hvm first = { .state = HVM_RUNNING }, *table[1] = { &first };
	struct host h;
	struct api_err e;
	char a[16], b[16];

	(void)state;
	net_tap_name("worker39829", 0, a);
	net_tap_name("worker42812", 0, b);
	assert_string_equal(a, b);
	memset(&h, 0, sizeof(h));
	pthread_mutex_init(&h.lock, NULL);
	snprintf(first.rec.name, sizeof(first.rec.name), "worker39829");
	first.rec.spec = (char *)spec;
	h.vms = table;
	h.nvms = 1;
	assert_int_equal(host_net_taps_up(&h, "worker42812", spec, &e), -1);
	assert_int_equal(e.http, 409);
	assert_non_null(strstr(e.msg, "worker39829"));
	first.state = HVM_EXITED;      /* then the TAP is free: the next check is the network's */
	assert_int_equal(host_net_taps_up(&h, "worker42812", spec, &e), -1);
	assert_int_equal(e.http, 500);
	assert_non_null(strstr(e.msg, "networks are not set up"));
	pthread_mutex_destroy(&h.lock);
}

/* A card on a network: the canonical spec names the network (not the TAP),
 * the VMM's config has the TAP, and the stored spec parses the same again. */
static void test_spec_network(void **state)
{
	const char *text = "{\"name\": \"web1\", \"kernel\": \"/bin/true\", \"nets\": ["
			   "{\"network\": \"lab\", \"queues\": 2}, {\"tap\": \"tap9\"}]}";
	char names[8][NET_NAME_MAX + 1], tap[16];
	struct host_spec s;
	struct api_err e;
	json_t *j, *nets;
	char *again;

	(void)state;
	assert_int_equal(host_spec_parse(text, strlen(text), true, &s, &e), 0);
	net_tap_name("web1", 0, tap);
	assert_int_equal(s.cfg.nnets, 2);
	assert_string_equal(s.cfg.nets[0].tap, tap);
	assert_string_equal(s.cfg.nets[1].tap, "tap9");
	j = json_loads(s.spec_json, 0, NULL);
	nets = json_object_get(j, "nets");
	assert_string_equal(json_string_value(json_object_get(json_array_get(nets, 0), "network")),
			    "lab");
	assert_null(json_object_get(json_array_get(nets, 0), "tap"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(nets, 1), "tap")),
			    "tap9");
	json_decref(j);
	assert_int_equal(net_spec_networks(s.spec_json, names, 8), 2);
	assert_string_equal(names[0], "lab");
	assert_string_equal(names[1], "");
	again = strdup(s.spec_json);
	host_spec_free(&s);
	assert_int_equal(host_spec_parse(again, strlen(again), true, &s, &e), 0);
	assert_string_equal(s.spec_json, again);
	host_spec_free(&s);
	free(again);
}

static void expect_spec_bad(const char *text, const char *msg_part)
{
	struct host_spec s;
	struct api_err e;

	assert_int_equal(host_spec_parse(text, strlen(text), false, &s, &e), -1);
	assert_int_equal(e.http, 400);
	if (!strstr(e.msg, msg_part))
		fail_msg("%s: \"%s\" does not say \"%s\"", text, e.msg, msg_part);
}

static void test_spec_network_bad(void **state)
{
	(void)state;
	expect_spec_bad("{\"name\": \"a\", \"kernel\": \"k\", \"nets\": [{\"network\": \"Bad!\"}]}",
			"nets[0].network: must be a network's name");
	expect_spec_bad("{\"name\": \"a\", \"kernel\": \"k\", \"nets\": [{\"network\": 3}]}",
			"nets[0].network");
	expect_spec_bad("{\"name\": \"a\", \"kernel\": \"k\", \"nets\": [{\"tap\": \"t\"}, "
			"{\"network\": \"n\", \"tap\": \"t2\"}]}",
			"nets[1]: give one of \"network\" or \"tap\"");
}

static struct net_record got[4];
static int n;

static void collect(void *arg, const struct net_record *rec)
{
	(void)arg;
	if (n < 4)
		got[n++] = *rec;
}

/* A version 4 database opens upgraded with an empty networks table;
 * networks are inserted (a taken name: -EEXIST), listed in order, deleted. */
static void test_db(void **state)
{
	char dir[] = "/tmp/test_host_net.XXXXXX", path[128], err[256];
	struct net_record r = { .created_ms = 5 };
	sqlite3 *conn;
	struct db *s;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/v4.db", dir);
	assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
	assert_int_equal(sqlite3_exec(conn,
		"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
		"INSERT INTO meta VALUES('schema_version', '4');", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(conn);
	s = db_open(path, err, sizeof(err));
	if (!s)
		fail_msg("%s", err);
	assert_int_equal(db_net_load_all(s, collect, NULL), 0);
	snprintf(r.name, sizeof(r.name), "zeta");
	snprintf(r.subnet, sizeof(r.subnet), "10.89.0.0/24");
	assert_int_equal(db_net_insert(s, &r), 0);
	assert_int_equal(db_net_insert(s, &r), -EEXIST);
	snprintf(r.name, sizeof(r.name), "alpha");
	snprintf(r.subnet, sizeof(r.subnet), "10.89.1.0/24");
	r.isolated = true;
	assert_int_equal(db_net_insert(s, &r), 0);
	db_close(s);
	s = db_open(path, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(db_net_load_all(s, collect, NULL), 2);
	assert_string_equal(got[0].name, "zeta");     /* creation order */
	assert_false(got[0].isolated);
	assert_string_equal(got[1].name, "alpha");
	assert_string_equal(got[1].subnet, "10.89.1.0/24");
	assert_true(got[1].isolated);
	assert_int_equal(db_net_delete(s, "zeta"), 0);
	assert_int_equal(db_net_delete(s, "zeta"), -ENOENT);
	n = 0;
	assert_int_equal(db_net_load_all(s, collect, NULL), 1);
	assert_int_equal(db_check(s), 0);
	db_close(s);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	assert_int_equal(system(path), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_subnets),
		cmocka_unit_test(test_tap_names),
		cmocka_unit_test(test_tap_collision),
		cmocka_unit_test(test_spec_network),
		cmocka_unit_test(test_spec_network_bad),
		cmocka_unit_test(test_db),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
