"""--max-connections-per-ip: connections over the limit from one address are closed at
once (Kafka and MQTT listeners share the count), counted, and a closed connection frees
its place."""

import socket
import struct

from conftest import Sluice, wait_for
from test_malformed import closed_by_server, connect, frame, header, read_frame


def api_versions(s, correlation):
    s.sendall(frame(header(18, 0, correlation)))
    resp = read_frame(s)
    assert resp is not None and struct.unpack(">i", resp[:4])[0] == correlation


def test_connections_over_the_limit_are_closed(tmp_dir):
    server = Sluice(tmp_dir / "data", ["--max-connections-per-ip", "3"]).start()
    held = [connect(server) for _ in range(3)]
    for i, s in enumerate(held):
        api_versions(s, i)
    extra = connect(server)
    assert closed_by_server(extra), "a fourth connection from 127.0.0.1 is closed"
    assert server.metric('sluice_connections_refused_total{listener="PLAINTEXT",reason="per_ip_limit"}') == 1
    # The MQTT listener counts against the same limit.
    host, port = server.mqtt.rsplit(":", 1)
    mqtt = socket.create_connection((host, int(port)), timeout=10)
    assert closed_by_server(mqtt)
    assert server.metric('sluice_connections_refused_total{listener="mqtt",reason="per_ip_limit"}') == 1
    # Closing one frees its place (the server notices the close asynchronously).
    held.pop().close()

    def admitted():
        s = connect(server)
        try:
            api_versions(s, 99)
            held.append(s)
            return True
        except (AssertionError, OSError):
            s.close()
            return False

    wait_for("a freed place", admitted, 10)
    for s in held:
        s.close()
    server.stop()
