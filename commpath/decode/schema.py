"""Declared columns and dtypes of the flow table, the interface between the layers."""

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
    "last_frame": "int64",
    "ts_start": "float64",         # epoch seconds
    "ts_end": "float64",
    "ip_version": "int8",          # 4 or 6 (of the inner, flow-defining header)
    "src_ip": "string",
    "src_port": "int32",
    "dst_ip": "string",
    "dst_port": "int32",
    "transport": "category",       # tcp | udp | esp
    "packets": "int64",            # both directions
    "bytes": "int64",              # frame (wire) bytes, both directions
    "packets_fwd": "int64",        # initiator -> responder
    "packets_rev": "int64",
    "bytes_fwd": "int64",
    "bytes_rev": "int64",
    "payload_fwd": "int64",        # transport payload bytes (TCP/UDP data, retransmissions included)
    "payload_rev": "int64",
    "syn_seen": "bool",
    "synack_seen": "bool",
    "handshake_seen": "bool",      # SYN, SYN-ACK and the initiator's ACK all seen
    "end_state": "category",       # fin | rst | open  (udp: open)
    "initiator": "category",       # how src was chosen: syn | synack | port | payload | first-packet
    "app_protocol": "category",    # tls | ssh | http | http2 | wireguard | esp | unknown | none
    "http_connect": "bool",        # HTTP/1.x CONNECT seen at the start of the stream
    "tunnel": "category",          # '' | vxlan | geneve | ipip | ip6ip6 | ...
    "tunnel_src": "string",        # outer (underlay) endpoints, initiator side first
    "tunnel_dst": "string",
    "tunnel_vni": "Int64",
    "vlan": "Int32",               # outermost 802.1Q id, if any
    "fragments": "int32",          # IP fragments attributed to this flow (first fragments)
    "truncated_packets": "int32",  # packets cut by the snaplen
    "encrypted_underlay": "bool",  # WireGuard or ESP: the payload is an encrypted underlay
}

#: One row per input capture file.
CAPTURE_COLUMNS: dict[str, str] = {
    "file": "string",
    "format": "category",          # pcap | pcapng (| +gzip)
    "link_types": "string",        # comma separated names
    "packets": "int64",
    "bytes": "int64",
    "first_ts": "float64",
    "last_ts": "float64",
    "partial": "bool",             # only part of the file could be read
    "warnings": "object",          # list[str]
    "host": "string",              # from manifest.json when present
    "role": "string",
}


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """An empty DataFrame with the declared columns and dtypes."""
    import pandas as pd
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def conform(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Reorder ``df`` to the declared columns (extra columns kept after) and cast dtypes."""
    import pandas as pd
    for name, dtype in columns.items():
        if name not in df.columns:
            df[name] = pd.Series(dtype=dtype, index=df.index)
        elif str(df[name].dtype) != dtype:
            df[name] = df[name].astype(dtype)
    extra = [c for c in df.columns if c not in columns]
    return df[list(columns) + extra]


#: One row per TLS connection (joined to flows on flow_id).
TLS_COLUMNS: dict[str, str] = {
    "flow_id": "int64",
    "tls_version": "string",        # negotiated: "SSL 3.0" | "TLS 1.0" | ... | "TLS 1.3"; <NA> if unknown
    "client_versions": "string",    # offered, comma separated, highest first
    "sni": "string",
    "alpn_offered": "string",       # comma separated
    "alpn": "string",               # selected by the server
    "cipher": "string",             # IANA name, e.g. TLS_AES_128_GCM_SHA256
    "cipher_id": "Int32",
    "ja4": "string",
    "hello_retry": "bool",
    "resumed": "bool",
    "established": "bool",          # Zeek's meaning: the handshake completed
    "cert_request": "bool",         # server sent CertificateRequest (visible: TLS <= 1.2 or decrypted)
    "cert_request_cas": "object",   # list[str] of distinguished names
    "server_cert_fingerprints": "object",   # list[str] sha256 hex, leaf first
    "client_cert_fingerprints": "object",
    "certs_visibility": "category",  # visible | not-visible | decrypted
    "client_cert": "category",      # presented | empty | not-requested | inferred-presented | inferred-absent | unknown
    "server_cert_verified": "boolean",
    "client_cert_verified": "boolean",
    "verify_error": "string",
    "alerts": "object",             # list[str], e.g. ["fatal:handshake_failure"]
    "partial": "bool",              # the handshake could only be read in part
    "parse_error": "string",
    "handshake_frames": "object",   # list[int], frames that carry the handshake messages
}

#: TLS columns after the declared ones (the tls table has both; the flows table joins only the above).
TLS_EXTRA: dict[str, str] = {
    "client_cert_inference": "string",  # how the TLS 1.3 client-certificate inference decided
    "tunneled": "bool",             # inside an HTTP CONNECT tunnel
    "starttls": "bool",             # upgraded in band from a clear-text protocol
    "starttls_from": "string",      # that protocol: smtp | imap | pop3 | ftp | xmpp | ldap | postgresql | unknown
    "verify_reasons": "object",     # list[str] "server:<reason>" / "client:<reason>", x509.REASONS codes
}

#: One row per certificate, deduplicated by SHA-256 fingerprint.
CERT_COLUMNS: dict[str, str] = {
    "fingerprint": "string",        # sha256 hex
    "subject": "string",            # RFC 4514
    "issuer": "string",
    "serial": "string",             # hex, upper case, no separators
    "not_before": "datetime64[ns, UTC]",
    "not_after": "datetime64[ns, UTC]",
    "sans": "object",               # list[str], "DNS:x" / "IP:y"
    "key_type": "string",           # RSA | EC | Ed25519 | ...
    "key_bits": "Int32",
    "signature_algorithm": "string",
    "is_ca": "boolean",
    "key_usage": "object",          # list[str]
    "extended_key_usage": "object", # list[str]: serverAuth, clientAuth, ...
    "self_signed": "boolean",       # issued and signed by itself (SHA-1/MD5 too); <NA>: could not be checked
    "roles": "object",              # list[str]: server | client | intermediate
    "flow_ids": "object",           # list[int] where it was seen
    "parse_error": "string",
    "warnings": "object",           # list[str]: what the certificate breaks but parsing survived
}
