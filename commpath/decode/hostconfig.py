"""Host configurations (agent manifests, host folders) as the ``config`` facts table, defaults applied.

Precedence, as the components apply it: the documented default, then the configuration file
(the kubelet: then its ``--config-dir`` drop-ins in lexical order), then the command line; the
row a component actually uses is ``effective``. Where the kubelet's flag default and its
KubeletConfiguration default differ (``--anonymous-auth`` true, ``authentication.anonymous.enabled``
false), the default that applies depends on whether ``--config`` was given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..capture.host_settings import Component, HostSettings, boolean_flags, load, parse_flags, yaml_document

#: One row per setting of a component process: every flag on its command line, every key of its
#: configuration files, the servers of its kubeconfigs, and the documented default of each setting
#: of cfg/host_settings.yaml that nothing set.
CONFIG_COLUMNS: dict[str, str] = {
    "host": "category",          # host name (the agent manifest's, or the host folder's)
    "component": "category",     # kube-apiserver | kubelet | kube-proxy | etcd | konnectivity-server | konnectivity-agent
    "pid": "Int64",              # process id when read from /proc (null from a folder)
    "setting": "string",         # flag (--anonymous-auth) or config key (authentication.anonymous.enabled) as documented
    "key": "string",             # the setting's one name across sources: its config key where it has one, else its flag
    "value": "string",           # as set (secrets redacted), or the default; null when unset and without default
    "source": "string",          # cmdline | environ (etcd's ETCD_* variables) | the file's path | default
    "is_default": "bool",        # nothing set it: the documented default (or unset) applies
    "effective": "bool",         # the value the component uses (a flag overrides its config file)
    "defaults_from": "string",   # for defaults: the release and documents the default is taken from
    "addresses": "object",       # list[str]: the host's addresses (manifest interfaces, folder, inventory)
}

#: the most rows one configuration file may give (a YAML alias bomb stops here)
MAX_KEYS_PER_FILE = 5000
_RANK = {"default": 0, "file": 1, "dropin": 2, "environ": 3, "cmdline": 4}


@dataclass
class ConfigFacts:
    """The ``config`` table of one or more hosts, each host's addresses, and what could not be read."""

    table: object                                        # pandas DataFrame, CONFIG_COLUMNS
    addresses: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)      # "host: file: reason"
    raw: list[dict] = field(default_factory=list)        # the host_config objects (redacted)

    @property
    def partial(self) -> bool:
        return bool(self.errors)


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def _flatten(doc, prefix: str = "", out: list | None = None) -> list[tuple[str, object]]:
    """Leaf keys of a YAML document as dotted paths; a list of names (egressSelections) by name."""
    out = [] if out is None else out
    if len(out) > MAX_KEYS_PER_FILE:
        raise ValueError(f"more than {MAX_KEYS_PER_FILE} settings")
    if isinstance(doc, dict):
        if not doc and prefix:
            out.append((prefix, doc))
        for k, v in doc.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(doc, list) and doc and all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in doc):
        for x in doc:
            _flatten({k: v for k, v in x.items() if k != "name"}, f"{prefix}[{x['name']}]", out)
    else:
        out.append((prefix, doc))
    return out


def _yaml(text: str):
    return yaml_document(text)


def _kubeconfig_rows(doc) -> list[tuple[str, object]]:
    """The server, CA and insecure-skip-tls-verify of the kubeconfig's clusters (the current context's first)."""
    if not isinstance(doc, dict):
        return []
    clusters = [c for c in doc.get("clusters") or [] if isinstance(c, dict) and isinstance(c.get("cluster"), dict)]
    current = next((c.get("context", {}).get("cluster") for c in doc.get("contexts") or []
                    if isinstance(c, dict) and c.get("name") == doc.get("current-context")
                    and isinstance(c.get("context"), dict)), None)
    clusters.sort(key=lambda c: c.get("name") != current)
    rows = []
    for c in clusters[:1]:
        for k in ("server", "certificate-authority", "insecure-skip-tls-verify", "tls-server-name"):
            if k in c["cluster"]:
                rows.append((f"clusters[].cluster.{k}", c["cluster"][k]))
    return rows


