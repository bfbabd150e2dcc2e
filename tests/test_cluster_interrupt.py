"""`cluster capture` ended by SIGTERM while the kubernetes client holds the signal's exception."""

from __future__ import annotations

import signal
import socket
import threading

import pytest

kubernetes = pytest.importorskip("kubernetes")

from commpath.capture.cluster import ClusterCapture, Host, Plan  # noqa: E402


def test_sigterm_inside_an_exec_is_not_taken_for_an_agents_error():
    """The client wraps a KeyboardInterrupt raised inside its websocket calls in ApiException(status=0): the
    poll of an agent (an exec) that meets SIGTERM still aborts the run instead of noting an error and going on."""
    silent = socket.create_server(("127.0.0.1", 0))          # accepts, never answers the websocket upgrade
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    config = kubernetes.client.Configuration()
    config.host = f"http://127.0.0.1:{silent.getsockname()[1]}"
    said: list[str] = []
    run = ClusterCapture(kubernetes.client.ApiClient(config), Plan(image="x", inventory_yaml="", duration=60),
                         say=said.append)
    previous = {s: signal.signal(s, run._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    main = threading.main_thread().ident
    timer = threading.Timer(1.0, signal.pthread_kill, (main, signal.SIGTERM))
    host = Host(node="node1", pod="commpath-agent-x")
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            run._update(host)                 # blocks in the websocket handshake until the signal
    finally:
        timer.cancel()
        for s, h in previous.items():
            signal.signal(s, h)
        silent.close()
        for c in accepted:
            c.close()
    assert accepted, "the exec never reached the loopback server"
    assert run.interrupted == "SIGTERM" and host.error is None and host.state == "pending"
