"""The embedded registry keeps its port across restarts: what makes a port count as taken."""

from __future__ import annotations

import socket

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
