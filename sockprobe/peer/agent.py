"""`sockprobe serve`: the agent that runs the server halves of experiments for a probe
on another host (iperf3 -s and netserver do the same for throughput).

Safety, because an agent listens for strangers:
- it binds 127.0.0.1 unless --bind names another local address; a wildcard only with
  --allow-wildcard, and then it says so;
- a controller must present the token (printed at start, or given with --token),
  compared in constant time; one controller at a time (a second is told "busy");
- it runs only the named server halves of sockprobe.peer.steps, with validated
  parameters, bounded in connections, bytes and time, and accepts data connections only
  from the controller's own address;
- every step's sockets and threads are closed when the step ends, fails, or the
  controller vanishes; `--once` exits after one controller, `--idle-timeout` after a
  quiet period.
"""

from __future__ import annotations

import hmac
import ipaddress
import platform
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sockprobe.lab import Host, refuse_non_unicast, resolve_host
from sockprobe.peer.protocol import VERSION, ProtocolError, recv_frame, send_frame
from sockprobe.peer.steps import STEPS, ServerHalf, StepError, load_steps, validate
from sockprobe.status import Unsupported, UsageError, oserror_text

#: The settings a controller is told about the agent's kernel (they explain the
#: agent's half of what the probe measured).
HOST_SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.rmem_max",
    "net.ipv4.ip_no_pmtu_disc",
    "net.ipv4.tcp_timestamps",
)
#: Seconds a new controller waits for the previous session's cleanup before "busy".
BUSY_GRACE = 1.0
#: Connections that may be saying hello at once (each for at most HELLO_SECONDS).
MAX_HANDSHAKES = 8
#: Seconds a controller has to say hello, and to send each next request.
HELLO_SECONDS = 5.0
REQUEST_SECONDS = 120.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class ServeParams:
    bind: str = "127.0.0.1"
    port: int = 7380
    token: str | None = None
    once: bool = False
    idle_timeout: float = 600.0
    allow_wildcard: bool = False


def host_facts() -> dict[str, Any]:
    from sockprobe import kernel

    return {
        "platform": sys.platform,
        "kernel_release": platform.release(),
        "python": platform.python_version(),
        "sysctls": {n: kernel.sysctl(n) for n in HOST_SYSCTLS},
    }


def bind_agent(p: ServeParams) -> socket.socket:
    """The control listener. UsageError for a wildcard without --allow-wildcard or an
    address that is not this machine's; Unsupported when the port is taken."""
    try:
        ip = ipaddress.ip_address(p.bind.strip("[]"))
    except ValueError:
        host = resolve_host(p.bind)
    else:
        if ip.is_unspecified and not p.allow_wildcard:
            raise UsageError(
                f"--bind {p.bind}: a wildcard listens on every interface; name one local "
                "address, or add --allow-wildcard to mean it"
            )
        if not ip.is_unspecified:
            refuse_non_unicast(p.bind, ip, "--bind")
        host = Host(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))
    s = socket.socket(host.family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host.address, p.port))
        s.listen(4)
    except OSError as exc:
        s.close()
        import errno

        if exc.errno == errno.EADDRINUSE:
            raise Unsupported(
                f"port {p.port} on {host.address} is taken ({oserror_text(exc)}); see who "
                f"holds it with `sockprobe port {p.port}`, or choose another with --port"
            ) from None
        raise UsageError(f"--bind {p.bind}: cannot listen there ({oserror_text(exc)})") from None
    return s


