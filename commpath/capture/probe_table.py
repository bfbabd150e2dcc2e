"""The probe table (``commpath probe``), declared once (column -> dtype, what each column holds), and its folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

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
    "leaf_not_before": "float64",      # epoch seconds of its notBefore
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
    "weak_ciphers_accepted": "object",  # list[str]: TLS 1.2 suites of Go's insecure list it accepted (OpenSSL names)
    "anonymous_pods_status": "Int32",  # HTTP status of GET /pods without credentials (kubelet)
    "anonymous_healthz_status": "Int32",  # HTTP status of GET /healthz without credentials (kubelet, read-only port)
}



def empty_probe():
    """An empty probe table with the declared columns."""
    import pandas as pd
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in PROBE_COLUMNS.items()})


def conform_probe(df):
    """``df`` with the declared columns in order and dtypes (missing ones empty, extra ones after)."""
    import pandas as pd
    df = df.copy()
    for name, dtype in PROBE_COLUMNS.items():
        if name not in df.columns:
            df[name] = pd.Series(dtype=dtype, index=df.index)
        elif dtype == "object":
            df[name] = df[name].map(lambda v: [str(x) for x in v] if hasattr(v, "__len__") and not isinstance(v, str)
                                    else v)
        elif str(df[name].dtype) != dtype:
            df[name] = df[name].astype(dtype)
    return df[list(PROBE_COLUMNS) + [c for c in df.columns if c not in PROBE_COLUMNS]]


def write_probe_dir(table, meta: dict, folder: str | Path) -> dict[str, Path]:
    """The probe's folder: ``probe.parquet`` (the table) and ``probe.json`` (``meta`` and the rows)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        table = conform_probe(table)
        table.to_parquet(folder / PROBE_PARQUET, index=False)
        rows = json.loads(table.to_json(orient="records"))
        (folder / PROBE_JSON).write_text(json.dumps({**meta, "probe": rows}, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    except OSError as exc:
        raise InputError(folder, f"cannot write: {exc.strerror or exc}") from None
    return {"parquet": folder / PROBE_PARQUET, "json": folder / PROBE_JSON}


def read_probe_dir(folder: str | Path):
    """The probe table of a ``commpath probe --out`` folder (its Parquet, else its JSON)."""
    import pandas as pd
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such probe folder (--probe: the --out folder of commpath probe)")
    try:
        if (folder / PROBE_PARQUET).is_file():
            return conform_probe(pd.read_parquet(folder / PROBE_PARQUET))
        if (folder / PROBE_JSON).is_file():
            doc = json.loads((folder / PROBE_JSON).read_text(encoding="utf-8"))
            rows = doc.get("probe") if isinstance(doc, dict) else None
            if not isinstance(rows, list):
                raise InputError(folder / PROBE_JSON, "not a probe result (no 'probe' list)")
            return conform_probe(pd.DataFrame(rows) if rows else empty_probe())
    except InputError:
        raise
    except Exception as exc:  # pyarrow and json raise several types for damaged files
        raise InputError(folder, f"cannot read the probe table: {exc}") from None
    raise InputError(folder, f"no {PROBE_PARQUET} or {PROBE_JSON} in the probe folder")


__all__ = ["PROBE_COLUMNS", "PROBE_JSON", "PROBE_PARQUET", "conform_probe", "empty_probe", "read_probe_dir",
           "write_probe_dir"]
