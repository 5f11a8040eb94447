#!/bin/bash
# bench/store_serve.sh - the image server's throughput (issue 14 item 3,
# docs/store.md "The image server"), against nginx serving the same bytes
# as a static file over the same mutual TLS, and against reading them
# locally.
#
# One image of SIZE MiB, disk-like (half text-ish blocks, a third random,
# the rest zeros; the generator of tests/system/store.sh), goes into a
# store; a CA, a server certificate and a client certificate are made
# with openssl (P-256).  Each round, in turn (the order rotates every
# round):
#   cat      cat IMAGE > /dev/null (the file is in the page cache)
#   get      shoal store get (rebuild from the store into a file)
#   nginx    curl https://.../img.raw -o /dev/null from nginx (sendfile
#            off under TLS; one worker; ssl_verify_client on)
#   raw      curl .../v1/images/img/raw -o /dev/null from shoal store serve
#   pull     shoal store pull into an empty store (the manifest, then one
#            request per chunk over one connection; fsyncs every 2 MiB)
# and prints each one's median MB/s (MB = 10^6 bytes of the image) over
# the rounds.  Figures, never checked; on a shared host only the ratios
# mean anything.
#
#   bench/store_serve.sh [-s SIZE_MIB] [-r ROUNDS]   (defaults: 256, 5)
#
# Needs openssl, curl, python3; nginx is optional (Debian's nginx-light;
# without it the nginx row is left out).  Loopback only.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SHOAL=$BUILD/shoal
SIZE=256
ROUNDS=5
while getopts s:r: o; do
	case $o in
	s) SIZE=$OPTARG ;;
	r) ROUNDS=$OPTARG ;;
	*) echo "usage: $0 [-s SIZE_MIB] [-r ROUNDS]" >&2; exit 64 ;;
	esac
done
[ -x "$SHOAL" ] || { echo "$SHOAL missing (make)" >&2; exit 1; }
W=$(mktemp -d /tmp/shoal-bench-serve.XXXXXX)
SPID=
NPID=
trap 'kill $SPID $NPID 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
cd "$W" || exit 1
chmod 755 "$W"	# nginx's worker runs as another user

mk() {
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key -out $1.csr -subj /CN=$1 2>/dev/null &&
		openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $1.pem -days 2 \
			-extfile <(echo "$2") 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
	-subj /CN=bench-ca 2>/dev/null && mk server "subjectAltName=IP:127.0.0.1" &&
	mk client "extendedKeyUsage=clientAuth" || exit 1

SIZE=$SIZE python3 - <<'EOF'
import os, random
r = random.Random(14)
size = int(os.environ['SIZE']) << 20
words = [bytes(r.choice(b'abcdefghijklmnopqrstuvwxyz') for _ in range(r.randint(2, 9))) for _ in range(3000)]
with open('img.raw', 'wb') as f:
	n = 0
	while n < size:
		k = r.random()
		if k < 0.5:
			b = b' '.join(r.choice(words) for _ in range(800))[:4096].ljust(4096, b'\n')
		elif k < 0.8:
			b = r.randbytes(4096)
		else:
			b = bytes(4096 * r.randint(1, 8))
		b = b[:size - n]
		f.write(b)
		n += len(b)
EOF
BYTES=$(stat -c %s img.raw)
"$SHOAL" store init st >/dev/null && "$SHOAL" store add st img.raw --name img >/dev/null &&
	"$SHOAL" store grant st client.pem img >/dev/null || exit 1

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
"$SHOAL" store serve st --listen 127.0.0.1:0 --cert server.pem --key server.key --client-ca ca.pem \
	>serve.out 2>serve.err &
SPID=$!
for _ in $(seq 100); do grep -q '^serving' serve.out 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/.*https:\/\/127.0.0.1:\([0-9]*\) .*/\1/p' serve.out)
[ -n "$PORT" ] || { cat serve.err; exit 1; }
got=$(curl -fsS --cacert ca.pem --cert client.pem --key client.key https://127.0.0.1:$PORT/v1/images/img/raw | cmp - img.raw && echo same)
[ "$got" = same ] || { echo "shoal store serve does not serve the image" >&2; exit 1; }

WAYS="cat get raw pull"
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
	NPORT=$(free_port)
	mkdir -p www && ln img.raw www/img.raw
	cat >nginx.conf <<EOF
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx.err;
events { worker_connections 64; }
http {
	access_log off;
	sendfile on;
	client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
	uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
	server {
		listen 127.0.0.1:$NPORT ssl;
		ssl_certificate $W/server.pem;
		ssl_certificate_key $W/server.key;
		ssl_client_certificate $W/ca.pem;
		ssl_verify_client on;
		root $W/www;
	}
}
EOF
	mkdir -p tmp
	"$NGINX" -c "$W/nginx.conf" -p "$W" &
	NPID=$!
	for _ in $(seq 100); do curl -fs -o /dev/null --cacert ca.pem --cert client.pem --key client.key \
		https://127.0.0.1:$NPORT/img.raw && break; sleep 0.1; done
	got=$(curl -fsS --cacert ca.pem --cert client.pem --key client.key https://127.0.0.1:$NPORT/img.raw | cmp - img.raw && echo same)
	[ "$got" = same ] || { echo "nginx does not serve the image: $(cat nginx.err)" >&2; exit 1; }
	WAYS="cat get nginx raw pull"
else
	echo "(nginx not installed: its row is left out; apt-get install nginx-light)"
fi

C="curl -fsS --cacert ca.pem --cert client.pem --key client.key -o /dev/null"
one() {		# one WAY: run it once, print seconds
	local t0 t1
	case $1 in
	pull) rm -rf st2 && "$SHOAL" store init st2 >/dev/null ;;
	get) rm -f out.raw ;;
	esac
	t0=$(date +%s.%N)
	case $1 in
	cat) cat img.raw >/dev/null ;;
	get) "$SHOAL" store get st img out.raw ;;
	nginx) $C https://127.0.0.1:$NPORT/img.raw ;;
	raw) $C https://127.0.0.1:$PORT/v1/images/img/raw ;;
	pull) "$SHOAL" store pull st2 img --from https://127.0.0.1:$PORT --cert client.pem --key client.key \
		--ca ca.pem >/dev/null ;;
	esac || { echo "$1 failed" >&2; exit 1; }
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}
cat img.raw >/dev/null
declare -A T
set -- $WAYS
for r in $(seq "$ROUNDS"); do
	for w in "$@"; do
		T[$w]="${T[$w]:-} $(one $w)"
	done
	set -- "${@:2}" "$1"	# rotate the order
done
chunks=$("$SHOAL" store ls st --output json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['chunks'])")
echo "image: $BYTES bytes, $chunks chunks; $ROUNDS rounds; median MB/s (10^6 bytes of the image per second)"
for w in $WAYS; do
	python3 - "$w" "$BYTES" ${T[$w]} <<'EOF'
import statistics, sys
w, size, ts = sys.argv[1], int(sys.argv[2]), [float(x) for x in sys.argv[3:]]
m = statistics.median(ts)
print(f"{w:6s} {size / m / 1e6:9.1f} MB/s   (median {m:.3f} s of {len(ts)}: {' '.join(f'{t:.3f}' for t in ts)})")
EOF
done
