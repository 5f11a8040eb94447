#!/bin/bash
# api_openapi.sh - api/openapi.yaml is a valid OpenAPI 3.0 document and
# says what the server does, without KVM (daemon_openapi.sh, in the KVM
# tier, checks the answers of running VMs against it):
#   - read as YAML, every schema is a schema: no key that is not an OpenAPI
#     schema keyword (an unquoted comma in a flow mapping makes one);
#   - `redocly lint` (recommended-strict, api/redocly.yaml) and
#     `swagger-cli validate` pass: real validators, from npm at pinned
#     versions (scripts/api-tools.sh installs them into the cache; offline
#     this part skips and says so, unless SHOAL_REQUIRE_API_TOOLS=1);
#   - every route the server serves (shoald --list-routes, the table in
#     src/host/api_route.c) is documented and every documented route is
#     served, each missing one named;
#   - the bearer token is a security scheme, every operation lists a 401
#     and a 2xx (or the console attach's 101);
#   - the request bodies' schemas match the server's readers: a maximal
#     example with every documented key validates and the server takes it;
#     each object schema with an undocumented key, and each value just out
#     of a documented range or enum, fails the schema, and the server
#     refuses it (400 or 403) too.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
PY=python3
$PY -c 'import yaml' 2>/dev/null || PY=/usr/bin/python3
$PY -c 'import yaml' 2>/dev/null || { skip api_openapi "python3 with PyYAML missing (python3-yaml)"; finish; }
DOC=$ROOT/api/openapi.yaml

# ---- real validators ----
if BIN=$("$ROOT/scripts/api-tools.sh" -q 2>"$TMP/tools.err"); then
	if "$BIN/redocly" lint --config "$ROOT/api/redocly.yaml" "$DOC" >"$TMP/redocly.out" 2>&1; then
		pass "redocly lint (recommended-strict): no error, no warning"
	else
		fail "redocly lint (recommended-strict)" "$(grep -E 'error|warning|^\[' "$TMP/redocly.out" | head -12 | tr '\n' ' ')"
	fi
	if "$BIN/swagger-cli" validate "$DOC" >"$TMP/swagger.out" 2>&1; then
		pass "swagger-cli validate"
	else
		fail "swagger-cli validate" "$(head -12 "$TMP/swagger.out" | tr '\n' ' ')"
	fi
elif [ "${SHOAL_REQUIRE_API_TOOLS:-0}" = 1 ]; then
	fail "OpenAPI validators" "scripts/api-tools.sh: $(tail -1 "$TMP/tools.err")"
else
	skip "redocly lint, swagger-cli validate" "scripts/api-tools.sh: $(tail -1 "$TMP/tools.err")"
fi

# ---- the document against the server ----
"$SHOALD" --list-routes >"$TMP/routes"
mkdir -p "$TMP/img"
: >"$TMP/img/kernel"
truncate -s 1M "$TMP/img/disk.raw"
start_daemon || { fail "daemon starts"; finish; }
$PY - "$DOC" "$TMP/routes" "$SHOAL_SOCKET" "$TMP/img" <<'EOF'
import copy, json, re, socket, sys, yaml

doc_path, routes_path, sock_path, img = sys.argv[1:5]
doc = yaml.safe_load(open(doc_path))
comp = doc.get("components", {})
failed = 0

def result(ok, name, why=""):
    global failed
    if ok:
        print("PASS: openapi: " + name)
    else:
        failed = 1
        print("FAIL: openapi: %s: %s" % (name, why))

# ---- every schema is a schema ----
KEYWORDS = {"title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
            "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
            "maxProperties", "minProperties", "required", "enum", "type", "allOf", "oneOf",
            "anyOf", "not", "items", "properties", "additionalProperties", "description",
            "format", "default", "nullable", "discriminator", "readOnly", "writeOnly", "xml",
            "externalDocs", "example", "deprecated", "$ref"}
bad = []
def walk_schema(s, where):
    if not isinstance(s, dict):
        bad.append("%s: %r is not a schema object" % (where, s))
        return
    for k, v in s.items():
        if k not in KEYWORDS and not k.startswith("x-"):
            bad.append("%s: %r is no schema keyword (value %r)" % (where, k, v))
    for k, v in (s.get("properties") or {}).items():
        walk_schema(v, where + "." + str(k))
    for k in ("allOf", "oneOf", "anyOf"):
        for i, v in enumerate(s.get(k) or []):
            walk_schema(v, "%s.%s[%d]" % (where, k, i))
    for k in ("items", "not"):
        if k in s:
            walk_schema(s[k], where + "." + k)
    if isinstance(s.get("additionalProperties"), dict):
        walk_schema(s["additionalProperties"], where + ".additionalProperties")
