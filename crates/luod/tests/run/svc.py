"""Small services for the `luoctl run` tests, with only Python's standard
library, speaking the systemd protocols by hand (socket activation from fd 3,
sd_notify datagrams to $NOTIFY_SOCKET).

    svc.py serve TAG REPORT   an HTTP server on the first passed listener
                              ("TAG" in every reply), READY=1, STATUS=serving TAG;
                              appends "start pid=P fds=N names=A:B" to REPORT
    svc.py fail               STATUS=, a line on stderr, exit 1 (never ready)
    svc.py hang               STATUS=, never READY=1
    svc.py store N REPORT     like serve, then stores N memfds named m0..mN-1, one
                              datagram each
    svc.py malformed REPORT   like serve, then sends malformed notifications and
                              appends "malformed sent" to REPORT
"""
import http.server
import os
import socket
import sys
import time


def notify(data, fds=()):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(addr)
        if fds:
            socket.send_fds(s, [data], list(fds))
        else:
            s.send(data)
    finally:
        s.close()


def record(report, line):
    with open(report, "a") as f:
        f.write(line + "\n")


def serve(tag, report, after_ready=None):
    n = int(os.environ.get("LISTEN_FDS", "0")) if os.environ.get("LISTEN_PID") == str(os.getpid()) else 0
    names = os.environ.get("LISTEN_FDNAMES", "")
    record(report, "start pid=%d fds=%d names=%s" % (os.getpid(), n, names))
    body = ("hello from %s\n" % tag).encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
    srv.socket.close()
    srv.socket = socket.socket(fileno=3) if n else socket.create_server(("127.0.0.1", 0))
    notify(("READY=1\nSTATUS=serving %s" % tag).encode())
    if after_ready:
        after_ready()
    srv.serve_forever()


def main():
    mode = sys.argv[1]
    if mode == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif mode == "fail":
        notify(b"STATUS=migrating the schema")
        print("fatal: cannot open /nonexistent/db: No such file or directory", file=sys.stderr, flush=True)
        sys.exit(1)
    elif mode == "hang":
        notify(b"STATUS=warming the cache")
        print("still loading: 1 of 1000000 entries", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)
    elif mode == "store":
        count, report = int(sys.argv[2]), sys.argv[3]

        def store():
            for i in range(count):
                fd = os.memfd_create("m%d" % i)
                os.write(fd, b"memfd %d" % i)
                notify(("FDSTORE=1\nFDNAME=m%d" % i).encode(), [fd])
                os.close(fd)
            record(report, "stored %d" % count)

        serve("store", report, store)
    elif mode == "malformed":
        report = sys.argv[2]

        def malformed():
            fd = os.memfd_create("evil")
            # An embedded NUL: systemd drops the whole datagram.
            notify(b"STATUS=evil-nul\0\nFDSTORE=1\nFDNAME=evilnul", [fd])
            # STATUS= that is not UTF-8.
            notify(b"STATUS=evil-\xff\xfe")
            # Descriptors without FDSTORE=1: not stored.
            notify(b"FDNAME=evilnostore", [fd])
            # Nothing at all, and lines without '='.
            notify(b"")
            notify(b"garbage\n\n\n=\nREADY")
            os.close(fd)
            # Then a well-formed one: once it shows, the others were read.
            notify(b"STATUS=malformed sent")
            record(report, "malformed sent")

        serve("malformed", report, malformed)
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
