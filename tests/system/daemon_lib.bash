# tests/system/daemon_lib.bash - sourced by the daemon_*.sh system tests
# (after lib.sh).  Not a test itself (scripts/test.sh runs *.sh only).
#
# Starts a real shoald on a temporary state directory and gives the tests
# two ways in: the CLI ($SHOAL with SHOAL_SOCKET set) and raw HTTP (api,
# with curl).  On exit every process whose command line names this test's
# temporary directory (the daemon, the monitors, the VMMs) is killed by pid.

SHOALD=$BUILD/shoald
STATE=$TMP/state
export SHOAL_SOCKET=$STATE/shoald.sock
DPID=

# daemon_cleanup: kill our daemon and every VMM/monitor under $TMP.
daemon_cleanup() {
	exec 2>/dev/null     # no "Killed" job notices
	local pids
	pids=$(ps -eo pid=,args= | grep -F -- "$TMP/" | grep -v grep | awk '{print $1}')
	[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	rm -rf "$TMP"
}
trap daemon_cleanup EXIT

# need_daemon: skip the whole script without shoald, KVM or the guest.
need_daemon() {
	if [ ! -x "$SHOALD" ] || [ ! -x "$SHOAL" ]; then
		skip "$(basename "$0")" "build/shoald or build/shoal not built"; exit 0
	fi
	if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then
		skip "$(basename "$0")" "curl and jq are needed (scripts/install-deps.sh)"; exit 0
	fi
}
need_kvm() {
	if [ ! -r /dev/kvm ] || [ ! -f "$GUEST" ]; then
		skip "$1" "/dev/kvm or build/shoal-guest missing"; return 1
	fi
}

# daemon_allow_args: --allow-dir for what the tests name in specs: this
# test's $TMP, the build directory (the test guest) and the kit cache
# (Linux kernels, initramfs), those that exist.  shoald refuses (403)
# every file outside its --allow-dir directories (docs/daemon.md).
daemon_allow_args() {
	local d
	for d in "$TMP" "$BUILD" "${SHOAL_CACHE:-$HOME/.cache/shoal}"; do
		[ -d "$d" ] && printf -- '--allow-dir\n%s\n' "$(cd "$d" && pwd)"
	done
}

# start_daemon [ARGS]: start shoald in the background, wait for its socket.
# The directories of daemon_allow_args are allowed unless
# DAEMON_DEFAULT_ALLOW=0; ARGS may add more --allow-dir.
start_daemon() {
	local allow=()
	mkdir -p "$STATE"
	[ "${DAEMON_DEFAULT_ALLOW:-1}" = 1 ] && mapfile -t allow < <(daemon_allow_args)
	"$SHOALD" --state-dir "$STATE" "${allow[@]}" "$@" >>"$TMP/shoald.log" 2>&1 &
	DPID=$!
	for _ in $(seq 200); do
		[ -S "$SHOAL_SOCKET" ] && curl -s --unix-socket "$SHOAL_SOCKET" http://d/v1/version >/dev/null && return 0
		kill -0 "$DPID" 2>/dev/null || break
		sleep 0.05
	done
	echo "shoald did not start:"; cat "$TMP/shoald.log"; return 1
}

# api METHOD PATH [BODY]: HTTP status on stdout, body in $TMP/body (or in
# $API_OUT: a request run in the background must not write the file that a
# check in the foreground reads meanwhile).
api() {
	local m=$1 p=$2 out=${API_OUT:-$TMP/body}
	shift 2
	if [ $# -gt 0 ]; then
		curl -s -o "$out" -w '%{http_code}' --unix-socket "$SHOAL_SOCKET" -X "$m" \
			-H 'Content-Type: application/json' --data-binary "$1" "http://d$p"
	else
		curl -s -o "$out" -w '%{http_code}' --unix-socket "$SHOAL_SOCKET" -X "$m" "http://d$p"
	fi
}
body() { cat "$TMP/body"; }
# is_error CODE: the last body has the error shape with this code.
is_error() { jq -e --arg c "$1" '.error.code == $c and (.error.message | length > 0)' "$TMP/body" >/dev/null; }

# expect_error NAME STATUS CODE TEXT CMD...: CMD prints an HTTP status and
# leaves the body in $TMP/body (as api does); PASS if the status, the error
# code and TEXT (a field name, say) in the message are the ones given.
expect_error() {
	local name=$1 want=$2 code=$3 text=$4 got
	shift 4
	got=$("$@")
	if [ "$got" = "$want" ] && is_error "$code" && jq -r .error.message "$TMP/body" | grep -qF -- "$text"; then
		pass "$name"
	else
		fail "$name" "got $got $(head -c 300 "$TMP/body")"
	fi
}

# spec NAME [CMDLINE] [EXTRA_JSON_MEMBERS]: a test-guest VM spec
# ($SPEC_MEMORY of RAM, default 64M).
spec() {
	printf '{"name": "%s", "kernel": "%s", "cmdline": "%s", "memory": "%s"%s}' \
		"$1" "$GUEST" "${2:-shell}" "${SPEC_MEMORY:-64M}" "${3:+, $3}"
}

# vm_field NAME JQ: a field of GET /v1/vms/NAME.
vm_field() { curl -s --unix-socket "$SHOAL_SOCKET" "http://d/v1/vms/$1" | jq -r "$2"; }

# wait_state NAME STATE [TRIES]: poll until the VM is in STATE (0.05 s steps).
wait_state() {
	for _ in $(seq "${3:-200}"); do
		[ "$(vm_field "$1" .state)" = "$2" ] && return 0
		sleep 0.05
	done
	return 1
}

# wait_console NAME TEXT: poll the console log until it contains TEXT.
wait_console() {
	for _ in $(seq 200); do
		"$SHOAL" console "$1" --show-log 2>/dev/null | grep -qF -- "$2" && return 0
		sleep 0.05
	done
	return 1
}

# type_console NAME TEXT: type TEXT into the VM's serial console through the
# daemon's console attach, a byte at a time (the guest's UART has no FIFO
# to speak of), then hang up.
type_console() {
	python3 - "$SHOAL_SOCKET" "$1" "$2" <<'PY'
import socket, sys, time
sock, name, text = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX); s.connect(sock); s.settimeout(10)
s.sendall(("GET /v1/vms/%s/console/attach?force=true HTTP/1.1\r\nHost: d\r\n"
           "Connection: Upgrade\r\nUpgrade: shoal-console\r\n\r\n" % name).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    c = s.recv(4096)
    if not c: break
    buf += c
if b" 101 " not in buf.split(b"\r\n")[0]:
    print("attach refused: %r" % buf[:200]); sys.exit(1)
for ch in text.encode():
    s.sendall(bytes([ch])); time.sleep(0.003)
time.sleep(0.5)
s.close()
PY
}
console_has() { "$SHOAL" console "$1" --show-log 2>/dev/null | grep -qF -- "$2"; }
wait_console_long() {     # NAME TEXT [TRIES of 0.1 s]
	for _ in $(seq "${3:-600}"); do console_has "$1" "$2" && return 0; sleep 0.1; done
	return 1
}

# stuck_report DIR...: for a failure's detail, what the VMMs of the VM
# directories DIR are doing: each thread's state and kernel wait channel,
# their stacks where gdb is installed, and the tail of each log file there.
stuck_report() {
	local d pid t
	for d in "$@"; do
		for pid in $(pgrep -f -- "--config $d/"); do
			echo "--- pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100)"
			for t in /proc/"$pid"/task/*; do
				echo "  thread $(basename "$t") $(cat "$t/comm" 2>/dev/null) state $(cut -d' ' -f3 "$t/stat" 2>/dev/null) wchan $(cat "$t/wchan" 2>/dev/null)"
			done
			command -v gdb >/dev/null &&
				timeout 60 gdb -q -batch -p "$pid" -ex 'thread apply all bt 10' 2>/dev/null | grep -E '^(#|Thread)' | cut -c1-160 | head -60
		done
		for t in "$d"/*.log "$d"/log; do
			[ -f "$t" ] && { echo "--- $t (tail)"; tail -12 "$t"; }
		done
	done
}

# mig_two_hosts PREFIX NET: the two daemons of a migration test, A and B,
# each on its own network: namespaces joined by a veth pair (PREFIX-a,
# PREFIX-b; A at NET.1, B at NET.2) where this host can make them (root,
# iproute2), else both on this host's network with B on 127.0.0.1.  Sets
# SA, SB, NSA, NSB, NETNS, PORT, BADDR, BLISTEN (B's --listen host), URL,
# inA and inB (run a command in A's or B's network), the EXIT trap that
# also removes the namespaces, and B's self-signed certificate for BADDR
# ($TMP/cert.pem, key.pem) and a token ($TMP/token).  Prints a PASS or
# SKIP line for the namespaces.
mig_two_hosts() {
	local p=$1 net=$2
	SA=$TMP/a/shoald.sock SB=$TMP/b/shoald.sock
	NSA=shoal-$p-a-$$ NSB=shoal-$p-b-$$
	NETNS=0
	PORT=$((20000 + RANDOM % 20000))
	trap mig_cleanup EXIT
	if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip netns add "$NSA" 2>"$TMP/ns.err"; then
		if ip netns add "$NSB" && ip link add "$p-a" type veth peer name "$p-b" 2>>"$TMP/ns.err" &&
		   ip link set "$p-a" netns "$NSA" && ip link set "$p-b" netns "$NSB" &&
		   ip -n "$NSA" addr add "$net.1/24" dev "$p-a" && ip -n "$NSB" addr add "$net.2/24" dev "$p-b" &&
		   ip -n "$NSA" link set "$p-a" up && ip -n "$NSB" link set "$p-b" up &&
		   ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up; then
			NETNS=1
		else
			ip netns del "$NSA" 2>/dev/null; ip netns del "$NSB" 2>/dev/null
		fi
	fi
	if [ $NETNS = 1 ]; then
		BADDR=$net.2
		BLISTEN=0.0.0.0         # B's own namespace: A connects to the URL's host
		inA() { ip netns exec "$NSA" "$@"; }
		inB() { ip netns exec "$NSB" "$@"; }
		pass "two network namespaces joined by veth (A $net.1, B $net.2)"
	else
		BADDR=127.0.0.1
		BLISTEN=127.0.0.1
		inA() { "$@"; }
		inB() { "$@"; }
		skip "network namespaces" "cannot make them here ($(head -c 200 "$TMP/ns.err")): both daemons on this host's network, B on 127.0.0.1"
	fi
	URL=https://$BADDR:$PORT
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 1 \
		-subj /CN=shoal-b -addext "subjectAltName=IP:$BADDR" >/dev/null 2>&1
	head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/token"
}

# mig_daemon NAME NSFUNC VAR=VALUE ARGS...: a shoald on state directory
# $TMP/NAME (its socket there, its log $TMP/NAME.log) in A's or B's
# network (NSFUNC: inA or inB), with VAR=VALUE in its environment (a test
# hook, or any name to tell the daemons apart; several, space-separated),
# --allow-dir $BUILD and ARGS; waits until it answers.  Started again on
# the same NAME, it is the same daemon restarted (its log goes on).
mig_daemon() {
	local name=$1 in=$2 sock=$TMP/$1/shoald.sock builddir vars
	read -ra vars <<<"$3"
	shift 3
	builddir=$(cd "$BUILD" && pwd)
	mkdir -p "$TMP/$name"
	$in env "${vars[@]}" "$SHOALD" --state-dir "$TMP/$name" --allow-dir "$builddir" "$@" \
		>>"$TMP/$name.log" 2>&1 &
	for _ in $(seq 200); do
		curl -s --unix-socket "$sock" http://d/v1/version >/dev/null && return 0
		sleep 0.05
	done
	echo "shoald $name did not start:"; cat "$TMP/$name.log"; return 1
}

# The daemon at socket SOCK, as the migration scripts ask it:
# field SOCK NAME JQ: a field of its VM NAME; status_of SOCK NAME: the
# HTTP status of GET /v1/vms/NAME; events_of SOCK NAME: NAME's event types.
field() { curl -s --unix-socket "$1" "http://d/v1/vms/$2" | jq -r "$3"; }
status_of() { curl -s -o /dev/null -w '%{http_code}' --unix-socket "$1" "http://d/v1/vms/$2"; }
events_of() { curl -s --unix-socket "$1" "http://d/v1/events?vm=$2" | jq -c '[.events[].type]'; }

# mig_kill NAME: SIGKILL the shoald on state directory $TMP/NAME (its VMs,
# in their monitors' sessions, run on) and wait until it is gone;
# mig_daemon NAME ... starts it again.
mig_kill() {
	local pid
	pid=$(pgrep -f -- "--state-dir $TMP/$1 ")
	kill -9 $pid
	for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
}

mig_cleanup() {
	daemon_cleanup
	if [ "$NETNS" = 1 ]; then ip netns del "$NSA"; ip netns del "$NSB"; fi 2>/dev/null
}