def walk_content(c, where):
    for ct, m in (c or {}).items():
        if "schema" in m:
            walk_schema(m["schema"], "%s %s" % (where, ct))
for name, s in comp.get("schemas", {}).items():
    walk_schema(s, name)
for name, r in comp.get("responses", {}).items():
    walk_content(r.get("content"), "responses." + name)
for path, item in doc.get("paths", {}).items():
    for m, op in item.items():
        if isinstance(op, dict):
            walk_content((op.get("requestBody") or {}).get("content"), "%s %s" % (m, path))
            for p in op.get("parameters") or []:
                if "schema" in p:
                    walk_schema(p["schema"], "%s %s ?%s" % (m, path, p.get("name")))
result(not bad, "read as YAML, every schema holds only schema keywords", "; ".join(bad[:6]))

# ---- routes, both ways, each missing one named ----
doc_routes = set()
ops = []
for path, item in doc["paths"].items():
    for m in ("get", "post", "put", "delete", "patch"):
        if m in item:
            doc_routes.add((m.upper(), path))
            ops.append((m.upper(), path, item[m]))
srv_routes = set(tuple(l.split()) for l in open(routes_path) if l.strip())
for r in sorted(srv_routes - doc_routes):
    result(False, "route %s %s" % r, "served (src/host/api_route.c) but not in api/openapi.yaml")
for r in sorted(doc_routes - srv_routes):
    result(False, "route %s %s" % r, "in api/openapi.yaml but not served (src/host/api_route.c)")
result(srv_routes == doc_routes, "the %d routes served and the %d documented are the same"
       % (len(srv_routes), len(doc_routes)), "each difference is named above")

# ---- security: the bearer token, a 401 and a 2xx everywhere ----
schemes = comp.get("securitySchemes", {})
bearer = [n for n, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"]
result(len(bearer) == 1, "the bearer token is a security scheme (type http, scheme bearer)", schemes)
reqs = doc.get("security", [])
result(bool(bearer) and {} in reqs and {bearer[0]: []} in reqs,
       "the document's security: none (Unix socket) or the bearer token (TCP)", reqs)
no401 = ["%s %s" % (m, p) for m, p, op in ops if "401" not in op.get("responses", {})]
result(not no401, "every operation lists a 401", no401)
no2xx = ["%s %s" % (m, p) for m, p, op in ops
         if not any(re.fullmatch(r"2\d\d|101", c) for c in op.get("responses", {}))]
result(not no2xx, "every operation lists a 2xx (or 101)", no2xx)

# ---- a small JSON-schema checker ----
def resolve(s):
    while "$ref" in s:
        s = comp["schemas"][s["$ref"].split("/")[-1]]
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
    if isinstance(v, str):
        if "pattern" in s and not re.search(s["pattern"], v):
            errs.append("%s: %r does not match %s" % (where, v, s["pattern"]))
        if len(v.encode()) > s.get("maxLength", 1 << 62) or len(v) < s.get("minLength", 0):
            errs.append("%s: length %d out of range" % (where, len(v)))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if v < s.get("minimum", v) or v > s.get("maximum", v):
            errs.append("%s: %r out of range" % (where, v))
        if "multipleOf" in s and v % s["multipleOf"]:
            errs.append("%s: %r not a multiple of %r" % (where, v, s["multipleOf"]))
    if isinstance(v, dict):
        props = s.get("properties", {})
        errs += ["%s: %s missing" % (where, k) for k in s.get("required", []) if k not in v]
        for k, x in v.items():
            if k in props:
                errs += check(x, props[k], where + "." + k)
            elif s.get("additionalProperties") is False:
                errs.append("%s: %s not documented" % (where, k))
    if isinstance(v, list):
        if len(v) > s.get("maxItems", len(v)):
            errs.append("%s: more than %d items" % (where, s["maxItems"]))
        for i, x in enumerate(v):
            errs += check(x, s.get("items", {}), "%s[%d]" % (where, i))
    return errs

# ---- HTTP over the Unix socket ----
def http(method, path, body):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock_path)
    data = json.dumps(body).encode()
    s.sendall(("%s %s HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
               % (method, path, len(data))).encode() + data)
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    head, _, rest = buf.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest

# ---- request bodies: the documented keys and limits are the server's ----
# Each case: the operation, a path for it, the schema of its body, a body
# with every documented key, and a status a body the server takes gets there.
n = [0]
def unique():
    n[0] += 1
    return "v%d" % n[0]
