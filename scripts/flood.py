#!/usr/bin/env python3
"""Memory and liveness under a flood of slow, unauthenticated requests.

Measures a running `klubz-ledger serve` (its pid and address given):
opens N connections that each announce a webhook body of 1 MiB - 1 with a
well-formed signature header, send part of it and stall; meanwhile asks
/health on a fresh connection; then closes the flood and measures again.
Prints the server's resident memory (VmRSS) before, during and after, and
the /health answers, as JSON. Used for docs/RELIABILITY.md; not a test.

  python3 scripts/flood.py --pid PID --addr 127.0.0.1:8787 --connections 2000
"""
import argparse
import json
import socket
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def health(host, port):
    started = time.time()
    try:
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(f"GET /health HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        status = data.split(b"\r\n", 1)[0].decode(errors="replace")
        return f"{status} after {time.time() - started:.2f} s"
    except OSError as e:
        return f"error: {e} after {time.time() - started:.2f} s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--addr", default="127.0.0.1:8787")
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--sent", type=int, default=512 * 1024, help="body bytes each sends before stalling")
    ap.add_argument("--partial-headers", action="store_true",
                    help="send half a request head instead (slowloris)")
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    port = int(port)
    length = 1024 * 1024 - 1
    head = (
        f"POST /api/payments/webhook HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"stripe-signature: t={int(time.time())},v1={'a' * 64}\r\ncontent-length: {length}\r\n\r\n"
    ).encode()
    part = b"{" + b" " * (args.sent - 1)
    if args.partial_headers:
        head, part = f"POST /api/payments/webhook HTTP/1.1\r\nhost: {host}\r\n".encode(), b""
    report = {"connections": args.connections, "bodyBytesSentEach": args.sent,
              "rssKiBBefore": rss_kib(args.pid), "healthBefore": health(host, port)}
    socks, refused = [], 0
    for _ in range(args.connections):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.setblocking(False)
            try:
                s.send(head + part)
            except BlockingIOError:
                pass
            socks.append(s)
        except OSError:
            refused += 1
    time.sleep(2)
    report["opened"] = len(socks)
    report["refusedToOpen"] = refused
    report["rssKiBDuring"] = rss_kib(args.pid)
    report["healthDuring"] = health(host, port)
    for s in socks:
        s.close()
    time.sleep(3)
    report["rssKiBAfter"] = rss_kib(args.pid)
    report["healthAfter"] = health(host, port)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
