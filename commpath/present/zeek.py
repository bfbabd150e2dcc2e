"""Zeek-style JSON logs (conn, ssl, x509, ssh) with Zeek's field names where the meaning is the same.

Fields without an exact Zeek counterpart carry a ``commpath_`` prefix; ``community_id`` is the
Community ID v1 flow hash (seed 0), as Zeek's community-id package and Wireshark write it: the
``communityid`` library's value, computed here without its per-flow objects (tested equal)."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from . import _model

LOGS = ("conn", "ssl", "x509", "ssh")
#: app_protocol -> Zeek's ``service``
SERVICES = {"tls": "ssl", "ssh": "ssh", "http": "http"}
#: TLS_COLUMNS.tls_version -> Zeek's ssl.log ``version``
TLS_VERSIONS = {"SSL 2.0": "SSLv2", "SSL 3.0": "SSLv3", "TLS 1.0": "TLSv10", "TLS 1.1": "TLSv11",
                "TLS 1.2": "TLSv12", "TLS 1.3": "TLSv13"}
IP_PROTOCOLS = {"tcp": 6, "udp": 17, "esp": 50}
#: records a log's JSON text is made for at once (the text of 200,000 connections is 125 MB)
CHUNK = 20_000
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _uid(capture: str, flow_id: int) -> str:
    """A Zeek-like connection uid ("C" + 17 base62 digits), stable for a capture and flow id."""
    n = int.from_bytes(hashlib.sha256(f"{capture}\0{flow_id}".encode()).digest()[:12], "big")
    digits = []
    for _ in range(17):
        n, r = divmod(n, 62)
        digits.append(_BASE62[r])
    return "C" + "".join(digits)


def _uids(captures, flow_ids) -> list[str]:
    """``_uid`` of each (capture, flow id): the SHA-256s one by one, their first 12 bytes' base62
    digits for all at once (long division of three 32-bit limbs by 62, 17 times)."""
    sha256 = hashlib.sha256
    digests = b"".join(sha256(f"{c}\0{i}".encode()).digest()[:12] for c, i in zip(captures, flow_ids))
    limbs = np.frombuffer(digests, dtype=">u4").astype(np.uint64).reshape(-1, 3).T.copy()
    digits = np.empty((limbs.shape[1], 17), dtype=np.uint8)
    for d in range(17):
        rest = np.zeros(limbs.shape[1], dtype=np.uint64)
        for k in range(3):
            current = (rest << np.uint64(32)) | limbs[k]
            limbs[k], rest = current // np.uint64(62), current % np.uint64(62)
        digits[:, d] = rest
    text = np.frombuffer(_BASE62.encode(), dtype=np.uint8)[digits]
    return ["C" + t.decode("ascii") for t in text.view("S17").ravel()] if len(text) else []


def community_ids(flows: pd.DataFrame) -> list[str | None]:
    """Community ID v1 of each flow (None for transports it does not define): the ``communityid``
    library's value (seed 0, base64), computed here without its per-flow objects (a flow whose
    addresses or ports that library would judge otherwise is handed to it)."""
    out: list[str | None] = []
    if not len(flows):
        return out
    seed = struct.pack("!H", 0)
    sha1, b64, pton, pack = hashlib.sha1, base64.b64encode, socket.inet_pton, struct.pack
    v4, v6 = socket.AF_INET, socket.AF_INET6
    packed: dict[str, bytes | None] = {}

    def nbo(addr: str) -> bytes | None:
        """The address in network byte order (inet_pton, IPv4 first as the library tries), else None."""
        if addr not in packed:
            value = None
            for family in (v4, v6):
                try:
                    value = pton(family, addr)
                    break
                except (OSError, TypeError):
                    pass
            packed[addr] = value
        return packed[addr]
    for src, dst, sport, dport, transport in zip(flows["src_ip"].astype(str), flows["dst_ip"].astype(str),
                                                 flows["src_port"].astype(int).tolist(),
                                                 flows["dst_port"].astype(int).tolist(),
                                                 flows["transport"].astype(str)):
        proto = IP_PROTOCOLS.get(transport)
        if proto is None:
            out.append(None)
            continue
        saddr, daddr = nbo(src), nbo(dst)
        ports = proto in (6, 17)
        if saddr is None or daddr is None or (ports and not (0 <= sport <= 65535 and 0 <= dport <= 65535)):
            out.append(_library_community_id(proto, src, dst, sport, dport))
            continue
        if ports:
            if saddr < daddr or (saddr == daddr and sport < dport):
                data = seed + saddr + daddr + pack("!BBHH", proto, 0, sport, dport)
            else:
                data = seed + daddr + saddr + pack("!BBHH", proto, 0, dport, sport)
        else:
            data = seed + (saddr + daddr if saddr < daddr else daddr + saddr) + pack("!BB", proto, 0)
        out.append("1:" + b64(sha1(data).digest()).decode("ascii"))
    return out


def _library_community_id(proto: int, src: str, dst: str, sport: int, dport: int) -> str | None:
    """One flow's Community ID by the ``communityid`` library itself (odd addresses or ports)."""
    import communityid
    cid = communityid.CommunityID(seed=0)
    if proto in (6, 17):
        return cid.calc(communityid.FlowTuple(proto, src, dst, sport, dport))
    return cid.calc(communityid.FlowTuple(proto, src, dst))


