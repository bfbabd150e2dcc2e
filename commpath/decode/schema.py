"""The decode layer's tables, each declared once: column -> dtype, with what the column holds.

Every other place (report.json, HTML, Parquet, reloading an ``analyze --out`` folder) derives
its columns from these; classification columns are declared in ``classify``, findings and path
verdicts in ``check``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: One row per connection (TCP: one handshake; UDP: 5-tuple until idle timeout).
#: src = initiator, dst = responder.
FLOW_COLUMNS: dict[str, str] = {
    "flow_id": "int64",            # unique within one read, 0-based, in order of first packet
    "capture": "string",           # path of the capture file
    "first_frame": "int64",        # 1-based frame number as Wireshark shows it
    "last_frame": "int64",         # frame number of the last packet
    "ts_start": "float64",         # epoch seconds
    "ts_end": "float64",           # epoch seconds of the last packet
    "ip_version": "int8",          # 4 or 6 (of the inner, flow-defining header)
    "src_ip": "string",            # initiator address (inner header when tunnelled)
    "src_port": "int32",           # initiator port (0 without ports, e.g. ESP)
    "dst_ip": "string",            # responder address
    "dst_port": "int32",           # responder port
    "transport": "category",       # tcp | udp | esp
    "packets": "int64",            # both directions
    "bytes": "int64",              # frame (wire) bytes, both directions
    "packets_fwd": "int64",        # initiator -> responder
    "packets_rev": "int64",        # responder -> initiator
    "bytes_fwd": "int64",          # frame bytes initiator -> responder
    "bytes_rev": "int64",          # frame bytes responder -> initiator
    "payload_fwd": "int64",        # transport payload bytes (TCP/UDP data, retransmissions included)
    "payload_rev": "int64",        # transport payload bytes responder -> initiator
    "syn_seen": "bool",            # the initiator's SYN was captured
    "synack_seen": "bool",         # the responder's SYN-ACK was captured
    "handshake_seen": "bool",      # SYN, SYN-ACK and the initiator's ACK all seen
    "end_state": "category",       # fin | rst | open  (udp: open)
    "initiator": "category",       # how src was chosen: syn | synack | port | payload | first-packet
    "app_protocol": "category",    # tls | ssh | http | http2 | wireguard | esp | unknown | none
    "http_connect": "bool",        # HTTP/1.x CONNECT seen at the start of the stream
    "tunnel": "category",          # '' | vxlan | geneve | ipip | ip6ip6 | ...
    "tunnel_src": "string",        # outer (underlay) endpoints, initiator side first
    "tunnel_dst": "string",        # outer endpoint on the responder side
    "tunnel_vni": "Int64",         # VXLAN / Geneve network identifier
    "vlan": "Int32",               # outermost 802.1Q id, if any
    "fragments": "int32",          # IP fragments attributed to this flow (first fragments)
    "truncated_packets": "int32",  # packets cut by the snaplen
    "encrypted_underlay": "bool",  # WireGuard or ESP: the payload is an encrypted underlay
}

#: One row per input capture file.
CAPTURE_COLUMNS: dict[str, str] = {
    "file": "string",              # path of the capture file as given (or found below a folder)
    "format": "category",          # pcap | pcapng (| +gzip)
    "link_types": "string",        # comma separated names
    "packets": "int64",            # records read
    "bytes": "int64",              # size of the file
    "first_ts": "float64",         # epoch seconds of the first packet
    "last_ts": "float64",          # epoch seconds of the last packet
    "partial": "bool",             # only part of the file could be read
    "warnings": "object",          # list[str]
    "host": "string",              # from manifest.json when present
    "role": "string",              # control-plane | node, from manifest.json when present
}


def arrow_type(text: str):
    """The Arrow type a name such as ``list<item: struct<a: string, b: int64>>`` stands for (pyarrow
    parses only the names of flat types, and pandas no ``…[pyarrow]`` name of a nested one)."""
    import pyarrow as pa
    text = text.strip()
    for kind, make in (("list<", lambda fields: pa.list_(pa.field(*fields[0]))), ("struct<", pa.struct)):
        if text.startswith(kind) and text.endswith(">"):
            fields, depth, start, body = [], 0, 0, text[len(kind):-1]
            for i, ch in enumerate(body + ","):
                depth += (ch == "<") - (ch == ">")
                if ch == "," and depth == 0:
                    name, _, inner = body[start:i].partition(":")
                    fields.append((name.strip(), arrow_type(inner)))
                    start = i + 1
            return make(fields)
    return pa.type_for_alias(text)


def pandas_dtype(dtype: str):
    """A declared dtype as pandas takes it: ``<Arrow type>[pyarrow]`` as that ``pd.ArrowDtype``."""
    if dtype.endswith("[pyarrow]") and "<" in dtype:
        import pandas as pd
        return pd.ArrowDtype(arrow_type(dtype[:-len("[pyarrow]")]))
    return dtype


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """An empty DataFrame with the declared columns and dtypes: a copy of one made once per declaration
    (making one costs 3.5-5 ms, copying it 0.06 ms; a report asks for one per path without findings)."""
    key = tuple(columns.items())
    made = _EMPTY_FRAMES.get(key)
    if made is None:
        import pandas as pd
        made = pd.DataFrame({name: pd.Series(dtype=pandas_dtype(dtype)) for name, dtype in columns.items()})
        if len(_EMPTY_FRAMES) < 256:
            _EMPTY_FRAMES[key] = made
    return made.copy()


#: empty_frame's templates, by declaration (bounded: declarations are few, but callers may make their own)
_EMPTY_FRAMES: dict[tuple, pd.DataFrame] = {}


def conform(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Reorder ``df`` to the declared columns (extra columns kept after) and cast dtypes."""
    import pandas as pd
    for name, dtype in columns.items():
        if name not in df.columns:
            df[name] = pd.Series(dtype=pandas_dtype(dtype), index=df.index)
        elif str(df[name].dtype) != dtype:
            df[name] = df[name].astype(pandas_dtype(dtype))
    extra = [c for c in df.columns if c not in columns]
    return df[list(columns) + extra]


