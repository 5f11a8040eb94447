#!/bin/bash
# daemon_openapi.sh - api/openapi.yaml against the running server, both ways:
# every route the server has (shoald --list-routes) is documented and every
# documented route exists; every documented operation is called, its status
# is one the document lists for it, and its body validates against the
# documented schema (a small JSON-schema checker below: $ref, allOf, oneOf,
# type, nullable, enum, required, properties, additionalProperties, items,
# pattern, minimum, maximum); every schema in the document is exercised
# (the answers of a migration, which needs two daemons, as examples here:
# daemon_migrate.sh checks the real ones).
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
PY=python3
$PY -c 'import yaml' 2>/dev/null || PY=/usr/bin/python3
$PY -c 'import yaml' 2>/dev/null || { skip daemon_openapi "python3 with PyYAML missing (python3-yaml)"; finish; }
if [ ! -f "$GUEST" ]; then skip daemon_openapi "build/shoal-guest missing"; finish; fi
KVM=0; [ -r /dev/kvm ] && KVM=1

# a memory budget far above what the test's VMs use: the manager runs (its
# MemoryManager figures appear in a balloon VM's stats) and reclaims nothing
start_daemon --memory-budget 64G --memory-period 0.2 || { fail "daemon starts"; finish; }
"$SHOALD" --list-routes >"$TMP/routes"
$PY - "$ROOT/api/openapi.yaml" "$TMP/routes" "$SHOAL_SOCKET" "$GUEST" "$KVM" <<'EOF'
import hashlib, hmac, json, os, re, socket, sys, time, urllib.parse, yaml

doc_path, routes_path, sock_path, guest, kvm = sys.argv[1:6]
kvm = kvm == "1"
doc = yaml.safe_load(open(doc_path))
comp = doc["components"]
used_schemas = set()
failed = 0

def result(ok, name, why=""):
    global failed
    if ok:
        print("PASS: openapi: " + name)
    else:
        failed = 1
        print("FAIL: openapi: %s: %s" % (name, why))

# ---- routes, both ways ----
doc_routes = set()
for path, item in doc["paths"].items():
    for m in ("get", "post", "put", "delete", "patch"):
        if m in item:
            doc_routes.add((m.upper(), path))
srv_routes = set(tuple(l.split()) for l in open(routes_path) if l.strip())
result(srv_routes <= doc_routes, "every server route is documented", sorted(srv_routes - doc_routes))
result(doc_routes <= srv_routes, "every documented route exists", sorted(doc_routes - srv_routes))

# ---- a small JSON-schema checker ----
def resolve(s):
    while "$ref" in s:
        name = s["$ref"].split("/")[-1]
        used_schemas.add(name)
        s = comp["schemas"][name]
    return s

def check(v, s, where="$"):
    s = resolve(s)
    if v is None:
        return [] if s.get("nullable") else ["%s: null not allowed" % where]
    errs = []
    for sub in s.get("allOf", []):
        errs += check(v, sub, where)
    if "oneOf" in s:
        n = sum(1 for sub in s["oneOf"] if not check(v, sub, where))
        if n != 1:
            errs.append("%s: matches %d of oneOf" % (where, n))
    t = s.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if t == "integer" and (not isinstance(v, int) or isinstance(v, bool)):
        return errs + ["%s: %r is not an integer" % (where, v)]
    if t == "number" and (not isinstance(v, (int, float)) or isinstance(v, bool)):
        return errs + ["%s: %r is not a number" % (where, v)]
    if t in types and not isinstance(v, types[t]):
        return errs + ["%s: %r is not %s" % (where, v, t)]
    if "enum" in s and v not in s["enum"]:
        errs.append("%s: %r not in %s" % (where, v, s["enum"]))
    if "pattern" in s and isinstance(v, str) and not re.search(s["pattern"], v):
        errs.append("%s: %r does not match %s" % (where, v, s["pattern"]))
    if "minimum" in s and isinstance(v, (int, float)) and v < s["minimum"]:
        errs.append("%s: %r < %r" % (where, v, s["minimum"]))
    if "maximum" in s and isinstance(v, (int, float)) and v > s["maximum"]:
        errs.append("%s: %r > %r" % (where, v, s["maximum"]))
    if isinstance(v, dict):
        props = s.get("properties", {})
        for k in s.get("required", []):
            if k not in v:
                errs.append("%s: %s missing" % (where, k))
        for k, x in v.items():
            if k in props:
                errs += check(x, props[k], where + "." + k)
            elif s.get("additionalProperties") is False:
                errs.append("%s: %s not documented" % (where, k))
            elif isinstance(s.get("additionalProperties"), dict):
                errs += check(x, s["additionalProperties"], where + "." + k)
    if isinstance(v, list) and "items" in s:
        for i, x in enumerate(v):
            errs += check(x, s["items"], "%s[%d]" % (where, i))
    return errs