spec = {"name": "x", "restart": "on-failure", "limits": {"cpus": 1.5, "memory_max": 268435456,
                                                  "io": {"read_bps": 1048576, "write_bps": None,
                                                         "read_iops": 100, "write_iops": 50}},
        "kernel": img + "/kernel", "initrd": None,
        "cmdline": "console=ttyS0", "cpus": 2, "memory": "64M", "console": "file:c.log",
        "cpu_template": "baseline", "timeout": 60,
        "disks": [{"path": img + "/disk.raw", "readonly": True, "ro": True, "direct": False,
                   "cache": "1M", "serial": "s1", "queues": 2, "mode": "modern"}],
        "nets": [{"tap": "tap-x", "mac": "52:54:00:12:34:56", "queues": 1, "mode": "legacy"}],
        "rng": {"rate": 4096}, "balloon": {"stats_interval": 2}, "vsock": {"cid": 3, "socket": img},
        "virtio_console": "file:vc.log", "zero_scan": 1000,
        "cloud_init": {"user_data": img + "/kernel", "meta_data": img + "/kernel",
                       "network_config": None}}
cases = [("POST", "/v1/vms", "Spec", spec, 201),
         ("POST", "/v1/vms/ghost/stop", "StopRequest", {"mode": "force", "timeout_s": 5}, 404),
         ("POST", "/v1/vms/ghost/snapshot", "SnapshotRequest", {"name": "s1"}, 404),
         ("POST", "/v1/vms/ghost/balloon", "BalloonRequest", {"target": 0}, 404),
         ("POST", "/v1/snapshots/ghost/restore", "RestoreRequest", {"name": "r1"}, 404),
         ("POST", "/v1/snapshots/ghost/clone", "CloneRequest", {"count": 2, "prefix": "p"}, 404)]

def request_schema(method, path):
    for m, p, op in ops:
        if m == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", p), path):
            return op["requestBody"]["content"]["application/json"]["schema"]

# variants(v, s): (what, changed body) for each object (extra key) and each
# limit or enum (a value just outside) reachable in v through schema s.
def dotted(path):
    return "".join("[%d]" % k if isinstance(k, int) else "." + k for k in path).lstrip(".")

def variants(v, s, path=()):
    s = resolve(s)
    out = []
    if isinstance(v, dict):
        if s.get("additionalProperties") is False:
            out.append(("%s: an undocumented key" % (dotted(path) or "body"), path + ("bogus_key",), 1))
        for k, sub in s.get("properties", {}).items():
            if k in v:
                out += variants(v[k], sub, path + (k,))
        for i, sub in enumerate(s.get("oneOf", [])):
            if not check(v, sub):
                out += variants(v, sub, path)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += variants(x, s.get("items", {}), path + (i,))
        if "maxItems" in s:
            out.append(("%s: %d items" % (dotted(path), s["maxItems"] + 1),
                        path, [v[0]] * (s["maxItems"] + 1)))
    elif isinstance(v, bool) or v is None:
        pass
    elif isinstance(v, int):
        t = next((x for x in [s] + s.get("oneOf", []) if x.get("type") == "integer"), s)
        if "minimum" in t:
            out.append(("%s = %d" % (dotted(path), t["minimum"] - 1), path, t["minimum"] - 1))
        if "maximum" in t:
            out.append(("%s = %d" % (dotted(path), t["maximum"] + 1), path, t["maximum"] + 1))
    elif isinstance(v, str):
        if "maxLength" in s:
            out.append(("%s: %d bytes" % (dotted(path), s["maxLength"] + 1),
                        path, "a" * (s["maxLength"] + 1)))
        if "enum" in s:
            out.append(("%s = \"bogus\"" % dotted(path), path, "bogus"))
    return out

def changed(body, path, value):
    b = copy.deepcopy(body)
    o = b
    for k in path[:-1]:
        o = o[k]
    if path[-1] == "bogus_key" or isinstance(path[-1], int) or path[-1] in o:
        o[path[-1]] = value
    return b

for method, path, name, body, ok in cases:
    s = request_schema(method, path)
    result(s == {"$ref": "#/components/schemas/" + name}, "%s %s takes a %s" % (method, path, name), s)
    if name == "Spec":
        body = dict(body, name=unique())
    errs = check(body, s)
    st, data = http(method, path, body)
    result(not errs and st == ok, "%s with every documented key: valid, and the server takes it"
           % name, "%s; %d %s" % (errs[:3], st, data[:200]))
    for what, p, value in variants(body, s):
        b = changed(body, p, value)
        if name == "Spec":
            b["name"] = unique()
        errs = check(b, s)
        st, data = http(method, path, b)
        result(errs and st in (400, 403), "%s, %s: the schema and the server refuse it" % (name, what),
               "schema: %s; server: %d %s" % (errs[:2] or "accepts", st, data[:160]))
sys.exit(failed)
EOF
[ $? -eq 0 ] || T_FAILED=1
finish