def concat_frames(frames: list[pd.DataFrame], columns: dict[str, str]) -> pd.DataFrame:
    """Tables of the same columns made apart (one per capture) put together, typed as one table of all
    their rows is: a category column whose categories differ between frames gets the sorted distinct
    values of all (each frame's categories are its own sorted distinct values, so their sorted union is that)."""
    import pandas as pd
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame(columns)
    cats = {c for f in frames for c in f.columns if isinstance(f[c].dtype, pd.CategoricalDtype)}
    for c in cats:
        first = frames[0][c].dtype
        if all(f[c].dtype == first for f in frames):
            continue
        values: set = set()
        for f in frames:
            values.update(f[c].cat.categories if isinstance(f[c].dtype, pd.CategoricalDtype) else f[c].dropna())
        union = pd.CategoricalDtype(sorted(values))
        for f in frames:
            f[c] = f[c].astype(union)
    return conform(pd.concat(frames, ignore_index=True), columns)


#: UTC datetimes the analysis adds beside the epoch seconds of flows and captures (same instants,
#: microsecond precision); the seconds columns stay as the spec has them.
FLOW_TIME_COLUMNS: dict[str, str] = {
    "time_start": "datetime64[ns, UTC]",   # ts_start as a UTC datetime
    "time_end": "datetime64[ns, UTC]",     # ts_end as a UTC datetime
}
CAPTURE_TIME_COLUMNS: dict[str, str] = {
    "time_first": "datetime64[ns, UTC]",   # first_ts as a UTC datetime
    "time_last": "datetime64[ns, UTC]",    # last_ts as a UTC datetime
}


#: Every value of ``client_cert``, from the best evidence of a client certificate to the worst
#: (the ordered categories of the DataFrames users get).
CLIENT_CERT_STATES: tuple[str, ...] = ("presented", "inferred-presented", "not-requested", "unknown",
                                       "inferred-absent", "empty")