# ---- HTTP over the Unix socket ----
def http(method, path, body=None, headers=None, raw=False):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock_path)
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else (body or b"")
    h = "%s %s HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: %d\r\n" % (method, path, len(data))
    for k, x in (headers or {}).items():
        h += "%s: %s\r\n" % (k, x)
    try:
        s.sendall(h.encode() + b"\r\n" + data)
    except (BrokenPipeError, ConnectionResetError):
        pass            # answered early (413) and closed: read the answer
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    hdrs = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, x = line.decode().partition(":")
        hdrs[k.strip().lower()] = x.strip()
    if raw or status == 101:
        return status, hdrs, rest, s
    while True:
        c = s.recv(65536)
        if not c:
            break
        rest += c
    s.close()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        out, r = b"", rest
        while r:
            size, _, r = r.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            out, r = out + r[:n], r[n + 2:]
        rest = out
    return status, hdrs, rest, None

def op_of(method, path):
    for tmpl, item in doc["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", tmpl), path.split("?")[0]) and method.lower() in item:
            return item[method.lower()]
    return None

called = set()

def call(name, method, path, body=None, want=None, headers=None):
    status, hdrs, data, conn = http(method, path, body, headers)
    op = op_of(method, path)
    if op is None:
        result(False, name, "no documented operation for %s %s" % (method, path))
        return status, data
    called.add(op["operationId"])
    resp = op["responses"].get(str(status))
    if resp is None:
        result(False, name, "status %d not documented for %s (%s)" % (status, op["operationId"], data[:200]))
        return status, data
    if "$ref" in resp:
        resp = comp["responses"][resp["$ref"].split("/")[-1]]
    ctype = hdrs.get("content-type", "").split(";")[0]
    errs = []
    if want is not None and status != want:
        errs.append("status %d, expected %d" % (status, want))
    content = resp.get("content", {})
    if content and status != 101:
        if ctype not in content:
            errs.append("content type %r not documented (%s)" % (ctype, list(content)))
        elif ctype in ("application/json", "application/x-ndjson"):
            docs = [json.loads(l) for l in data.decode().splitlines() if l.strip()] \
                if ctype == "application/x-ndjson" else [json.loads(data)]
            for d in docs:
                errs += check(d, content[ctype]["schema"])
    if conn:
        conn.close()
    result(not errs, "%s (%s %s -> %d)" % (name, method, path, status), "; ".join(errs[:5]))
    return status, data