class _Rows:
    def __init__(self, host: str, comp: Component, pid, release: str):
        self.host, self.comp, self.pid, self.release = host, comp, pid, release
        self.rows: list[dict] = []

    def add(self, setting: str, value, source: str, rank: str, key: str | None = None) -> None:
        self.rows.append({"host": self.host, "component": self.comp.name, "pid": self.pid, "setting": setting,
                          "key": key or setting, "value": _text(value), "source": source,
                          "is_default": rank == "default", "_rank": _RANK[rank],
                          "defaults_from": (f"{self.release}: {', '.join(self.comp.documents)}" if rank == "default"
                                            else None)})


def _component_rows(host: str, comp: Component, c: dict, release: str, errors: list[str]) -> list[dict]:
    rows = _Rows(host, comp, c.get("pid"), release)
    files: dict[str, str] = c.get("files") or {}
    argv = [str(a) for a in c.get("cmdline") or []]
    flags = parse_flags(argv[2:] if argv and argv[0].endswith("hyperkube") else argv[1:], boolean_flags(comp))
    env = c.get("environ") if isinstance(c.get("environ"), dict) else {}
    env_flags = [(comp.flag_of_variable(str(k)), str(k), v) for k, v in env.items() if comp.flag_of_variable(str(k))]
    for flag, name, value in env_flags:       # etcd's ETCD_* variables: the flag they stand for, below the flags
        s = comp.by_flag(flag)
        rows.add(name, value, "environ", "environ", s.name if s else flag)
    config_given = False
    for origin, flag, value in [("environ", f, v) for f, _, v in env_flags] + [("cmdline", f, v) for f, v in flags]:
        s = comp.by_flag(flag)
        if origin == "cmdline":
            rows.add(flag, value, "cmdline", "cmdline", s.name if s else None)
        if s is None or not s.record or value not in files:
            continue
        if s.record == "certificates":
            _certificate_rows(rows, s.name, value, files[value], errors)
        elif s.record == "config":
            config_given = config_given or flag == comp.config_flag
            _file_rows(rows, comp, value, files[value], "file", errors)
        elif s.record == "kubeconfig":
            _kubeconfig_file(rows, s.name, value, files[value], errors)
        elif s.record == "egress-selector":
            _file_rows(rows, comp, value, files[value], "file", errors, plain=True)
    for s in comp.settings:     # config-file keys naming further files (kube-proxy clientConnection.kubeconfig)
        if s.key and s.record == "kubeconfig":
            for r in [r for r in rows.rows if r["setting"] == s.key and r["value"] in files]:
                _kubeconfig_file(rows, s.name, r["value"], files[r["value"]], errors)
    dropin_dir = next((v for f, v in flags if f == "--config-dir"), None)
    if dropin_dir:
        for path in sorted(p for p in files if p.startswith(dropin_dir.rstrip("/") + "/")):
            _file_rows(rows, comp, path, files[path], "dropin", errors)
    if comp.config_file_wins and config_given:       # etcd --config-file: its other flags and variables are ignored
        for r in rows.rows:
            if r["_rank"] in (_RANK["environ"], _RANK["cmdline"]) and r["setting"] != comp.config_flag:
                r["_rank"] = -1
    set_keys = {r["key"] for r in rows.rows if r["_rank"] >= 0}
    for s in comp.settings:
        if s.name not in set_keys:
            default = s.config_default if config_given else s.default
            rows.add(s.key if (config_given and s.key) or not s.flag else s.flag, default, "default", "default", s.name)
    return rows.rows


