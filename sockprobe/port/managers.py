"""Who manages a holder, and so who would bring it back after a kill.

Read from what the kernel exposes, never guessed:

- /proc/PID/cgroup (cgroups(7)): the cgroup v2 line `0::/PATH` (or the v1 `name=systemd`
  hierarchy). systemd puts every unit's processes in a cgroup named after the unit
  (`/system.slice/nginx.service`), and container runtimes put each container in one named
  after its id: docker `docker-<id>.scope` (systemd driver) or `/docker/<id>`, podman
  `libpod-<id>.scope`, containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`,
  Kubernetes `kubepods.../pod<uid>/<id>`. The container's name is read from the
  runtime's state on disk where that is readable without its daemon (docker's
  /var/lib/docker/containers/<id>/config.v2.json).
- A listener held by pid 1 (or a process named systemd) is socket activation: systemd
  holds the port and starts the service on the first connection; stopping the service
  leaves the port held, stopping the `.socket` unit frees it. The unit is found from
  ListenStream=/ListenDatagram= in the unit files.
- A known forwarder by its argv: docker-proxy (`-host-port`, `-container-ip`,
  `-container-port`), rootlessport (podman rootless), rootlesskit, pasta, slirp4netns.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from sockprobe.port.processes import Proc

UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
_HEX = r"[0-9a-f]{12,64}"
_CONTAINER_PATTERNS = (
    ("docker", re.compile(rf"^docker-({_HEX})\.scope$")),
    ("podman", re.compile(rf"^libpod-(?:conmon-)?({_HEX})\.scope$")),
    ("containerd", re.compile(rf"^cri-containerd-({_HEX})\.scope$")),
    ("cri-o", re.compile(rf"^crio-(?:conmon-)?({_HEX})\.scope$")),
)
_STOP = {
    "docker": "docker stop {id}",
    "podman": "podman stop {id}",
    "containerd": "crictl stop {id}",
    "cri-o": "crictl stop {id}",
    "kubernetes": "kubectl delete pod (the pod whose container is {id}; its controller may "
    "recreate it: scale the deployment down instead)",
}
FORWARDERS = ("docker-proxy", "rootlessport", "rootlesskit", "pasta", "pasta.avx2", "slirp4netns")


class Manager(NamedTuple):
    #: "systemd", "container", "socket-activation" or "forwarder".
    kind: str
    #: The cgroup path read (v2, or v1 name=systemd).
    cgroup: str = ""
    unit: str = ""
    runtime: str = ""
    container: str = ""
    name: str = ""
    #: The command that stops the holder for good ("" when none is known).
    stop: str = ""
    #: Facts about what a kill would cause (Restart=, the service behind the socket).
    warning: str = ""
    #: For a forwarder: what it forwards, from its argv.
    forwards: str = ""

    @property
    def label(self) -> str:
        if self.kind == "container":
            name = f" {self.name}" if self.name else ""
            return f"{self.runtime} container {self.container[:12]}{name}"
        if self.kind == "forwarder":
            return f"forwarder {self.name}" + (f" ({self.forwards})" if self.forwards else "")
        if self.kind == "socket-activation":
            return f"systemd socket activation ({self.unit or 'unit not found'})"
        return f"systemd unit {self.unit}"


def read_cgroup(pid: int, proc: str = "/proc") -> str:
    """The process's cgroup v2 path, else its v1 name=systemd path; "" if unreadable."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    v1 = ""
    for line in lines:
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "" and path not in ("", "/"):
            return path
        if controllers == "name=systemd" and path not in ("", "/"):
            v1 = path
    return v1


def container_of(cgroup: str) -> tuple[str, str] | None:
    """(runtime, container id) from a cgroup path, or None."""
    parts = [p for p in cgroup.split("/") if p]
    for part in reversed(parts):
        for runtime, pattern in _CONTAINER_PATTERNS:
            m = pattern.match(part)
            if m:
                if any(p.startswith("kubepods") for p in parts):
                    return "kubernetes", m.group(1)
                return runtime, m.group(1)
    # cgroupfs drivers: /docker/<id>, /kubepods/.../pod<uid>/<id>, /libpod_parent/libpod-<id>
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if part == "docker" and re.fullmatch(_HEX, nxt):
            return "docker", nxt
    if any(p.startswith("kubepods") for p in parts) and re.fullmatch(_HEX, parts[-1]):
        return "kubernetes", parts[-1]
    return None


def unit_of(cgroup: str) -> str:
    """The innermost systemd unit (a .service or .scope name) in a cgroup path."""
    for part in reversed([p for p in cgroup.split("/") if p]):
        if part.endswith((".service", ".scope")) and not part.startswith("user@"):
            return part
    return ""


def unit_file(unit: str, dirs: tuple[str, ...] = UNIT_DIRS) -> str | None:
    for d in dirs:
        path = os.path.join(d, unit)
        if os.path.isfile(path):
            return path
    return None


