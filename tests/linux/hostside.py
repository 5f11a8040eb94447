#!/usr/bin/env python3
"""hostside.py - the host's end of the Linux guest tests (tests/system/slow_linux_*.sh).

Each subcommand does one bounded exchange with a guest and prints one line,
"hostside: ...", saying what moved; the exit status says whether it worked.
Every socket has a timeout (--timeout, default 120 s), so a guest that never
answers ends in a failure, not a hang.

  tcp-recv ADDR PORT OUT          accept one TCP connection, save what it sends
                                  until it closes
  tcp-send ADDR PORT FILE         connect (retrying while refused), send FILE,
                                  close the sending half, wait for the peer's close
  vsock-echo-server PATH OUT      Shoal's vsock host side for guest-initiated
                                  connections: listen on the Unix socket PATH
                                  (PATH is the --vsock socket plus "_PORT"),
                                  accept one connection, echo every byte back
                                  and save it to OUT, until the guest closes
  vsock-connect PATH PORT FILE    host-initiated: connect to the --vsock socket,
                                  "CONNECT PORT\\n", expect "OK ...\\n" (asking
                                  again while the guest is not listening), send FILE
                                  while reading the echo; exit 0 if it all came
                                  back as sent
  control PATH JSON               one request on a VMM control socket
                                  (docs/vmm-control.md); prints the reply line
  type PATH TEXT                  attach to a VMM's serial console through its
                                  control socket (console-attach, force) and
                                  type TEXT into it, a key every 3 ms ("\\r"
                                  in TEXT is Enter)
"""
import argparse
import json
import os
import select
import socket
import sys
import time


def say(msg):
    print("hostside: " + msg, flush=True)


def read_all(sock, out):
    n = 0
    while True:
        d = sock.recv(65536)
        if not d:
            return n
        out.write(d)
        n += len(d)


def tcp_recv(a):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.addr, a.port))
    srv.listen(1)
    srv.settimeout(a.timeout)
    conn, peer = srv.accept()
    conn.settimeout(a.timeout)
    with open(a.out, "wb") as f:
        n = read_all(conn, f)
    conn.close()
    say("tcp-recv: %d bytes from %s" % (n, peer[0]))
    return 0


def connect_retrying(family, addr, deadline):
    while True:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(max(1.0, deadline - time.time()))
        try:
            s.connect(addr)
            return s
        except (ConnectionRefusedError, FileNotFoundError, socket.timeout, OSError):
            s.close()
            if time.time() >= deadline:
                raise
            time.sleep(0.2)


def tcp_send(a):
    with open(a.file, "rb") as f:
        data = f.read()
    s = connect_retrying(socket.AF_INET, (a.addr, a.port), time.time() + a.timeout)
    s.settimeout(a.timeout)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    # The guest's nc exits (closing its end) once it has read everything.
    while s.recv(65536):
        pass
    s.close()
    say("tcp-send: %d bytes to %s:%d" % (len(data), a.addr, a.port))
    return 0


def vsock_echo_server(a):
    try:
        os.unlink(a.path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.path)
    srv.listen(1)
    srv.settimeout(a.timeout)
    conn, _ = srv.accept()
    conn.settimeout(a.timeout)
    n = 0
    with open(a.out, "wb") as f:
        while True:
            d = conn.recv(65536)
            if not d:
                break
            f.write(d)
            conn.sendall(d)
            n += len(d)
    conn.close()
    say("vsock-echo-server: echoed %d bytes" % n)
    return 0


def vsock_handshake(path, port, deadline):
    """Connect to Shoal's vsock socket and ask for PORT; retried while the
    device closes the connection (the guest is not listening yet)."""
    while True:
        s = connect_retrying(socket.AF_UNIX, path, deadline)
        s.settimeout(max(1.0, deadline - time.time()))
        s.sendall(b"CONNECT %d\n" % port)
        line = b""
        while not line.endswith(b"\n") and len(line) < 64:
            d = s.recv(1)
            if not d:
                break
            line += d
        if line.startswith(b"OK ") or time.time() >= deadline:
            return s, line
        s.close()
        time.sleep(0.2)


def vsock_connect(a):
    with open(a.file, "rb") as f:
        data = f.read()
    s, line = vsock_handshake(a.path, a.port, time.time() + a.timeout)
    if not line.startswith(b"OK "):
        say("vsock-connect: no OK from the device: %r" % line)
        return 1
    # Interleave sending and receiving: the guest echoes as it reads.
    s.setblocking(False)
    sent, back, deadline = 0, bytearray(), time.time() + a.timeout
    while len(back) < len(data) and time.time() < deadline:
        w = [s] if sent < len(data) else []
        r, w, _ = select.select([s], w, [], 1.0)
        if w:
            try:
                sent += s.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
        if r:
            try:
                d = s.recv(65536)
            except BlockingIOError:
                continue
            if not d:
                break
            back += d
    s.close()
    ok = bytes(back) == data
    say("vsock-connect: %s, sent %d, received %d, %s"
        % (line.decode().strip(), sent, len(back), "match" if ok else "MISMATCH"))
    return 0 if ok else 1


def request(path, line, timeout):
    """One request line to a VMM's control socket; its reply line (bytes)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(line.encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        d = s.recv(65536)
        if not d:
            break
        reply += d
    s.close()
    return reply


def control(a):
    reply = request(a.path, a.json, a.timeout)
    sys.stdout.write(reply.decode())
    return 0 if reply else 1


def type_text(a):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    s.connect(a.path)
    s.sendall(b'{"cmd": "console-attach", "force": true}\n')
    reply = b""
    while not reply.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            break
        reply += d
    try:
        ok = json.loads(reply.decode()).get("ok") is True
    except ValueError:
        ok = False
    if not ok:
        say("type: console-attach refused: %r" % reply)
        return 1
    text = a.text.replace("\\r", "\r").encode()
    for ch in text:
        s.sendall(bytes([ch]))
        time.sleep(0.003)
    s.close()
    say("type: %d bytes typed" % len(text))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--timeout", type=float, default=120.0)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("tcp-recv")
    c.add_argument("addr"); c.add_argument("port", type=int); c.add_argument("out")
    c = sub.add_parser("tcp-send")
    c.add_argument("addr"); c.add_argument("port", type=int); c.add_argument("file")
    c = sub.add_parser("vsock-echo-server")
    c.add_argument("path"); c.add_argument("out")
    c = sub.add_parser("vsock-connect")
    c.add_argument("path"); c.add_argument("port", type=int); c.add_argument("file")
    c = sub.add_parser("control")
    c.add_argument("path"); c.add_argument("json")
    c = sub.add_parser("type")
    c.add_argument("path"); c.add_argument("text")
    a = p.parse_args()
    fn = {"tcp-recv": tcp_recv, "tcp-send": tcp_send, "vsock-echo-server": vsock_echo_server, "type": type_text,
          "vsock-connect": vsock_connect, "control": control}[a.cmd]
    try:
        return fn(a)
    except (OSError, socket.timeout) as e:
        say("%s: %s" % (a.cmd, e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