def certificate_facts(pem: str) -> list[dict]:
    """SHA-256, subject and issuer (RFC 4514, in both spellings commpath meets) of each PEM certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from .x509 import name_text
    out = []
    for cert in x509.load_pem_x509_certificates(pem.encode()):
        out.append({"sha256": cert.fingerprint(hashes.SHA256()).hex(),
                    "subject": sorted({name_text(cert.subject), cert.subject.rfc4514_string()}),
                    "issuer": sorted({name_text(cert.issuer), cert.issuer.rfc4514_string()})})
    return out


def _certificate_rows(rows: _Rows, name: str, path: str, pem: str, errors: list[str]) -> None:
    """One row per certificate of a certificate file a setting names (key ``<setting>.certificates[i]``)."""
    try:
        facts = certificate_facts(pem)
    except ValueError as exc:
        errors.append(f"{rows.host}: {path}: not a PEM certificate: {str(exc).splitlines()[0] if str(exc) else exc}")
        return
    for i, fact in enumerate(facts):
        rows.add("certificate", fact, path, "file", f"{name}.certificates[{i}]")


def _file_rows(rows: _Rows, comp: Component, path: str, text: str, rank: str, errors: list[str],
               plain: bool = False) -> None:
    doc, why = _yaml(text)
    if why:
        errors.append(f"{rows.host}: {path}: {why}")
        return
    try:
        leaves = _flatten(doc) if isinstance(doc, dict) else []
    except (ValueError, RecursionError) as exc:
        errors.append(f"{rows.host}: {path}: {exc}")
        return
    for k, v in leaves:
        if k in ("apiVersion", "kind"):
            continue
        s = None if plain else comp.by_key(k)
        rows.add(k, v, path, rank, s.name if s else None)


def _kubeconfig_file(rows: _Rows, setting: str, path: str, text: str, errors: list[str]) -> None:
    """The kubeconfig's server rows, keyed by the setting that names the file (``--kubeconfig.clusters[]...``)."""
    doc, why = _yaml(text)
    if why:
        errors.append(f"{rows.host}: {path}: {why}")
        return
    for k, v in _kubeconfig_rows(doc):
        rows.add(k, v, path, "file", f"{setting}.{k}")


def config_table(host_configs: list[dict], settings: HostSettings | None = None) -> ConfigFacts:
    """The ``config`` facts (CONFIG_COLUMNS) of host_config objects (agent manifests, host folders)."""
    import pandas as pd

    from .schema import conform, empty_frame
    settings = settings or load()
    rows: list[dict] = []
    errors: list[str] = []
    addresses: dict[str, list[str]] = {}
    for hc in host_configs:
        host = str(hc.get("host") or "?")
        addresses.setdefault(host, [])
        addresses[host] += [a for a in hc.get("addresses") or [] if a not in addresses[host]]
        for e in hc.get("errors") or []:
            errors.append(f"{host}: {e.get('file')}: {e.get('reason')}")
        for c in hc.get("components") or []:
            for e in c.get("errors") or []:
                errors.append(f"{host}: {e.get('file')}: {e.get('reason')}")
            comp = settings.components.get(str(c.get("name")))
            if comp is None:
                errors.append(f"{host}: component {c.get('name')!r}: unknown (known: {', '.join(settings.components)})")
                continue
            rows += _component_rows(host, comp, c, settings.release, errors)
    if not rows:
        return ConfigFacts(empty_frame(CONFIG_COLUMNS), addresses, errors, list(host_configs))
    df = pd.DataFrame(rows)
    df["_order"] = range(len(df))
    # within one process, the highest-ranked source of a setting wins; on equal rank the later one
    ordered = df.assign(_pid=df["pid"].fillna(-1)).sort_values(["_rank", "_order"], kind="stable")
    winners = set(ordered.groupby(["host", "component", "_pid", "key"], sort=False, dropna=False)["_order"].last())
    df["effective"] = df["_order"].isin(winners)
    df = df.drop(columns=["_rank", "_order"])
    df["addresses"] = df["host"].map(lambda h: list(addresses.get(h, [])))
    return ConfigFacts(conform(df, CONFIG_COLUMNS), addresses, errors, list(host_configs))


_TLS_VERSION = re.compile(r"(?:Version)?TLS ?1[._]?([0-3])", re.I)


def tls_version(value: str | None) -> str | None:
    """``VersionTLS12`` / ``TLS1.2`` as the wire's ``TLS 1.2``."""
    m = _TLS_VERSION.fullmatch((value or "").strip())
    return f"TLS 1.{m.group(1)}" if m else None


__all__ = ["CONFIG_COLUMNS", "ConfigFacts", "config_table", "tls_version"]