spec = {"name": "oa", "kernel": guest, "cmdline": "shell", "memory": "64M", "cpus": 2}
call("version", "GET", "/v1/version", want=200)
call("create", "POST", "/v1/vms", spec, want=201)
call("create: name taken", "POST", "/v1/vms", spec, want=409)
call("create: invalid spec", "POST", "/v1/vms", {"name": "x", "kernel": guest, "cpus": "2"}, want=400)
call("create: too large", "POST", "/v1/vms", b" " * (2 << 20), want=413)
call("list", "GET", "/v1/vms", want=200)
call("show", "GET", "/v1/vms/oa", want=200)
call("show: unknown", "GET", "/v1/vms/ghost", want=404)
call("console log of a created VM", "GET", "/v1/vms/oa/console", want=200)
call("console log: bad max", "GET", "/v1/vms/oa/console?max=x", want=400)
call("attach without Upgrade", "GET", "/v1/vms/oa/console/attach", want=400)
call("pause a created VM", "POST", "/v1/vms/oa/pause", want=409)
call("resume a created VM", "POST", "/v1/vms/oa/resume", want=409)
call("stop a created VM", "POST", "/v1/vms/oa/stop", want=409)
call("stop: bad body", "POST", "/v1/vms/oa/stop", {"mode": "now"}, want=400)
call("metrics of a created VM", "GET", "/v1/vms/oa/metrics", want=200)
call("metrics of an unknown VM", "GET", "/v1/vms/ghost/metrics", want=404)
call("events", "GET", "/v1/events", want=200)
call("events: bad since", "GET", "/v1/events?since=x", want=400)
call("metrics", "GET", "/v1/metrics", want=200)
call("metrics, Prometheus", "GET", "/metrics", want=200)
call("start an unknown VM", "POST", "/v1/vms/ghost/start", want=404)
call("snapshots", "GET", "/v1/snapshots", want=200)
call("show an unknown snapshot", "GET", "/v1/snapshots/ghost", want=404)
call("delete an unknown snapshot", "DELETE", "/v1/snapshots/ghost", want=404)
call("restore an unknown snapshot", "POST", "/v1/snapshots/ghost/restore", {"name": "x"}, want=404)
call("restore: bad body", "POST", "/v1/snapshots/ghost/restore", {"nom": 1}, want=400)
call("snapshot a created VM", "POST", "/v1/vms/oa/snapshot", want=409)
call("snapshot an unknown VM", "POST", "/v1/vms/ghost/snapshot", want=404)
call("patch a created VM", "PATCH", "/v1/vms/oa", {"cmdline": "shell", "limits": {"cpus": 1}}, want=200)
call("replace a created VM", "PUT", "/v1/vms/oa", spec, want=200)
call("replace: a rename", "PUT", "/v1/vms/oa", dict(spec, name="zz"), want=400)
call("replace an unknown VM", "PUT", "/v1/vms/ghost", spec, want=404)
call("add a disk", "POST", "/v1/vms/oa/disks", {"path": guest, "readonly": True}, want=200)
call("add a disk: no path", "POST", "/v1/vms/oa/disks", {"readonly": True}, want=400)
call("remove an unknown disk", "DELETE", "/v1/vms/oa/disks?path=/nope", want=404)
call("remove the disk", "DELETE", "/v1/vms/oa/disks?path=" + urllib.parse.quote(guest), want=200)
call("reboot a created VM", "POST", "/v1/vms/oa/reboot", want=409)
call("reset a created VM", "POST", "/v1/vms/oa/reset", want=409)
call("clone an unknown snapshot", "POST", "/v1/snapshots/ghost/clone", {"count": 1}, want=404)
# this daemon has no --store: daemon_store_snapshot.sh pushes and pulls for real
call("push without a store", "POST", "/v1/snapshots/ghost/push", {"as": "g"}, want=409)
call("pull without a store", "POST", "/v1/snapshots/ghost/pull", {"from": "server"}, want=409)
call("balloon a created VM", "POST", "/v1/vms/oa/balloon", {"target": "16M"}, want=409)
call("balloon: bad body", "POST", "/v1/vms/oa/balloon", {"target": -1}, want=400)
call("balloon an unknown VM", "POST", "/v1/vms/ghost/balloon", {"target": 0}, want=404)
call("migrate an unknown VM", "POST", "/v1/vms/ghost/migrate", {"to": "/nowhere.sock"}, want=404)
call("migrate a created VM", "POST", "/v1/vms/oa/migrate", {"to": "/nowhere.sock"}, want=409)
call("migrate: bad body", "POST", "/v1/vms/oa/migrate", {"to": "http://h:1"}, want=400)
call("incoming migration: name taken", "POST", "/v1/migrations/incoming", {"spec": spec}, want=409)
call("cancel the migration of an unknown VM", "DELETE", "/v1/vms/ghost/migration", want=404)
call("cancel a migration when none is in progress", "DELETE", "/v1/vms/oa/migration", want=409)
call("incoming migration: bad body", "POST", "/v1/migrations/incoming", {"spec": []}, want=400)
call("networks", "GET", "/v1/networks", want=200)
call("show an unknown network", "GET", "/v1/networks/ghost", want=404)
call("delete an unknown network", "DELETE", "/v1/networks/ghost", want=404)
call("create a network: bad subnet", "POST", "/v1/networks", {"name": "oanet", "subnet": "8.8.8.0/24"},
     want=400)
if kvm:   # (the box: root, nftables and dnsmasq, as a real network needs)
    call("create a network", "POST", "/v1/networks",
         {"name": "oanet", "subnet": "10.231.7.0/24", "isolated": True}, want=201)
    call("show a network", "GET", "/v1/networks/oanet", want=200)
    call("delete a network", "DELETE", "/v1/networks/oanet", want=204)