#: One row per TLS connection (joined to flows on flow_id).
TLS_COLUMNS: dict[str, str] = {
    "flow_id": "int64",             # the flow this handshake belongs to
    "tls_version": "string",        # negotiated: "SSL 3.0" | "TLS 1.0" | ... | "TLS 1.3"; <NA> if unknown
    "client_versions": "string",    # offered, comma separated, highest first
    "sni": "string",                # server name the client asked for
    "alpn_offered": "string",       # comma separated
    "alpn": "string",               # selected by the server
    "cipher": "string",             # IANA name, e.g. TLS_AES_128_GCM_SHA256
    "cipher_id": "Int32",           # IANA code point of the cipher
    "ja4": "string",                # JA4 fingerprint of the ClientHello
    "hello_retry": "bool",          # a HelloRetryRequest was sent
    "resumed": "bool",              # session resumption (PSK, ticket or session id)
    "established": "bool",          # Zeek's meaning: the handshake completed
    "cert_request": "bool",         # server sent CertificateRequest (visible: TLS <= 1.2 or decrypted)
    "cert_request_cas": "object",   # list[str] of distinguished names
    "server_cert_fingerprints": "object",   # list[str] sha256 hex, leaf first
    "client_cert_fingerprints": "object",   # list[str] sha256 hex of the client's chain, leaf first
    "certs_visibility": "category",  # visible | not-visible | decrypted
    "client_cert": "category",      # presented | empty | not-requested | inferred-presented | inferred-absent | unknown
    "server_cert_verified": "boolean",  # chains to the CA bundle and names the server; <NA> without bundle or chain
    "client_cert_verified": "boolean",  # the client's chain verifies against the CA bundle
    "verify_error": "string",       # why a verification failed
    "alerts": "object",             # list[str], e.g. ["fatal:handshake_failure"]
    "partial": "bool",              # the handshake could only be read in part
    "parse_error": "string",        # what could not be parsed, when partial
    "handshake_frames": "object",   # list[int], frames that carry the handshake messages
}

#: TLS columns after the declared ones (the tls table has both; the flows table joins only the above).
TLS_EXTRA: dict[str, str] = {
    "client_cert_inference": "string",  # how the TLS 1.3 client-certificate inference decided
    "tunneled": "bool",             # inside an HTTP CONNECT tunnel
    "starttls": "bool",             # upgraded in band from a clear-text protocol
    "starttls_from": "string",      # that protocol: smtp | imap | pop3 | ftp | xmpp | ldap | postgresql | unknown
    "verify_reasons": "object",     # list[str] "server:<reason>" / "client:<reason>", x509.REASONS codes
    "ja3": "string",                # MD5 of the ClientHello's JA3 string (Salesforce; GREASE left out)
    "ja3s": "string",               # MD5 of the ServerHello's JA3S string
    "ja4s": "string",               # FoxIO JA4S of the ServerHello
    "kex_group": "string",          # key exchange group: x25519 | secp256r1 | X25519MLKEM768 | ... (ECDHE/TLS 1.3)
    "ech": "bool",                  # the ClientHello carries encrypted_client_hello
    "client_cert_source": "string",  # handshake (this one shows it) | resumed-from (inherited) | <NA>: resumed, unknown
    "resumed_from": "Int64",        # flow that issued the resumed session id or ticket earlier in the run
    "chain_from_run": "bool",       # verified only with intermediates other connections of the run presented
}

#: One row per certificate, deduplicated by SHA-256 fingerprint.
CERT_COLUMNS: dict[str, str] = {
    "fingerprint": "string",        # sha256 hex
    "subject": "string",            # RFC 4514
    "issuer": "string",             # RFC 4514
    "serial": "string",             # hex, upper case, no separators
    "not_before": "datetime64[ns, UTC]",  # start of validity
    "not_after": "datetime64[ns, UTC]",   # end of validity
    "sans": "object",               # list[str], "DNS:x" / "IP:y"
    "key_type": "string",           # RSA | EC | Ed25519 | ...
    "key_bits": "Int32",            # key size in bits
    "signature_algorithm": "string",  # e.g. sha256WithRSAEncryption
    "is_ca": "boolean",             # basicConstraints CA flag
    "key_usage": "object",          # list[str]
    "extended_key_usage": "object", # list[str]: serverAuth, clientAuth, ...
    "self_signed": "boolean",       # issued and signed by itself (SHA-1/MD5 too); <NA>: could not be checked
    "roles": "object",              # list[str]: server | client | intermediate
    "flow_ids": "object",           # list[int] where it was seen
    "parse_error": "string",        # why the certificate could not be parsed
    "warnings": "object",           # list[str]: what the certificate breaks but parsing survived
}

