# tests/system/store_lib.bash - sourced by the image-store tests (after
# lib.sh): keys and certificates for `shoal store serve` and its clients,
# made in the current directory with openssl.  Not a test itself.
#
#   store_mk NAME EXT    a P-256 key NAME.key and a certificate NAME.pem
#                        signed by the CA (ca.pem, ca.key), with the
#                        openssl extension line EXT
#   store_certs [NAME]...  the CA, "server" (for IP 127.0.0.1), and a
#                        client certificate for each NAME (default: c1);
#                        0, or 1 when openssl fails
#   store_serve DIR      `shoal store serve DIR` on loopback with them (below)

store_mk() {
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
		-subj "/CN=$1" 2>/dev/null &&
		openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 \
			-extfile <(echo "$2") 2>/dev/null
}

store_certs() {
	local c
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
		-days 2 -subj /CN=shoal-test-ca 2>/dev/null &&
		store_mk server "subjectAltName=IP:127.0.0.1" || return 1
	for c in "${@:-c1}"; do
		store_mk "$c" "extendedKeyUsage=clientAuth" || return 1
	done
}

# store_serve DIR: `shoal store serve DIR` on a free loopback port with the
# certificates above, in the background (its pid in SPID, its port in
# PORT; serve.out and serve.err in the current directory); 0 once it
# serves, 1 (serve.err says why) when it does not.
store_serve() {
	"$SHOAL" store serve "$1" --listen 127.0.0.1:0 --cert server.pem --key server.key --client-ca ca.pem \
		>serve.out 2>serve.err &
	SPID=$!
	for _ in $(seq 100); do grep -q '^serving' serve.out 2>/dev/null && break; sleep 0.1; done
	PORT=$(sed -n 's/.*https:\/\/127.0.0.1:\([0-9]*\) .*/\1/p' serve.out)
	[ -n "$PORT" ]
}