if kvm:
    call("start", "POST", "/v1/vms/oa/start", want=200)
    call("start a running VM", "POST", "/v1/vms/oa/start", want=409)
    call("show a running VM", "GET", "/v1/vms/oa", want=200)
    call("pause", "POST", "/v1/vms/oa/pause", want=200)
    call("resume", "POST", "/v1/vms/oa/resume", want=200)
    call("reboot", "POST", "/v1/vms/oa/reboot", {"mode": "graceful", "timeout_s": 1}, want=200)
    call("reset", "POST", "/v1/vms/oa/reset", want=200)
    call("patch a running VM", "PATCH", "/v1/vms/oa", {"cpus": 1}, want=409)
    call("metrics of a running VM", "GET", "/v1/vms/oa/metrics", want=200)
    call("metrics with a running VM", "GET", "/v1/metrics", want=200)
    call("console log of a running VM", "GET", "/v1/vms/oa/console?max=100", want=200)
    call("attach", "GET", "/v1/vms/oa/console/attach",
         headers={"Connection": "Upgrade", "Upgrade": "shoal-console"}, want=101)
    call("delete a running VM", "DELETE", "/v1/vms/oa", want=409)
    call("balloon a VM without one", "POST", "/v1/vms/oa/balloon", {"target": "16M"}, want=409)
    call("create a VM with a balloon", "POST", "/v1/vms", dict(spec, name="ob", balloon=True), want=201)
    call("start it", "POST", "/v1/vms/ob/start", want=200)
    call("balloon", "POST", "/v1/vms/ob/balloon", {"target": "16M"}, want=200)
    call("balloon: above its memory", "POST", "/v1/vms/ob/balloon", {"target": "1G"}, want=400)
    for _ in range(50):                   # the memory manager's first rounds (every 0.2 s)
        st, _h, data, conn = http("GET", "/v1/vms/ob")
        if conn:
            conn.close()
        try:
            if st == 200 and "memory_manager" in json.loads(data).get("stats", {}):
                break
        except ValueError:
            pass
        time.sleep(0.2)
    call("show the balloon VM, with its memory manager figures", "GET", "/v1/vms/ob", want=200)
    call("stop the balloon VM", "POST", "/v1/vms/ob/stop", {"mode": "force"}, want=200)
    call("delete the balloon VM", "DELETE", "/v1/vms/ob", want=204)
    call("snapshot", "POST", "/v1/vms/oa/snapshot", {"name": "oa-snap"}, want=201)
    call("snapshot: name taken", "POST", "/v1/vms/oa/snapshot", {"name": "oa-snap"}, want=409)
    call("snapshots with one", "GET", "/v1/snapshots", want=200)
    call("show a snapshot", "GET", "/v1/snapshots/oa-snap", want=200)
    call("restore", "POST", "/v1/snapshots/oa-snap/restore", {"name": "oa2"}, want=201)
    call("restore: name taken", "POST", "/v1/snapshots/oa-snap/restore", {"name": "oa2"}, want=409)
    call("delete a snapshot in use", "DELETE", "/v1/snapshots/oa-snap", want=409)
    call("clone", "POST", "/v1/snapshots/oa-snap/clone", {"count": 1, "prefix": "oc"}, want=201)
    call("stop the clone", "POST", "/v1/vms/oc-1/stop", {"mode": "force"}, want=200)
    call("delete the clone", "DELETE", "/v1/vms/oc-1", want=204)
    call("stop the restored VM", "POST", "/v1/vms/oa2/stop", {"mode": "force"}, want=200)
    call("delete the restored VM", "DELETE", "/v1/vms/oa2", want=204)
    call("delete a snapshot", "DELETE", "/v1/snapshots/oa-snap", want=204)
    # an incoming migration whose source connects, proves the key and
    # goes: its VM goes too (a connection without the proof would be
    # refused and the VMM would wait on)
    st, data = call("incoming migration", "POST", "/v1/migrations/incoming",
                    {"spec": dict(spec, name="oi")}, want=201)
    if st == 201:
        ans = json.loads(data)
        key = bytes.fromhex(ans["key"])
        c = socket.socket(socket.AF_UNIX)
        c.connect(ans["address"][len("unix:"):])
        ns = os.urandom(32)
        c.sendall(b"SHOALAUT" + ns)
        got = b""
        while len(got) < 72:
            b = c.recv(72 - len(got))
            if not b: break
            got += b
        label = lambda l: l.encode().ljust(32, b"\0")
        nd = got[8:40]
        result(got[:8] == b"SHOALAUT" and hmac.compare_digest(
            got[40:72], hmac.new(key, label("shoal-migrate dst") + ns + nd, hashlib.sha256).digest()),
               "the incoming VMM proves it knows the answer's key")
        c.sendall(hmac.new(key, label("shoal-migrate src") + ns + nd, hashlib.sha256).digest())
        result(c.recv(8) == b"SHOALAOK", "... and takes our proof")
        c.close()
        for _ in range(200):
            if http("GET", "/v1/vms/oi")[0] == 404:
                break
            time.sleep(0.05)
        result(http("GET", "/v1/vms/oi")[0] == 404, "an incoming VM whose source went is removed")
    # a follow stream: one line after a new event
    st, hd, data, conn = http("GET", "/v1/events?follow=true", raw=True)
    called.add("events")
    call("stop", "POST", "/v1/vms/oa/stop", {"mode": "force"}, want=200)
    conn.settimeout(5)
    while data.count(b"\n") < 4:
        c = conn.recv(65536)
        if not c:
            break
        data += c
    conn.close()
    lines = [l for l in data.split(b"\r\n") if l.startswith(b"{")]
    errs = [e for l in lines for e in check(json.loads(l), comp["schemas"]["Event"])]
    result(st == 200 and hd.get("content-type") == "application/x-ndjson" and lines and not errs,
           "events follow: an NDJSON stream of Event", "%d %s %s" % (st, hd, errs[:3]))
    used_schemas.add("Event")
