"""Two-host mode: `sockprobe serve` (the agent, agent.py) and `--peer HOST:PORT` on the
probes whose server half can run on another host (client.py, one module per experiment
with both halves: wwr.py, ...). The control protocol is in protocol.py."""

#: The probes with path experiments (the CLI adds --peer to these; a constant here so that
#: building a parser imports none of the experiments).
PEER_PROBES = ("nagle", "partial-send", "udp-truncate", "backlog", "framing")
