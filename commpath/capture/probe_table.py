"""The probe table (``commpath probe``), declared once: column -> dtype, with what each column holds."""

from __future__ import annotations

#: What a probe folder holds: the table as Parquet and JSON, and what the run was (active, when, how many
#: connections, which inventory).
PROBE_PARQUET = "probe.parquet"
PROBE_JSON = "probe.json"

#: One row per probed target (address, port) of the inventory.
PROBE_COLUMNS: dict[str, str] = {
    "target": "category",              # apiserver | kubelet | kubelet-readonly | konnectivity-server | etcd
    "host": "string",                  # the inventory's host name of the address (else the address)
    "address": "string",               # the address probed (from the inventory only)
    "port": "int32",                   # the port probed
    "active": "bool",                  # always true: the row comes from connections commpath made itself
    "probed_at": "float64",            # epoch seconds when the target's probe started
    "connections": "int32",            # TCP connections made to the target (bounded)
    "error": "string",                 # one line when the target hung, reset or spoke something else
    "tls": "boolean",                  # the target completed a TLS handshake (null: not reached)
    "tls_version": "string",           # version of the first handshake (client's widest offer)
    "cipher": "string",                # cipher suite of that handshake
    "leaf_fingerprint": "string",      # SHA-256 hex of the serving certificate
    "leaf_subject": "string",          # its subject, RFC 4514
    "leaf_issuer": "string",           # its issuer, RFC 4514
    "leaf_sans": "object",             # list[str]: DNS names and addresses of its subjectAltName
    "leaf_not_after": "float64",       # epoch seconds of its notAfter
    "self_signed": "boolean",          # the leaf is its own issuer (and signed by its own key)
    "chain_verified": "boolean",       # the served chain verifies against the CA bundle (null: no CA given)
    "verify_error": "string",          # why it did not verify (chain, expiry)
    "names_match": "boolean",          # the leaf's SANs cover the node's name or the address probed
    "client_cert_requested": "boolean",  # the server sent a CertificateRequest (openssl s_client -msg)
    "client_ca_names": "object",       # list[str]: CA names the CertificateRequest lists
    "versions_accepted": "object",     # list[str]: TLS versions the server completed a handshake with
    "versions_refused": "object",      # list[str]: versions it refused
    "min_version": "string",           # the lowest version accepted
    "weak_ciphers_accepted": "object",  # list[str]: TLS 1.2 suites of the bounded weak set it accepted
    "anonymous_pods_status": "Int32",  # HTTP status of GET /pods without credentials (kubelet)
    "anonymous_healthz_status": "Int32",  # HTTP status of GET /healthz without credentials (kubelet, read-only port)
}

__all__ = ["PROBE_COLUMNS", "PROBE_JSON", "PROBE_PARQUET"]
