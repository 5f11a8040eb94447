/*
 * authz.c - who may do what through shoald's API.
 *
 * The daemon runs VMMs as root, so the API must know who calls it.  On the
 * Unix socket the kernel says (SO_PEERCRED: uid, gid; SO_PEERGROUPS: the
 * supplementary groups, all as they were at connect time); on TCP the only
 * identity is "whoever holds the bearer token", one configured role.
 *
 * Three roles, each including the one before:
 *
 *   read      GET: version, inventory, one VM, events, metrics
 *   operate   start, stop, pause, resume, console log and console attach
 *   admin     create and delete (what names files for the VMM to open);
 *             snapshot, restore and delete a snapshot (a snapshot is a
 *             VM's whole memory on the daemon's disk; a restore creates
 *             a VM)
 *
 * The operator grants roles with `--grant user:NAME=ROLE` and
 * `--grant group:NAME=ROLE` (names or numeric ids, resolved once at start);
 * a caller gets the highest role any matching grant gives.  Root and the
 * daemon's own uid are always admin; everybody else gets nothing until
 * granted (the socket's mode and group decide who may connect at all; the
 * grants decide what a connection may do).  Even admin names files only
 * beneath the --allow-dir directories (spec.c, base/path_beneath.c).
 */
#include "host/host.h"

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const role_names[] = {
	[HOST_ROLE_NONE] = "none", [HOST_ROLE_READ] = "read",
	[HOST_ROLE_OPERATE] = "operate", [HOST_ROLE_ADMIN] = "admin",
};

const char *host_role_name(enum host_role r)
{
	return (unsigned)r <= HOST_ROLE_ADMIN ? role_names[r] : "none";
}

int host_role_parse(const char *s)
{
	for (int r = HOST_ROLE_READ; r <= HOST_ROLE_ADMIN; r++)
		if (!strcmp(s, role_names[r]))
			return r;
	return -1;
}

/* A user or group name, or a number, to its id; -1 if unknown. */
static long long authz_resolve(bool group, const char *name)
{
	long long id = -1;
	char *end;

	if (*name >= '0' && *name <= '9') {
		id = strtoll(name, &end, 10);
		return *end || id > 0xfffffffeLL ? -1 : id;
	}
	if (group) {
		struct group *g = getgrnam(name);
		return g ? (long long)g->gr_gid : -1;
	}
	struct passwd *p = getpwnam(name);
	return p ? (long long)p->pw_uid : -1;
}

int host_authz_grant(struct host_authz *a, const char *spec, struct api_err *e)
{
	char who[128];
	const char *eq = strchr(spec, '='), *name;
	bool group;
	long long id;
	int role;

	if (!eq || (size_t)(eq - spec) >= sizeof(who))
		goto usage;
	snprintf(who, sizeof(who), "%.*s", (int)(eq - spec), spec);
	group = !strncmp(who, "group:", 6);
	if (!group && strncmp(who, "user:", 5))
		goto usage;
	name = who + (group ? 6 : 5);
	role = host_role_parse(eq + 1);
	if (!*name || role < 0)
		goto usage;
	id = authz_resolve(group, name);
	if (id < 0)
		return api_err_set(e, 400, "invalid_request", "--grant %s: no such %s \"%s\"",
				   spec, group ? "group" : "user", name);
	if (a->n == HOST_MAX_GRANTS)
		return api_err_set(e, 400, "invalid_request", "--grant: at most %d grants",
				   HOST_MAX_GRANTS);
	a->g[a->n++] = (struct host_grant){ .group = group, .id = (unsigned)id,
					    .role = (enum host_role)role };
	return 0;
usage:
	return api_err_set(e, 400, "invalid_request",
			   "--grant %s: expected user:NAME=ROLE or group:NAME=ROLE, ROLE one of read, operate, admin",
			   spec);
}

/* Does grant `g` match a caller with these ids? */
static bool authz_matches(const struct host_grant *g, uid_t uid, const gid_t *gids, int ngids)
{
	if (!g->group)
		return g->id == uid;
	for (int i = 0; i < ngids; i++)
		if (g->id == gids[i])
			return true;
	return false;
}

enum host_role host_authz_role(const struct host_authz *a, uid_t uid, const gid_t *gids,
			       int ngids)
{
	enum host_role best = HOST_ROLE_NONE;

	if (uid == 0 || uid == geteuid())
		return HOST_ROLE_ADMIN;
	for (int i = 0; i < a->n; i++)
		if (a->g[i].role > best && authz_matches(&a->g[i], uid, gids, ngids))
			best = a->g[i].role;
	return best;
}
