"""TLS session resumption across connections: a resumed session inherits what its full handshake showed."""

from __future__ import annotations

from hashlib import sha256

#: Session ids and tickets remembered per run (each as a 16-byte digest with its issuing connection).
MAX_SESSIONS = 200_000
#: client_cert values a resumed session can inherit (what the issuing handshake showed).
INHERITED = frozenset(("presented", "empty", "not-requested"))


def session_keys(resumed: bool, ts, client_sid: bytes, client_ticket: bytes, server_sid: bytes,
                 new_session_ticket: bytes) -> tuple | None:
    """What links a TLS <= 1.2 connection to others of the run: ("issued", keys, ts) for a full handshake
    (the session id its ServerHello assigned, the ticket of its NewSessionTicket), ("offered", keys, ts)
    for a resumed one (the ClientHello's session id and session_ticket extension); None when it has none."""
    if resumed:
        pairs = ((b"sid", client_sid), (b"ticket", client_ticket))
        kind = "offered"
    else:
        body = new_session_ticket
        ticket = body[6:6 + ((body[4] << 8) | body[5])] if len(body) >= 6 else b""
        pairs = ((b"sid", server_sid), (b"ticket", ticket))
        kind = "issued"
    keys = tuple(sha256(name + value).digest()[:16] for name, value in pairs if value)
    return (kind, keys, float(ts)) if keys else None


def resolve(rows: list[tuple], flow_at: int, client_cert_at: int) -> list[tuple]:
    """Rows whose last item is :func:`session_keys`' result, without it and with (client_cert_source,
    resumed_from) appended; a resumed row takes client_cert from the latest connection that issued its
    session id or ticket before it (deterministic whatever order the connections were parsed in)."""
    issued: dict[bytes, tuple[float, int, int]] = {}       # key -> (ts, flow id, row index)
    for i, row in enumerate(rows):
        s = row[-1]
        if s is not None and s[0] == "issued" and len(issued) < MAX_SESSIONS:
            for key in s[1]:
                seen = issued.get(key)
                if seen is None or (s[2], row[flow_at]) > seen[:2]:
                    issued[key] = (s[2], row[flow_at], i)
    out = [row[:-1] + ("handshake" if row[-1] is None or row[-1][0] == "issued" else None, None) for row in rows]
    # resumed rows in time order, so a session resumed from a resumed one inherits what its root showed
    order = sorted((i for i, row in enumerate(rows) if row[-1] is not None and row[-1][0] == "offered"),
                   key=lambda i: (rows[i][-1][2], rows[i][flow_at]))
    for i in order:
        _, keys, ts = rows[i][-1]
        found = [issued[k] for k in keys if k in issued and issued[k][:2] < (ts, rows[i][flow_at])]
        if not found:
            continue
        _, flow_id, j = max(found)
        inherited = out[j][client_cert_at]
        row = list(out[i])
        if inherited in INHERITED and row[client_cert_at] == "unknown":
            row[client_cert_at] = inherited
        row[-2], row[-1] = "resumed-from", flow_id
        out[i] = tuple(row)
    return out
