"""`sockprobe port` options, and the target as users paste it.

Imported by the CLI to build its parser, so it stays light: stdlib, sockprobe.options,
sockprobe.probes and sockprobe.status only. Parsing the target here means a bad one is a
one-line UsageError (exit 2) before anything touches a socket.

Target forms (what error messages and other tools print):

    8080  :8080  tcp/8080  8080/udp  http  http/udp  127.0.0.1:8080  [::1]:8080
    [::]:8080  0.0.0.0:8080  localhost:8080  /run/app.sock  ./app.sock  @abstract

An address in the target sets the trial address (what `--check` binds); a bare port
checks the wildcard address of the `--host` family (0.0.0.0, or [::] for an IPv6 --host).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from sockprobe.options import option
from sockprobe.probes import ProbeParams, require
from sockprobe.status import UsageError

#: sun_path is 108 bytes and a filesystem name needs its terminating NUL (unix(7)).
UNIX_PATH_MAX = 107
#: `--wait` with no value, or `--wait 0`: wait until --deadline runs out.
WAIT_UNTIL_DEADLINE = 0.0
SIGNALS = ("TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2")
#: Environment variable that forces the psutil holder lookup (the off-Linux path) on Linux.
FALLBACK_ENV = "SOCKPROBE_PORT_FALLBACK"


class Target(NamedTuple):
    """The parsed target: a port (with protocols and an optional address) or a UNIX name."""

    port: int = 0
    #: "tcp", "udp", or "" when the target did not say.
    proto: str = ""
    #: The address given in the target ("127.0.0.1", "::", "::1"), "" if none.
    address: str = ""
    #: A UNIX path or "@name"; "" for a port.
    unix: str = ""
    #: How the target named the port: "8080", "http" (a service name), ...
    service: str = ""

    @property
    def is_port(self) -> bool:
        return not self.unix


def _port_number(text: str, proto: str, whole: str) -> tuple[int, str]:
    """(port, service name or "") for "8080" or "http"."""
    if text.isascii() and text.isdigit():
        # int() of thousands of digits is slow and, from Python 3.11, an error: check the
        # length first so that a 5000-digit argument is one line, not a traceback.
        require(
            len(text) <= 5,
            f"port {text[:12]}{'...' if len(text) > 12 else ''} is out of "
            "range: ports are 1..65535",
        )
        n = int(text)
        require(
            n != 0,
            "port 0 is not a port anything holds: bind() to port 0 asks the kernel for any "
            "free port; give 1..65535",
        )
        require(n <= 65535, f"port {n} is out of range: ports are 1..65535")
        return n, ""
    require(
        bool(text)
        and text.isascii()
        and text.replace("-", "").replace("_", "").isalnum()
        and len(text) <= 64,
        f"{whole[:80]!r} is neither a port (1..65535), a service name (http), "
        "ADDRESS:PORT, nor a UNIX socket path (one with a '/', or @name)",
    )
    # getservbyname(3) reads /etc/services (or NSS): "http" -> 80.
    for p in (proto,) if proto else ("tcp", "udp"):
        try:
            return socket.getservbyname(text, p), text
        except OSError:
            continue
    raise UsageError(
        f"{text!r} is not a port number and not a service name in /etc/services"
        + (f" for {proto}" if proto else "")
    )


def _address(text: str, whole: str) -> str:
    """The address part of ADDRESS:PORT: a literal, or a name resolved once."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(text, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"{whole[:80]!r}: unknown host {text!r} ({exc})") from None
    # Prefer IPv4 for a name with both (localhost): a server told "localhost" usually
    # binds the first getaddrinfo answer, which glibc orders IPv4 first for localhost.
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    return str(infos[0][4][0])


def parse_target(target: str) -> Target:
    """The target as pasted; UsageError (one line, exit 2) for anything else."""
    t = _from_url(target.strip(), target)
    require(t != "", "give a PORT (1..65535), ADDRESS:PORT, a service name or a UNIX socket PATH")
    if ("/" in t and not _proto_form(t)) or t.startswith("@"):
        size = len(os.fsencode(t))
        require(
            size <= UNIX_PATH_MAX,
            f"{t[:60]!r}{'...' if len(t) > 60 else ''} is {size} bytes; AF_UNIX addresses "
            f"hold at most {UNIX_PATH_MAX} (unix(7)), so no socket can be bound there",
        )
        return Target(unix=t)
    proto = ""
    low = t.lower()
    for p in ("tcp", "udp"):
        if low.startswith(p + "/"):
            proto, t = p, t[4:]
        elif low.endswith("/" + p):
            proto, t = p, t[:-4]
    address = ""
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        require(sep == "]" and rest.startswith(":"), f"{target[:80]!r}: expected [ADDRESS]:PORT")
        address, t = _address(host, target), rest[1:]
        require(":" in address, f"{target[:80]!r}: brackets are for IPv6 addresses")
    elif t.count(":") == 1:
        host, _, t = t.partition(":")
        if host and host != "*":
            address = _address(host, target)
    elif t.count(":") > 1:
        raise UsageError(f"{target[:80]!r}: write an IPv6 address with its port as [ADDRESS]:PORT")
    port, service = _port_number(t, proto, target)
    return Target(port=port, proto=proto, address=address, service=service)