def _conn_state(flows: pd.DataFrame) -> np.ndarray:
    """Zeek's conn_state where the wire says the same thing: S0 (SYN unanswered), S1 (established, not
    closed), SF (established, closed with FIN), OTH (no SYN seen); None otherwise (e.g. resets)."""
    tcp = flows["transport"].astype(str).to_numpy() == "tcp"
    syn = flows["syn_seen"].fillna(False).to_numpy(bool)
    synack = flows["synack_seen"].fillna(False).to_numpy(bool)
    hs = flows["handshake_seen"].fillna(False).to_numpy(bool)
    end = flows["end_state"].astype(str).to_numpy()
    state = np.full(len(flows), None, dtype=object)
    state[tcp & ~syn & ~synack] = "OTH"
    state[tcp & syn & ~synack & (end != "rst")] = "S0"
    state[tcp & hs & (end == "open")] = "S1"
    state[tcp & hs & (end == "fin")] = "SF"
    return state


def conn_log(analysis) -> pd.DataFrame:
    flows = _model.frame(analysis, "flows")
    ts = flows["ts_start"].astype(float)
    return pd.DataFrame({
        "ts": ts,
        "uid": _uids(flows["capture"].astype(str), flows["flow_id"].astype("int64").tolist()),
        "id.orig_h": flows["src_ip"].astype(str), "id.orig_p": flows["src_port"].astype(int),
        "id.resp_h": flows["dst_ip"].astype(str), "id.resp_p": flows["dst_port"].astype(int),
        "proto": flows["transport"].astype(str),
        "service": flows["app_protocol"].astype(str).map(SERVICES),
        "duration": flows["ts_end"].astype(float) - ts,
        "conn_state": _conn_state(flows) if len(flows) else [],
        "orig_pkts": flows["packets_fwd"].astype("int64"), "resp_pkts": flows["packets_rev"].astype("int64"),
        "community_id": community_ids(flows) if len(flows) else [],
        "commpath_orig_payload_bytes": flows["payload_fwd"].astype("int64"),
        "commpath_resp_payload_bytes": flows["payload_rev"].astype("int64"),
        "commpath_orig_wire_bytes": flows["bytes_fwd"].astype("int64"),
        "commpath_resp_wire_bytes": flows["bytes_rev"].astype("int64"),
        "commpath_flow_id": flows["flow_id"].astype("int64"),
        "commpath_capture": flows["capture"].astype(str),
        "commpath_first_frame": flows["first_frame"].astype("int64"),
        "commpath_path": flows["path"].astype(str) if "path" in flows else None,
        "commpath_src_role": flows["src_role"].astype(str) if "src_role" in flows else None,
        "commpath_dst_role": flows["dst_role"].astype(str) if "dst_role" in flows else None,
    })


def _keyed(log: pd.DataFrame, conn: pd.DataFrame, flow_ids: pd.Series) -> pd.DataFrame:
    """``log`` preceded by ts, uid and the id.* fields of the flows it belongs to."""
    ids = conn.set_index("commpath_flow_id")
    keys = ids.loc[flow_ids.astype("int64").to_numpy(), ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h",
                                                         "id.resp_p", "community_id"]].reset_index(drop=True)
    return pd.concat([keys, log.reset_index(drop=True)], axis=1)