class Agent:
    def __init__(self, p: ServeParams, listener: socket.socket, log: Log) -> None:
        load_steps()
        self.p = p
        self.lst = listener
        self.log = log
        self.token = p.token or secrets.token_urlsafe(12)
        self.bind_host = Host(listener.family, listener.getsockname()[0])
        self.busy = threading.Lock()
        self.sessions: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.last_activity = time.monotonic()
        self.served = 0
        #: Every connection a session thread is handling (shut down at exit to wake it).
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()

    # -- the accept loop -------------------------------------------------------------
    def serve_forever(self) -> int:
        try:
            while not self.stopping.is_set():
                if self.p.once and self.served and not self.busy.locked():
                    return 0
                idle = time.monotonic() - self.last_activity
                if not self.busy.locked() and idle >= self.p.idle_timeout:
                    self.log(f"idle for {self.p.idle_timeout:g} s: exiting")
                    return 0
                self.lst.settimeout(0.2)
                try:
                    conn, addr = self.lst.accept()
                except TimeoutError:
                    continue
                self.sessions = [t for t in self.sessions if t.is_alive()]
                # The controller lock is taken only after a valid hello (in the session
                # thread), so a silent stranger cannot lock the real controller out; the
                # handshakes themselves are bounded in number and in time.
                if len(self.sessions) >= MAX_HANDSHAKES:
                    self._refuse(conn, addr, "too many connections waiting to say hello")
                    continue
                t = threading.Thread(
                    target=self._session, args=(conn, addr), name="sockprobe-serve", daemon=True
                )
                self.sessions.append(t)
                t.start()
        finally:
            self.stopping.set()
            with self.conns_lock:
                for c in self.conns:
                    try:
                        c.shutdown(socket.SHUT_RDWR)  # wakes the session's recv
                    except OSError:
                        pass
            for t in self.sessions:
                t.join(5.0)
            self.lst.close()
        return 0

    def _refuse(self, conn: socket.socket, addr: Any, why: str) -> None:
        self.log(f"{addr[0]}: refused: {why}")
        try:
            conn.settimeout(1.0)
            send_frame(conn, {"type": "error", "error": why})
        except OSError:
            pass
        finally:
            conn.close()

    # -- one controller ----------------------------------------------------------------
    def _session(self, conn: socket.socket, addr: Any) -> None:
        peer = str(addr[0])
        half: ServerHalf | None = None
        locked = False
        with self.conns_lock:
            self.conns.add(conn)
        try:
            hello = recv_frame(conn, HELLO_SECONDS)
            if hello.get("type") != "hello":
                raise ProtocolError("the first frame must be a hello")
            if hello.get("version") != VERSION:
                raise ProtocolError(
                    f"version {hello.get('version')!r} not spoken here (this agent speaks "
                    f"{VERSION})"
                )
            token = hello.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), self.token.encode()
            ):
                raise ProtocolError("wrong token")
            # A moment's grace: a controller that reconnects right after its last
            # session ended must not meet that session's last cleanup as "busy".
            if not self.busy.acquire(timeout=BUSY_GRACE):
                raise ProtocolError("busy: another controller is active")
            locked = True
            self.last_activity = time.monotonic()
            send_frame(conn, {"type": "welcome", "version": VERSION, "host": host_facts()})
            self.log(f"{peer}: controller connected")
            while not self.stopping.is_set():
                req = recv_frame(conn, REQUEST_SECONDS)
                self.last_activity = time.monotonic()
                kind = req["type"]
                if kind == "bye":
                    break
                try:
                    if kind == "step":
                        if half is not None:
                            raise StepError("a step is running: finish it first")
                        name = req.get("step")
                        cls = STEPS.get(name) if isinstance(name, str) else None
                        if cls is None:
                            raise StepError(f"unknown step {name!r}; known: {sorted(STEPS)}")
                        params = validate(req.get("params", {}), cls.rules)
                        half = cls(self.bind_host, peer, params)
                        reply = half.start()
                        self.log(f"{peer}: step {cls.name} started")
                        send_frame(conn, {"type": "ready", **reply})
                    elif kind == "finish":
                        if half is None:
                            raise StepError("no step is running")
                        data = half.finish()
                        half.close()
                        half = None
                        send_frame(conn, {"type": "result", "data": data})
                    else:
                        raise StepError(f"unknown request type {kind!r}")
                except StepError as exc:
                    self.log(f"{peer}: {exc}")
                    if half is not None:
                        half.close()
                        half = None
                    send_frame(conn, {"type": "error", "error": str(exc)})
                except OSError as exc:
                    # The step's own sockets failed (the controller's data connection
                    # vanished, a bound was hit): the step ends, the session goes on.
                    self.log(f"{peer}: step failed: {oserror_text(exc)}")
                    if half is not None:
                        half.close()
                        half = None
                    send_frame(conn, {"type": "error", "error": f"step failed: {exc}"})
        except ProtocolError as exc:
            self.log(f"{peer}: {exc}")
            try:
                send_frame(conn, {"type": "error", "error": str(exc)})
            except OSError:
                pass
        except (OSError, TimeoutError) as exc:
            self.log(f"{peer}: controller gone ({type(exc).__name__}); step cleaned up")
        finally:
            if half is not None:
                half.close()
            with self.conns_lock:
                self.conns.discard(conn)
            conn.close()
            if locked:
                self.served += 1
                self.last_activity = time.monotonic()
                self.busy.release()
                self.log(f"{peer}: session ended")


def serve(p: ServeParams, log: Log, announce: Callable[[str], None]) -> int:
    lst = bind_agent(p)
    agent = Agent(p, lst, log)
    addr = lst.getsockname()
    shown = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
    if ipaddress.ip_address(addr[0]).is_unspecified:
        log("warning: listening on every interface (--allow-wildcard)")
    announce(
        f"sockprobe serve: listening on {shown}; token {agent.token}\n"
        f"  run a probe against it: sockprobe nagle --peer {shown} --token {agent.token}\n"
    )
    return agent.serve_forever()