call("delete", "DELETE", "/v1/vms/oa", want=204)
call("delete an unknown VM", "DELETE", "/v1/vms/oa", want=404)

ops = set(op["operationId"] for item in doc["paths"].values()
          for m, op in item.items() if isinstance(op, dict) and "operationId" in op)
missing = ops - called if kvm else set()
result(not missing, "every documented operation was called", sorted(missing))
# schemas reached only through the request side are checked as examples
for ex, name in ((spec, "Spec"), ({"mode": "force", "timeout_s": 3}, "StopRequest"),
                 ({"name": "s1", "live": True}, "SnapshotRequest"), ({"name": "vm2"}, "RestoreRequest"),
                 ({"count": 2, "prefix": "c"}, "CloneRequest"),
                 ({"path": "/d.qcow2", "readonly": True}, "Disk"), ({"tap": "tap0"}, "Net"),
                 ({"target": "512M"}, "BalloonRequest"),
                 ({"name": "n1", "subnet": "10.89.1.0/24", "isolated": False}, "NetworkRequest"),
                 ({"to": "https://h:8443", "token": "t0k3n-t0k3n-t0k3n", "downtime_ms": 50,
                   "bandwidth": 0, "with_disks": True, "auto_converge": False}, "MigrateRequest"),
                 ({"spec": spec}, "IncomingMigrationRequest"),
                 ({"spec": spec, "disks": [None, {"size": 1048576, "format": "raw"}]}, "IncomingMigrationRequest"),
                 ({"as": "web-1"}, "PushRequest"), ({"from": "server"}, "PullRequest"),
                 # answers that need a store and a server: daemon_store_snapshot.sh makes real ones
                 ({"snapshot": "s1", "name": "s1", "store": "/srv/store", "files": 4, "disks": 1,
                   "disks_by_reference": 0, "bytes": 71314675, "chunks": 2639, "zero_chunks": 2000,
                   "new_chunks": 639, "new_bytes": 9000000, "stored_bytes": 3000000}, "PushResult"),
                 ({"name": "s1", "vm": "src", "dir": "/var/lib/shoal/snapshots/s1", "from": "server",
                   "fetched": True, "chunks": 2639, "present_chunks": 0, "fetched_chunks": 639,
                   "fetched_bytes": 9000000, "disks": [{"path": "/srv/img/snapshots-pulled/s1-1765000000000/disk-0.raw",
                                                       "writable": True}]}, "PullResult"),
                 # answers that need two daemons: daemon_migrate.sh checks the real ones
                 ({"name": "a", "to": "/s", "downtime_ms": 1.5, "total_ms": 9.0, "rounds": 2,
                   "bytes": 4096, "pages_sent": 1, "zero_pages": 0, "destination_state": "running"},
                  "MigrateResult"),
                 ({"to": "/s", "state": "active", "round": 0, "bytes": 0, "memory_bytes": 1,
                   "dirty_pages": 0, "dirty_rate": 0, "expected_downtime_ms": 0.0}, "VmMigration")):
    errs = check(ex, {"$ref": "#/components/schemas/" + name})
    result(not errs, "example %s validates" % name, errs)
unused = set(comp["schemas"]) - used_schemas - {"VmMetrics", "Snapshot", "SnapshotDetail", "CloneResult", "Balloon",
                                               "IncomingMigration", "Network"} if not kvm \
    else set(comp["schemas"]) - used_schemas
result(not unused, "every schema in the document was exercised", sorted(unused))
sys.exit(failed)
EOF
[ $? -eq 0 ] || T_FAILED=1
finish