def _from_url(t: str, target: str) -> str:
    """A URL as pasted from a browser or a config (http://localhost:8080/x, tcp://[::1]:53,
    unix:///run/x.sock) -> the target form it names; anything else unchanged. Without a
    port the scheme is the service (http://host -> http)."""
    scheme, sep, _ = t.partition("://")
    if not sep or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        return t
    import urllib.parse

    scheme = scheme.lower()
    if scheme == "unix":
        return t[len("unix://") :]
    url = urllib.parse.urlsplit(t)
    try:
        number = url.port
    except ValueError:
        raise UsageError(f"{target[:80]!r}: the URL's port is not a number in 1..65535") from None
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if scheme in ("tcp", "udp"):
        require(number is not None, f"{target[:80]!r}: a {scheme}:// URL needs a :PORT")
        return f"{scheme}/{host}:{number}"
    return f"{host}:{number if number is not None else scheme}"


@functools.lru_cache(maxsize=8)
def _parsed(target: str) -> Target:
    """parse_target once per target: a host name in it is resolved once."""
    return parse_target(target)


def _proto_form(t: str) -> bool:
    low = t.lower()
    return low.count("/") == 1 and (
        low.startswith(("tcp/", "udp/")) or low.endswith(("/tcp", "/udp"))
    )


@dataclass(frozen=True)
class Params(ProbeParams):
    #: A diagnosis binds only the port it is asked about: it runs with the ephemeral
    #: range exhausted (and says so).
    needs_ports: ClassVar[bool] = False

    target: str = option(
        "",
        "A port (8080, :8080, 127.0.0.1:8080, [::1]:8080, tcp/8080, 8080/udp, http), a URL "
        "(http://localhost:8080/), a UNIX socket path (with a '/'), or @name (abstract).",
        metavar="TARGET",
        positional=True,
    )
    tcp: bool = option(False, "TCP only.")
    udp: bool = option(False, "UDP only.")
    check: bool = option(
        False,
        "Exit 0 if a new listener could start on the address now, 1 if not (a plain bind; "
        "with --reuseaddr, one that sets SO_REUSEADDR).",
    )
    reuseaddr: bool = option(
        False, "--check and --wait answer for a server that sets SO_REUSEADDR."
    )
    quiet: bool = option(False, "Print nothing (for --check and --wait in scripts).", short="-q")
    #: None: no waiting; WAIT_UNTIL_DEADLINE (0, what a bare `--wait` gives): until
    #: --deadline; otherwise at most this many seconds (the deadline grows to fit).
    wait: float | None = option(
        None,
        "Wait until the check passes, at most SECONDS (bare --wait: until --deadline, less "
        "up to 1 s kept for the report). "
        "Exit 0 when free, 1 at the timeout.",
        metavar="SECONDS",
        const=WAIT_UNTIL_DEADLINE,
    )
    kill: bool = option(
        False,
        "Signal the processes that block a bind on this port (asks first on a terminal; "
        "needs --yes otherwise). Holders run by systemd or a container get the manager's "
        "stop command instead, unless --force.",
    )
    yes: bool = option(False, "--kill without asking.", short="-y")
    signal: str = option("TERM", "Signal --kill sends first.", choices=SIGNALS, metavar="SIG")
    grace: float = option(
        3.0, "Seconds --kill waits for the port to be released after the signal.", metavar="S"
    )
    force: bool = option(
        False, "--kill signals managed holders too (their manager may restart them)."
    )
    all_netns: bool = option(
        False, "Also list sockets on the port in every network namespace (root)."
    )
    limit: int = option(
        100, "Most connection rows to show (0: all); listeners always.", metavar="N"
    )
    #: The CLI sets these when stderr/stdin are terminals (see docs/port.md "CLI wiring").
    #: (RUF009 cannot tell option() returns a dataclasses.field with an immutable default.)
    progress: Callable[[str], None] | None = option(None, "", cli=False)  # noqa: RUF009
    confirm: Callable[[str], bool] | None = option(None, "", cli=False)  # noqa: RUF009
    #: Force the psutil holder lookup (what non-Linux systems use): tests on Linux.
    fallback: bool = option(False, "", cli=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        t = self.parsed
        require(self.limit >= 0, f"--limit must be 0 (no limit) or more, not {self.limit}")
        if not t.is_port:
            require(
                not (self.tcp or self.udp), "--tcp and --udp apply to a port, not to a UNIX path"
            )
            require(not self.all_netns, "--all-netns applies to a port, not to a UNIX path")
        if t.proto:
            other = "udp" if t.proto == "tcp" else "tcp"
            require(
                not getattr(self, other),
                f"the target says {t.proto}, and --{other} asks for the other protocol",
            )
        if self.wait is not None:
            require(
                self.wait == self.wait and self.wait >= 0,
                f"--wait must be 0 or more seconds, not {self.wait}",
            )
        require(self.grace >= 0, f"--grace must be 0 or more seconds, not {self.grace}")
        require(
            self.signal.upper().removeprefix("SIG") in SIGNALS,
            f"--signal must be one of {', '.join(SIGNALS)}, not {self.signal}",
        )
        require(not (self.kill and self.wait is not None), "--kill and --wait: give one")
        if not t.is_port:
            require(
                self.wait is None and not self.kill,
                "--wait and --kill apply to a port, not to a UNIX path",
            )
        require(not (self.yes and not self.kill), "--yes confirms --kill; give --kill too")
        require(not (self.force and not self.kill), "--force applies to --kill; give --kill too")

    @property
    def parsed(self) -> Target:
        return _parsed(self.target)

    @property
    def is_port(self) -> bool:
        return self.parsed.is_port

    @property
    def port(self) -> int:
        return self.parsed.port

    @property
    def protocols(self) -> tuple[str, ...]:
        tcp = self.tcp or self.parsed.proto == "tcp"
        udp = self.udp or self.parsed.proto == "udp"
        if tcp == udp:
            return ("tcp", "udp")
        return ("tcp",) if tcp else ("udp",)
