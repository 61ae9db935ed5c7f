"""A fork server for the `mmcli` commands of test_docs.py: torch and the other heavy
libraries are imported once, in this process, and each command runs in a process forked
from it, instead of paying about 2.5 s of start-up each (the docs' examples run about 80
commands).

    python mmcli_forkserver.py SOCKET SCRIPT    # prints "ready" when it listens

`CLIENT` (written next to the socket by `write_client`) is what the examples call for
`mmcli`: it sends its arguments, working folder and environment, and passes its own
stdin, stdout and stderr (the file descriptors themselves), so pipes, redirections and
`$?` behave as with the real command. The forked process takes them over, sets
sys.argv to SCRIPT (the installed `mmcli` script) and the arguments, and calls
`mmcli.cli.main()` as that script does, then ends as Python ends (threads joined, an
error printed, atexit handlers run, output flushed, the same exit code) but skips the
teardown of every module; the server sends the exit status back to the client, which
exits with it. Only third-party libraries and `mmcli.cli` (which the real script imports
first) are imported beforehand: mmcli's own modules, and any registration they make,
are imported by each command as in a fresh process. The server stops when its stdin
closes.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys

PRELOAD = ("numpy", "PIL.Image", "soundfile", "yaml", "rich.console", "rich.progress", "rich.table", "scipy.stats",
           "scipy.signal", "sklearn.metrics", "matplotlib", "librosa", "librosa.feature", "librosa.filters",
           "librosa.core.audio", "tokenizers", "safetensors.torch", "torch", "torchvision",
           "torchvision.transforms.v2", "mmcli.cli")

CLIENT = """#!{python} -IS
import json, os, signal, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect({socket!r})
request = json.dumps({{"args": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(sock, [len(request).to_bytes(8, "big")], [0, 1, 2])
sock.sendall(request)
status = b""
while len(status) < 4:
    chunk = sock.recv(4 - len(status))
    if not chunk:
        sys.exit("mmcli fork server: no exit status came back")
    status += chunk
code = int.from_bytes(status, "big", signed=True)
if code < 0:  # killed by a signal: end the same way, so the shell sees 128 + N
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    code = 128 - code
sys.exit(code)
"""


def write_client(path: str, socket_path: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(CLIENT.format(python=sys.executable, socket=socket_path))
    os.chmod(path, 0o755)
    return path


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, 8, 3)
    try:
        while len(head) < 8:
            chunk = conn.recv(8 - len(head))
            if not chunk:
                raise ConnectionError("the client went away")
            head += chunk
        size, data = int.from_bytes(head, "big"), b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the client went away")
            data += chunk
        if len(fds) != 3:
            raise ConnectionError("the client sent no stdin, stdout and stderr")
        return json.loads(data), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(os.waitstatus_to_exitcode(status).to_bytes(4, "big", signed=True))
            except OSError:
                pass
            conn.close()


def serve(socket_path: str) -> tuple[dict, list[int]] | None:
    """Answer clients until stdin closes (returns None); in a forked child, return its request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    os.write(1, b"ready\n")
    waiting: dict[int, socket.socket] = {}
    while True:
        readable, _, _ = select.select([listener, 0], [], [], 0.02)
        if 0 in readable and not os.read(0, 4096):
            listener.close()
            return None
        if listener in readable:
            conn, _ = listener.accept()
            conn.settimeout(30)
            try:
                request, fds = _read_request(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in waiting.values():
                    other.close()
                conn.close()
                return request, fds
            for fd in fds:
                os.close(fd)
            waiting[pid] = conn
        _reap(waiting)


def become(request: dict, fds: list[int], script: str) -> None:
    """Turn this forked process into `mmcli ARGS` started by the client."""
    import random

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [script, *request["args"]]
    sys.modules["__main__"].__file__ = script  # what multiprocessing's spawn re-imports, as for the real script
    random.seed()  # a fresh process draws new seeds; a forked one would share the server's
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


EXIT = {"code": 1}  # an uncaught exception ends Python with 1


def _end_now() -> None:
    """The last exit handler: the interpreter has joined the threads, printed any error and
    run every other exit handler; it would now tear down torch's objects one by one, about
    1 s in a forked process (each page it touches is copied), to no end. Flush and go."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT["code"])


def _exit_code(code) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1  # Python prints a message and ends with 1


if __name__ == "__main__":
    import atexit

    atexit.register(_end_now)  # first registered, so run last
    SOCKET, SCRIPT = sys.argv[1], sys.argv[2]
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:  # an optional library that is not installed: the command imports what it can
            pass
    job = serve(SOCKET)
    if job is None:
        EXIT["code"] = 0
        sys.exit(0)
    become(*job, SCRIPT)
    del job
    from mmcli.cli import main

    try:
        main()
        EXIT["code"] = 0
    except SystemExit as exc:
        EXIT["code"] = _exit_code(exc.code)
        raise
    except KeyboardInterrupt:
        EXIT["code"] = 130
        raise
