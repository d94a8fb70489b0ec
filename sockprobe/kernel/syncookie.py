"""What a SYN-cookie connection keeps of its SYN's options, as functions of the settings.

A SYN cookie (net/ipv4/syncookies.c, net/ipv6/syncookies.c) is the server's initial
sequence number, and the only other place the server can hide state in is the TCP
timestamp it echoes. So:

- the client's MSS survives only as an index into a table of four values
  (`msstab`: 536, 1300, 1440, 1460 for IPv4; 1220, 1420, 1440, 8940 for IPv6):
  `__cookie_v4_init_sequence()` picks the largest entry not above the client's MSS;
- window scaling, SACK and ECN are encoded in the low bits of the server's timestamp
  (`cookie_init_timestamp()`) and recovered from the echoed value
  (`cookie_timestamp_decode()`); without timestamps (net.ipv4.tcp_timestamps 0, or a
  client that does not offer them) they are lost: the connection runs without window
  scaling (64 KiB windows at most) and without SACK.

tcpi_snd_mss is the MSS less the 12-byte timestamp option when timestamps are on.
"""

from __future__ import annotations

MSS_TABLE_V4 = (536, 1300, 1440, 1460)
MSS_TABLE_V6 = (1220, 1420, 1440, 8940)
TIMESTAMP_OPTION = 12


def cookie_mss(client_mss: int, v6: bool) -> int:
    """The MSS a cookie keeps for a client that advertised `client_mss`.

    >>> cookie_mss(65483, False), cookie_mss(1400, False), cookie_mss(65463, True)
    (1460, 1300, 8940)
    """
    table = MSS_TABLE_V6 if v6 else MSS_TABLE_V4
    fits = [m for m in table if m <= client_mss]
    return fits[-1] if fits else table[0]


def server_snd_mss(client_mss: int, v6: bool, timestamps: bool) -> int:
    """tcpi_snd_mss the server of a cookie connection sends with.

    >>> server_snd_mss(65483, False, True), server_snd_mss(65495, False, False)
    (1448, 1460)
    """
    return cookie_mss(client_mss, v6) - (TIMESTAMP_OPTION if timestamps else 0)


def keeps_options(timestamps: bool) -> bool:
    """Whether window scaling and SACK survive a cookie (they ride in the timestamp)."""
    return timestamps


def cookie_sentence(tcp_timestamps: int | None, v6: bool) -> str:
    """The sentence about what a cookie connection loses here."""
    table = ", ".join(map(str, MSS_TABLE_V6 if v6 else MSS_TABLE_V4))
    head = (
        "A SYN-cookie connection keeps the client's MSS only as one of "
        f"{table} (the cookie's table), so its server sends smaller segments than a normal "
        "connection's whenever the path allows more"
    )
    if tcp_timestamps:
        return (
            head + f"; with net.ipv4.tcp_timestamps {tcp_timestamps}, window scaling and SACK "
            "ride in the timestamp and are kept (for a client that offers timestamps)."
        )
    return (
        head + f"; with net.ipv4.tcp_timestamps {tcp_timestamps}, window scaling and SACK have "
        "nowhere to ride and are lost: windows of at most 64 KiB, no selective "
        "acknowledgements."
    )