#: One row per SSH connection.
SSH_COLUMNS: dict[str, str] = {
    "flow_id": "int64",              # the flow this handshake belongs to
    "client_banner": "string",       # identification string, e.g. SSH-2.0-OpenSSH_9.2
    "server_banner": "string",       # the server's identification string
    "hassh": "string",               # MD5 of the client's algorithm lists (HASSH)
    "hassh_server": "string",        # the same for the server (HASSHServer)
    "kex": "string",                 # key exchange both sides agreed on
    "host_key_alg": "string",        # server host key algorithm agreed on
    "cipher_c2s": "string",          # cipher agreed on, client to server
    "cipher_s2c": "string",          # cipher agreed on, server to client
    "mac_c2s": "string",             # MAC agreed on, client to server
    "mac_s2c": "string",             # MAC agreed on, server to client
    "weak_algorithms": "object",     # list[str] "kind:algorithm"
    "hassh_algorithms": "string",    # the client's lists HASSH hashes
    "hassh_server_algorithms": "string",  # the server's lists HASSHServer hashes
    "partial": "bool",               # the handshake could only be read in part
    "parse_error": "string",         # what could not be parsed, when partial
    "version": "Int8",               # protocol both banners agree on: 1 (SSH-1.x, or 1.99 falling back) | 2
    "host_key_fingerprint": "string",  # the server's host key as OpenSSH prints it: SHA256:<base64>
}

#: One row per HTTP request or response (HTTP/1.x and HTTP/2 headers, never bodies).
HTTP_COLUMNS: dict[str, str] = {
    "flow_id": "int64",            # the flow it was seen on
    "frame": "Int64",              # frame that carries the start of the message
    "direction": "category",       # request | response | push (HTTP/2 PUSH_PROMISE)
    "method": "string",            # request method (GET, CONNECT, ...)
    "path": "string",              # secrets in the query redacted
    "host": "string",              # Host header or :authority
    "status": "Int32",             # response status code
    "connect_target": "string",    # host:port of a CONNECT request
    "version": "string",           # HTTP/1.0 | HTTP/1.1 | HTTP/2
    "h2c": "bool",                 # HTTP/2 over clear text
    "auth": "string",              # credential kinds seen, values never kept: "bearer", "basic,cookie"
    "tunneled": "bool",            # inside an HTTP CONNECT tunnel
    "partial": "bool",             # the message could only be read in part
    "parse_error": "string",       # what could not be parsed, when partial
}

#: Flow columns a multi-host run adds (decode/merge.py: one flow per connection seen from several hosts).
MERGED_FLOW_COLUMNS: dict[str, str] = {
    "ts_start_aligned": "float64",  # start on the reference host's clock
    "vantage_points": "object",     # list of {host, capture, flow_id, first_frame, ts_start}
    "hosts": "object",              # list[str] of the hosts that saw it
    "dst_before_nat": "string",     # ip:port dialled, when a vantage point saw it before DNAT
}

#: One row per host of a multi-host run: how its clock is aligned with the reference host's.
OFFSET_COLUMNS: dict[str, str] = {
    "host": "string",               # host name from the manifests
    "offset_s": "float64",          # seconds to subtract from its timestamps; NaN when unknown
    "reference": "string",          # the host whose clock is the reference
    "connections": "int64",         # connections seen on both hosts that the estimate rests on
    "method": "string",             # reference | two-way | one-way | no shared connections
    "spread_s": "float64",          # interquartile range of the per-connection differences
}
