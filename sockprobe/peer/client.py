"""The controller's side of the control protocol: a probe run with --peer talks to a
`sockprobe serve` agent through a `Peer`."""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any

from sockprobe.lab import Deadline
from sockprobe.peer.protocol import VERSION, ProtocolError, recv_frame, send_frame
from sockprobe.status import Unsupported, UsageError, oserror_text


def parse_peer(text: str) -> tuple[str, int]:
    """'198.18.0.2:7380', '[fd00::2]:7380', 'host' (default port) -> (host, port)."""
    from sockprobe.peer.protocol import DEFAULT_PORT

    t = text.strip()
    if t.startswith("["):
        host, closed, rest = t[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise UsageError(f"--peer {text!r}: give [IPV6]:PORT, HOST:PORT or HOST")
        port_text = rest.removeprefix(":")
    elif t.count(":") == 1:
        host, _, port_text = t.partition(":")
    else:
        host, port_text = t, ""
    if not host:
        raise UsageError(f"--peer {text!r}: give HOST:PORT")
    if not port_text:
        return host, DEFAULT_PORT
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise UsageError(f"--peer {text!r}: the port must be 1..65535")
    return host, int(port_text)


class Peer:
    """A connected, authenticated agent. `host` is what its welcome said about it."""

    def __init__(self, address: str, token: str, deadline: Deadline) -> None:
        self.name = address
        self.deadline = deadline
        host, port = parse_peer(address)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UsageError(f"--peer {address}: unknown host ({exc})") from None
        family, _, _, _, sockaddr = infos[0]
        self.address = str(sockaddr[0])
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(deadline.timeout(10.0, "connecting to the peer agent"))
            self.sock.connect(sockaddr)
            send_frame(self.sock, {"type": "hello", "version": VERSION, "token": token})
            welcome = self._reply("the handshake")
        except OSError as exc:
            self.sock.close()
            raise Unsupported(
                f"cannot reach the peer agent at {address}: {oserror_text(exc)} (is "
                "`sockprobe serve` running there, and the port open?)"
            ) from None
        except BaseException:
            self.sock.close()
            raise
        if welcome.get("type") != "welcome":
            self.sock.close()
            raise UsageError(f"peer agent at {address} refused: {welcome.get('error')}")
        self.host: dict[str, Any] = welcome.get("host") or {}
        self.local = self.sock.getsockname()[0]

    def _reply(self, doing: str) -> dict[str, Any]:
        try:
            return recv_frame(self.sock, self.deadline.timeout(None, doing))
        except ProtocolError as exc:
            raise Unsupported(
                f"peer agent at {self.name} went away during {doing}: {exc}"
            ) from None
        except TimeoutError:
            self.deadline.check(doing)
            raise

    def start(self, step: str, **params: Any) -> dict[str, Any]:
        """Start a server half; its reply (the ports to connect to)."""
        send_frame(self.sock, {"type": "step", "step": step, "params": params})
        reply = self._reply(f"step {step}")
        if reply.get("type") != "ready":
            raise Unsupported(
                f"peer agent at {self.name} refused step {step}: {reply.get('error')}"
            )
        return reply

    def finish(self, step: str) -> dict[str, Any]:
        send_frame(self.sock, {"type": "finish"})
        reply = self._reply(f"the end of step {step}")
        if reply.get("type") != "result":
            raise Unsupported(
                f"peer agent at {self.name}: step {step} failed: {reply.get('error')}"
            )
        data = reply.get("data")
        return data if isinstance(data, dict) else {}

    def close(self) -> None:
        try:
            self.sock.settimeout(1.0)
            send_frame(self.sock, {"type": "bye"})
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