def unit_setting(unit: str, key: str, dirs: tuple[str, ...] = UNIT_DIRS) -> tuple[str, str] | None:
    """(value, file) of the last `key=` in the unit file and its drop-ins, or None when no
    file is found or none sets it (systemd.unit(5): later assignments win)."""
    import glob

    found: tuple[str, str] | None = None
    path = unit_file(unit, dirs)
    files = [path] if path else []
    for d in dirs:
        files += sorted(glob.glob(os.path.join(d, unit + ".d", "*.conf")))
    for f in files:
        try:
            with open(f, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    k, eq, v = line.strip().partition("=")
                    if eq and k.strip() == key:
                        found = (v.strip(), f)
        except OSError:
            continue
    return found


def socket_units(port: int, dirs: tuple[str, ...] = UNIT_DIRS) -> list[str]:
    """.socket units whose ListenStream=/ListenDatagram= names `port` (8080, [::]:8080,
    0.0.0.0:8080), from the unit files."""
    import glob

    out = []
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "*.socket"))):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        k, eq, v = line.strip().partition("=")
                        if eq and k.strip() in ("ListenStream", "ListenDatagram"):
                            tail = v.strip().rsplit(":", 1)[-1]
                            if tail == str(port):
                                name = os.path.basename(path)
                                if name not in out:
                                    out.append(name)
            except OSError:
                continue
    return out


def _docker_name(cid: str) -> str:
    import json

    try:
        with open(f"/var/lib/docker/containers/{cid}/config.v2.json", encoding="utf-8") as f:
            name = json.load(f).get("Name", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return str(name).lstrip("/")


def _flag(argv: tuple[str, ...], name: str) -> str:
    """The value of `-name VALUE` or `-name=VALUE` (also with --)."""
    for i, a in enumerate(argv):
        for dash in ("-", "--"):
            if a == dash + name and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(dash + name + "="):
                return a.split("=", 1)[1]
    return ""


def forwarder(proc: Proc) -> Manager | None:
    """A known port forwarder, named with what its argv says it forwards."""
    exe = os.path.basename(proc.argv[0]) if proc.argv else proc.name
    if exe not in FORWARDERS and proc.name not in FORWARDERS:
        return None
    exe = exe if exe in FORWARDERS else proc.name
    if exe == "docker-proxy":
        cip, cport = _flag(proc.argv, "container-ip"), _flag(proc.argv, "container-port")
        hip, hport = _flag(proc.argv, "host-ip"), _flag(proc.argv, "host-port")
        proto = _flag(proc.argv, "proto") or "tcp"
        fwd = ""
        if cip and cport:
            fwd = f"{proto} {hip or '*'}:{hport} to container {cip}:{cport}"
        stop = f"docker ps --filter publish={hport}" if hport else ""
        return Manager(
            "forwarder",
            name=exe,
            forwards=fwd,
            stop=(
                f"stop the container it forwards to: {stop} names it, then docker stop"
                if stop
                else ""
            ),
            warning="docker-proxy is started by dockerd for a published port; killing it "
            "breaks the container's port without freeing it for good",
        )
    fwd = ""
    if exe.startswith("pasta"):
        specs = [
            proc.argv[i + 1]
            for i, a in enumerate(proc.argv[:-1])
            if a in ("-t", "-u", "--tcp-ports", "--udp-ports")
        ]
        fwd = ("ports " + ", ".join(specs)) if specs else ""
    return Manager(
        "forwarder",
        name=exe,
        forwards=fwd,
        warning=f"{exe} forwards ports into a rootless container or namespace; stop that "
        "container rather than the forwarder",
    )


def manager_of(proc: Proc, listener: bool, port: int, pid1_name: str) -> Manager | None:
    """What manages `proc` (which holds a socket on `port`), from facts read."""
    if listener and (proc.pid == 1 or proc.name == "systemd"):
        units = socket_units(port)
        unit = ", ".join(units)
        return Manager(
            "socket-activation",
            unit=unit,
            stop=f"systemctl stop {units[0]}" if units else "",
            warning=(
                f"pid {proc.pid} ({proc.name}) holds the listener for socket activation: "
                "stopping the service leaves the port held; stop the .socket unit"
                + ("" if units else " (no unit file with ListenStream= on this port found)")
            ),
        )
    fwd = forwarder(proc)
    if fwd is not None:
        return fwd
    cgroup = read_cgroup(proc.pid)
    if not cgroup:
        return None
    cont = container_of(cgroup)
    if cont is not None:
        runtime, cid = cont
        name = _docker_name(cid) if runtime == "docker" else ""
        return Manager(
            "container",
            cgroup=cgroup,
            unit=unit_of(cgroup),
            runtime=runtime,
            container=cid,
            name=name,
            stop=_STOP[runtime].format(id=name or cid[:12]),
            warning=f"it runs in a {runtime} container: a restart policy may start it again",
        )
    unit = unit_of(cgroup)
    if not unit or unit.startswith("session-") or unit.endswith(".scope"):
        return None  # a login session or a transient scope: nothing restarts it
    restart = unit_setting(unit, "Restart")
    if restart is not None:
        value, path = restart
        warning = (
            f"{path} sets Restart={value}: killing the process lets systemd start it again"
            if value != "no"
            else f"{path} sets Restart=no"
        )
    else:
        warning = (
            "no unit file for it was found in " + ", ".join(UNIT_DIRS[:2]) + "...; if its "
            "unit sets Restart=, killing the process lets systemd start it again"
        )
    if pid1_name != "systemd":
        warning += f" (pid 1 here is {pid1_name}, not systemd: nothing may manage this cgroup)"
    return Manager(
        "systemd", cgroup=cgroup, unit=unit, stop=f"systemctl stop {unit}", warning=warning
    )


def pid1_name() -> str:
    try:
        with open("/proc/1/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"
