"""Chains completed by intermediates that other connections of the same run presented (as Zeek does)."""

from __future__ import annotations

#: Connections remembered for completion (each holds its fingerprints, time and names).
MAX_INCOMPLETE = 20_000


def verify_sides(server: list, client: list, cas, at, name, ip) -> tuple:
    """(server verified, client verified, verify_error, verify_reasons) of both presented chains."""
    from .x509 import verify_chain_reasons
    errors, reasons = [], []
    s_ok, err, why = verify_chain_reasons(server, cas, at, server_name=name, server_ip=ip)
    if err:
        errors.append(f"server: {err}")
    reasons += [f"server:{r}" for r in why]
    c_ok, err, why = verify_chain_reasons(client, cas, at, client=True)
    if err:
        errors.append(f"client: {err}")
    reasons += [f"client:{r}" for r in why]
    return s_ok, c_ok, "; ".join(errors) or None, reasons


def complete_from_run(rows: list[tuple], book, cas, names: list[str]) -> list[tuple]:
    """``rows`` with chain_from_run appended: a chain that failed only for a missing intermediate is
    verified again with every intermediate certificate the run saw; when that completes it, the row
    takes the new verdict and chain_from_run is True (Go, which Kubernetes uses, has no such cache:
    the connection itself would have failed, so a completed chain points at a server sending too little)."""
    out = [row + (False,) for row in rows]
    incomplete = book.incomplete
    if cas is None or not incomplete:
        return out
    pool = book.intermediates()
    at_flow = {row[0]: i for i, row in enumerate(out)}
    col = {name: names.index(name) for name in ("server_cert_verified", "client_cert_verified", "verify_error",
                                                 "verify_reasons")}
    for flow_id, s_fps, c_fps, at, name, ip in incomplete:
        i = at_flow.get(flow_id)
        if i is None:
            continue
        server, client = [book.parsed(fp) for fp in s_fps], [book.parsed(fp) for fp in c_fps]
        extra_s = [c for c in pool if c.fingerprint not in s_fps]
        extra_c = [c for c in pool if c.fingerprint not in c_fps]
        s_ok, c_ok, error, reasons = verify_sides(server + extra_s if server else server,
                                                  client + extra_c if client else client, cas, at, name, ip)
        before = out[i][col["verify_reasons"]]
        completed = [side for side, ok in (("server", s_ok), ("client", c_ok))
                     if ok and f"{side}:missing-intermediate" in before]
        if not completed:
            continue
        row = list(out[i])
        row[col["server_cert_verified"]], row[col["client_cert_verified"]] = s_ok, c_ok
        row[col["verify_error"]], row[col["verify_reasons"]] = error, reasons
        row[-1] = True
        out[i] = tuple(row)
    return out
