"""The embedded registry keeps its port across restarts: what makes a port count as taken."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from pipeline.runtime import registry
from pipeline.runtime.registry import port_free


def test_connections_left_in_time_wait_do_not_take_the_port() -> None:
    # A server that closes first leaves its side of the connection in TIME_WAIT on its own port,
    # as the registry does for idle keep-alive connections when it is stopped.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # server side first → TIME_WAIT on `port`
        client.recv(1)  # the FIN arrived
        client.close()
        assert not port_free(port)  # still listening: taken
    assert port_free(port)  # only TIME_WAIT left: the registry can listen there again


def test_a_port_someone_listens_on_is_taken() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        assert not port_free(other.getsockname()[1])


# A stand-in for the registry binary (named like it, so the PID check recognises it): serves /v2/
# on the configured port; on SIGTERM it exits at once while a child it forked keeps the listening
# socket open a little longer, as an exiting process holds its sockets after its memory is gone.
FAKE_REGISTRY = """#!{python}
import http.server, os, re, signal, sys, time
port = int(re.search(r"addr: 127.0.0.1:(\\d+)", open(sys.argv[2]).read()).group(1))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", port), H)
def term(*_):
    if os.fork() == 0:
        time.sleep({linger})
        os._exit(0)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
server.serve_forever()
"""


def test_a_restart_waits_for_the_stopped_registry_to_release_its_port(tmp_path: Path) -> None:
    binary = tmp_path / "bin" / registry.BINARY
    binary.parent.mkdir()
    binary.write_text(FAKE_REGISTRY.format(python=sys.executable, linger=1.0))
    binary.chmod(0o755)
    sdir = tmp_path / "state"
    first = registry.ensure(sdir, binary=str(binary))
    try:
        assert registry.stop(sdir)
        again = registry.ensure(sdir, binary=str(binary))
        assert again.host == first.host  # pushed references stay valid across restarts
    finally:
        registry.stop(sdir)
