"""A small blocking HTTP/1.0 server in the shape of many that are not
written in Go: it takes the listening socket on fd 3 with socket(fileno=3)
and calls a plain, blocking accept(). It says READY=1 itself, and answers
each request with who served it.

    pyserver.py serve       one process
    pyserver.py prefork N   a master that forks N workers, which accept
"""
import os
import signal
import socket
import sys
import fcntl


def notify(msg):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(msg.encode(), path)
    finally:
        s.close()


def serve(ls, role):
    while True:
        # A blocking accept: on a socket left with O_NONBLOCK it raises
        # BlockingIOError as soon as nobody is waiting, and the server dies.
        c, _ = ls.accept()
        try:
            c.recv(65536)
            nonblock = 1 if fcntl.fcntl(ls.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK else 0
            body = "role=%s pid=%d ppid=%d gen=%s uid=%d nonblock=%d\n" % (
                role, os.getpid(), os.getppid(), os.environ.get("HITLESS_GENERATION"), os.getuid(), nonblock)
            c.sendall(("HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)).encode())
        finally:
            c.close()


def main():
    ls = socket.socket(fileno=3)
    if sys.argv[1] == "serve":
        notify("READY=1")
        serve(ls, "server")
    workers = []
    for _ in range(int(sys.argv[2])):
        pid = os.fork()
        if pid == 0:
            serve(ls, "worker")
        workers.append(pid)

    def stop(signum, frame):
        for w in workers:
            try:
                os.kill(w, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for w in workers:
            os.waitpid(w, 0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    notify("READY=1")
    while True:
        signal.pause()


main()