def ssl_log(analysis, conn: pd.DataFrame) -> pd.DataFrame:
    tls = _model.frame(analysis, "tls")
    tls = tls[tls["flow_id"].astype("int64").isin(conn["commpath_flow_id"])]
    verified = tls["server_cert_verified"]
    status = np.where(verified.isna(), None,
                      np.where(verified.fillna(False).astype(bool), "ok",
                               tls["verify_error"].astype("string").fillna("certificate verify failed").astype(object)))
    body = pd.DataFrame({
        "version": tls["tls_version"].astype("string").map(TLS_VERSIONS),
        "cipher": tls["cipher"].astype("string"),
        "server_name": tls["sni"].astype("string"),
        "resumed": tls["resumed"].astype(bool),
        "established": tls["established"].astype(bool),
        "next_protocol": tls["alpn"].astype("string"),
        "cert_chain_fps": tls["server_cert_fingerprints"].map(_model.as_list),
        "client_cert_chain_fps": tls["client_cert_fingerprints"].map(_model.as_list),
        "validation_status": status,
        "ja4": tls["ja4"].astype("string"),
        "commpath_client_cert": tls["client_cert"].astype("string"),
        "commpath_flow_id": tls["flow_id"].astype("int64"),
    })
    return _keyed(body, conn, tls["flow_id"])


def x509_log(analysis) -> pd.DataFrame:
    certs = _model.cert_states(analysis)
    if not len(certs):
        return pd.DataFrame(columns=["ts", "fingerprint"])
    sans = certs["sans"].map(_model.as_list)
    roles = certs["roles"].map(_model.as_list)

    def epoch(col: str) -> pd.Series:
        return pd.to_datetime(certs[col], utc=True).map(lambda t: None if pd.isna(t) else t.timestamp())
    return pd.DataFrame({
        "ts": epoch("seen_start"),
        "fingerprint": certs["fingerprint"].astype("string"),
        "certificate.serial": certs["serial"].astype("string"),
        "certificate.subject": certs["subject"].astype("string"),
        "certificate.issuer": certs["issuer"].astype("string"),
        "certificate.not_valid_before": epoch("not_before"),
        "certificate.not_valid_after": epoch("not_after"),
        "certificate.key_type": certs["key_type"].astype("string").str.lower(),
        "certificate.key_length": certs["key_bits"].astype("Int32"),
        "certificate.sig_alg": certs["signature_algorithm"].astype("string"),
        "san.dns": sans.map(lambda s: [x[4:] for x in s if str(x).startswith("DNS:")] or None),
        "san.ip": sans.map(lambda s: [x[3:] for x in s if str(x).startswith("IP:")] or None),
        "basic_constraints.ca": certs["is_ca"].astype("boolean"),
        "host_cert": roles.map(lambda r: "server" in r),
        "client_cert": roles.map(lambda r: "client" in r),
        "commpath_state": certs["state"].astype("string"),
    })


def ssh_log(analysis, conn: pd.DataFrame) -> pd.DataFrame:
    ssh = getattr(analysis, "ssh", None)
    if not isinstance(ssh, pd.DataFrame) or not len(ssh) or "flow_id" not in ssh:
        return pd.DataFrame(columns=["ts", "uid"])
    ssh = ssh[ssh["flow_id"].astype("int64").isin(conn["commpath_flow_id"])]

    def col(name: str) -> pd.Series:
        return ssh[name].astype("string") if name in ssh else pd.Series(pd.NA, index=ssh.index, dtype="string")
    body = pd.DataFrame({
        "version": 2,
        "client": col("client_banner"), "server": col("server_banner"),
        "cipher_alg": col("cipher_c2s"), "mac_alg": col("mac_c2s"),
        "kex_alg": col("kex"), "host_key_alg": col("host_key_alg"),
        "hassh": col("hassh"), "hasshServer": col("hassh_server"),
        "commpath_flow_id": ssh["flow_id"].astype("int64"),
    })
    return _keyed(body, conn, ssh["flow_id"])


def zeek_logs(analysis) -> dict[str, pd.DataFrame]:
    """log name -> its records, in Zeek's field order where Zeek has the field."""
    conn = conn_log(analysis)
    return {"conn": conn, "ssl": ssl_log(analysis, conn), "x509": x509_log(analysis), "ssh": ssh_log(analysis, conn)}


def write_zeek_logs(analysis, folder: str | Path) -> dict[str, Path]:
    """conn.log, ssl.log, x509.log and ssh.log as JSON lines (Zeek's ``LogAscii::use_json``) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, log in zeek_logs(analysis).items():
        path = folder / f"{name}.log"
        with path.open("w", encoding="utf-8") as fh:
            for start in range(0, len(log), CHUNK):     # a line per record: the same text, CHUNK lines at a time
                part = log.iloc[start:start + CHUNK] if len(log) > CHUNK else log
                text = part.to_json(orient="records", lines=True, force_ascii=False, double_precision=6)
                fh.write(text if text.endswith("\n") or not text else text + "\n")
        written[name] = path
    return written


__all__ = ["LOGS", "community_ids", "write_zeek_logs", "zeek_logs"]
