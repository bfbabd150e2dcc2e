"""Host configuration: the command lines and config files of this host's Kubernetes components, redacted.

Read-only, from ``/proc``: each process whose program is a component of cfg/host_settings.yaml
(kube-apiserver, kubelet, kube-proxy, etcd, Konnectivity server and agent) and that shares the
agent's network namespace (the host: several lab hosts share one machine's process table). The
files its flags name are read through ``/proc/PID/root`` as the process sees them (a static pod's
container included): config files and kubeconfigs as redacted text, certificate files as their
PEM certificates only; private key files are never opened. Each file is bounded
(:data:`MAX_FILE_BYTES`); an unreadable, binary or oversized file is an error entry naming it, and
the rest is kept. :func:`from_folder` reads the same from a folder for clusters captured otherwise
(layout in docs/host-config.md).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..errors import InputError
from . import _redact
from .host_settings import HostSettings, boolean_flags, load, parse_flags, yaml_document

SCHEMA = "commpath.host-config/v1"
#: the most bytes read of one file; a larger one is recorded as an error, not truncated text
MAX_FILE_BYTES = 1 << 20
#: the most drop-in files read from a kubelet --config-dir
MAX_DROPINS = 64
_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class _Root:
    """Where a process's paths are found on this machine: ``/proc/PID/root`` (or a folder's ``root/``)."""

    def __init__(self, root: Path, cwd: Path | None = None):
        self.root, self.cwd = root, cwd

    def resolve(self, path: str) -> Path:
        p = PurePosixPath(path)
        if p.is_absolute():
            return self.root / p.relative_to("/")
        return (self.cwd or self.root) / p


def _read(real: Path, nul_separated: bool = False) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason): regular files only, bounded, UTF-8 text without NUL bytes
    (``nul_separated``: a saved /proc/PID/cmdline, whose arguments NUL bytes separate)."""
    try:
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > MAX_FILE_BYTES:
            return None, f"too large ({st.st_size} bytes, the limit is {MAX_FILE_BYTES})"
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    if len(data) > MAX_FILE_BYTES:
        return None, f"too large (more than {MAX_FILE_BYTES} bytes)"
    if b"\0" in data and not nul_separated:
        return None, "binary content (NUL bytes), not a configuration file"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start})"


def _config_paths(text: str, comp, dropin: bool = False) -> list[tuple[str, str]]:
    """(record kind, path) of the files a component's config file names (e.g. kubelet tlsCertFile)."""
    doc, _ = yaml_document(text)
    out = []
    for s in comp.settings:
        if not (s.key and s.record) or not isinstance(doc, dict):
            continue
        node = doc
        for part in s.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and node:
            out.append((s.record, node))
    return out


class _Recorder:
    """Records one component process: its redacted command line and the files its settings name."""

    def __init__(self, settings: HostSettings, name: str, root: _Root):
        self.comp = settings.components[name]
        self.root = root
        self.files: dict[str, str] = {}
        self.errors: list[dict] = []

    def error(self, path: str, reason: str) -> None:
        self.errors.append({"file": path, "reason": reason})

    def file(self, kind: str, path: str) -> str | None:
        if path in self.files or any(e["file"] == path for e in self.errors):
            return None
        if kind == "dropin-dir":
            self.dropins(path)
            return None
        text, why = _read(self.root.resolve(path))
        if text is None:
            self.error(path, why or "unreadable")
            return None
        if kind == "certificates":
            certs = _CERT.findall(text)
            if not certs:
                self.error(path, "no PEM certificate in it")
                return None
            self.files[path] = "\n".join(certs) + "\n"       # the certificates only, never a key beside them
            return None
        self.files[path] = _redact.text(text)
        return text

    def dropins(self, folder: str) -> None:
        real = self.root.resolve(folder)
        try:
            found = sorted(p for p in real.rglob("*.conf") if p.is_file())
        except OSError as exc:
            self.error(folder, exc.strerror or str(exc))
            return
        if len(found) > MAX_DROPINS:
            self.error(folder, f"{len(found)} drop-in files, only the first {MAX_DROPINS} recorded")
        for p in found[:MAX_DROPINS]:
            shown = str(PurePosixPath(folder) / p.relative_to(real))
            text = self.file("config", shown)
            if text is not None:
                self.follow(text)

    def follow(self, text: str) -> None:
        for kind, path in _config_paths(text, self.comp):
            self.file(kind, path)

    def record(self, pid: int | None, argv: list[str], args: list[str], environ: dict[str, str] | None = None) -> dict:
        """The component's entry; ``environ``: its variables that set flags (etcd's ETCD_*), values redacted."""
        env = {k: v for k, v in (environ or {}).items() if self.comp.flag_of_variable(k)}
        flags = [(self.comp.flag_of_variable(k), v) for k, v in env.items()]
        for flag, value in flags + parse_flags(args, boolean_flags(self.comp)):
            s = self.comp.by_flag(flag)
            if s and s.record and value:
                text = self.file(s.record, value)
                if text is not None and s.record == "config":
                    self.follow(text)
        entry = {"name": self.comp.name, "pid": pid, "cmdline": _redact.cmdline(argv), "files": self.files,
                 "errors": self.errors}
        if env:
            entry["environ"] = redact_environ(env)
        return entry


def redact_environ(env: dict[str, str]) -> dict[str, str]:
    """Variables as flags are redacted: ``ETCD_X=v`` as ``--x=v`` would be."""
    return {k: v.split("=", 1)[1] for k, v in zip(env, _redact.cmdline([f"--{k}={v}" for k, v in env.items()]))
            } if env else {}


def _environ(path: Path, prefix: str | None) -> dict[str, str]:
    """The variables of /proc/PID/environ (or a saved copy: NUL- or line-separated) that start with ``prefix``."""
    if not prefix:
        return {}
    text, _ = _read(path, nul_separated=True)
    out = {}
    for item in (text or "").replace("\n", "\0").split("\0"):
        name, sep, value = item.strip().partition("=")
        if sep and name.startswith(prefix):
            out[name] = value
    return out


def _netns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def collect(proc: str | Path = "/proc", same_netns: bool = True, host: str | None = None) -> dict:
    """This host's component processes (``host_config`` of the agent manifest)."""
    settings = load()
    proc = Path(proc)
    mine = _netns("self") if same_netns else None
    components, errors = [], []
    try:
        pids = sorted((p.name for p in proc.iterdir() if p.name.isdigit()), key=int)
    except OSError as exc:
        raise InputError(proc, exc.strerror or str(exc)) from None
    for pid in pids:
        try:
            raw = (proc / pid / "cmdline").read_bytes()
        except OSError:
            continue                        # gone, or a kernel thread
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        name, args = settings.component_of(argv)
        if name is None or int(pid) == os.getpid():
            continue
        if mine is not None and _netns(pid) != mine:
            continue
        rec = _Recorder(settings, name, _Root(proc / pid / "root", proc / pid / "cwd"))
        environ = _environ(proc / pid / "environ", settings.components[name].environ_prefix)
        components.append(rec.record(int(pid), argv, args, environ))
    return {"schema": SCHEMA, "host": host, "source": "proc", "collected_at": _now(),
            "components": components, "errors": errors}


def for_manifest(host: str | None, previous: dict | None = None) -> dict:
    """The agent's hook: collect (merged with an earlier collection of this run); never fails a capture,
    a collection that cannot read /proc is recorded as its error."""
    try:
        return merge(previous, collect(host=host))
    except (InputError, OSError) as exc:
        failed = {"schema": SCHEMA, "host": host, "source": "proc", "collected_at": _now(), "components": [],
                  "errors": [{"file": "/proc", "reason": str(exc)}]}
        return merge(previous, failed)


def _now() -> str:
    return datetime.fromtimestamp(time.time(), timezone.utc).isoformat(timespec="seconds")


def merge(first: dict | None, second: dict) -> dict:
    """Two collections of one host (at capture start and stop): every process seen in either, the later
    recording of a process seen in both."""
    if not first:
        return second
    seen = {(c["name"], c.get("pid")) for c in second["components"]}
    kept = [c for c in first["components"] if (c["name"], c.get("pid")) not in seen]
    return {**second, "components": kept + second["components"], "errors": first.get("errors", []) + second["errors"]}


# ------------------------------------------------------------------ folders (clusters captured otherwise)

def _argv_from_text(text: str) -> list[str]:
    """A saved command line: /proc/PID/cmdline (NUL-separated), one argument per line, or one shell line."""
    if "\0" in text:
        return [a for a in text.split("\0") if a]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) == 1:
        return shlex.split(lines[0].replace("\\\n", " "))
    joined = " ".join(ln.rstrip("\\").strip() for ln in lines)
    if all(ln.endswith("\\") for ln in lines[:-1]):          # a shell command continued over lines
        return shlex.split(joined)
    return lines


def _static_pods(folder: Path, errors: list[dict]) -> list[list[str]]:
    """Command lines of the static pod manifests under root/etc/kubernetes/manifests (kubeadm's control plane)."""
    out = []
    manifests = folder / "root" / "etc" / "kubernetes" / "manifests"
    if not manifests.is_dir():
        return out
    for path in sorted(manifests.glob("*.y*ml")):
        text, why = _read(path)
        if text is None:
            errors.append({"file": str(path), "reason": why})
            continue
        pod, why = yaml_document(text)
        try:
            if why:
                raise ValueError(why)
            for c in (pod.get("spec") or {}).get("containers") or []:
                argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
                if argv:
                    out.append(argv)
        except (ValueError, AttributeError, TypeError) as exc:
            errors.append({"file": str(path), "reason": f"not a pod manifest: {str(exc).splitlines()[0]}"})
    return out


def from_manifest(manifest: dict) -> dict | None:
    """An agent manifest's ``host_config`` with the manifest's host and its interfaces' addresses (no loopback,
    no IPv6 link-local)."""
    hc = manifest.get("host_config") if isinstance(manifest, dict) else None
    if not isinstance(hc, dict):
        return None
    addresses = []
    for iface in manifest.get("interfaces") or []:
        for a in (iface.get("addresses") or []) if isinstance(iface, dict) else []:
            ip = str(a).split("/")[0]
            if ip not in addresses and not ip.startswith(("127.", "fe80:")) and ip != "::1":
                addresses.append(ip)
    return {**hc, "host": hc.get("host") or manifest.get("host"), "addresses": hc.get("addresses") or addresses}


def _from_json(path: Path, folder: Path) -> dict:
    text, why = _read(path)
    if text is None:
        raise InputError(path, why or "unreadable")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(path, f"not JSON: {exc}") from None
    if isinstance(doc, dict) and "host_config" in doc:       # an agent manifest
        doc = from_manifest(doc)
    if not isinstance(doc, dict) or not isinstance(doc.get("components"), list):
        raise InputError(path, "no host_config with a components list")
    components = []
    for i, c in enumerate(doc["components"]):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("cmdline", []), list):
            raise InputError(path, f"components[{i}]: needs a name and a cmdline list")
        files = c.get("files") or {}
        components.append({"name": c["name"], "pid": c.get("pid") if isinstance(c.get("pid"), int) else None,
                           # redacted again: a hand-made file may hold what the agent would have removed
                           "cmdline": _redact.cmdline([str(a) for a in c.get("cmdline") or []]),
                           "files": {str(k): _redact.text(str(v)) for k, v in files.items()} if isinstance(files, dict) else {},
                           "errors": _errors(c.get("errors")),
                           **({"environ": redact_environ({str(k): str(v) for k, v in c["environ"].items()})}
                              if isinstance(c.get("environ"), dict) and c["environ"] else {})})
    return {"schema": SCHEMA, "host": doc.get("host") or folder.name, "source": "folder",
            "collected_at": doc.get("collected_at"), "addresses": list(doc.get("addresses") or []),
            "components": components, "errors": _errors(doc.get("errors"))}


def _errors(value) -> list[dict]:
    return [{"file": str(e.get("file")), "reason": str(e.get("reason"))} for e in value or [] if isinstance(e, dict)] \
        if isinstance(value, list) else []


def from_folder(folder: str | Path) -> dict:
    """A host's configuration from a folder (docs/host-config.md): ``host_config.json`` or an agent's
    ``manifest.json``, else ``cmdline/<component>`` files, static pod manifests and the files they name
    under ``root/``. Raises InputError when the folder holds nothing usable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder" if not folder.exists() else "not a folder")
    for name in ("host_config.json", "manifest.json"):
        if (folder / name).is_file():
            return _from_json(folder / name, folder)
    settings = load()
    errors: list[dict] = []
    argvs: list[tuple[str | None, list[str]]] = []
    cmd_dir = folder / "cmdline"
    if cmd_dir.is_dir():
        for path in sorted(p for p in cmd_dir.iterdir()):
            shown = str(path)
            text, why = _read(path, nul_separated=True)
            if text is None:
                errors.append({"file": shown, "reason": why})
                continue
            argv = _argv_from_text(text) if text.strip() else []
            hint = path.name if path.name in settings.components else None
            if not argv:
                errors.append({"file": shown, "reason": "empty command line"})
            elif settings.component_of(argv)[0] is None and hint is None:
                errors.append({"file": shown, "reason": f"{PurePosixPath(argv[0]).name!r} is not a known component "
                                                        f"({', '.join(settings.components)})"})
            else:
                argvs.append((hint, argv))
    have = {h or settings.component_of(a)[0] for h, a in argvs}
    for argv in _static_pods(folder, errors):
        name = settings.component_of(argv)[0]
        if name and name not in have:
            argvs.append((None, argv))
    if not argvs and not errors:
        raise InputError(folder, "no host configuration in it: host_config.json, manifest.json, cmdline/<component> "
                                 "or root/etc/kubernetes/manifests/*.yaml")
    root = _Root(folder / "root")
    components = []
    for hint, argv in argvs:
        name, args = settings.component_of(argv)
        if name is None:                    # named by its file, e.g. cmdline/kubelet holding "/opt/bin/kubelet-1.36 ..."
            name, args = hint, argv[1:]
        rec = _Recorder(settings, name, root)
        environ = _environ(folder / "environ" / name, settings.components[name].environ_prefix)
        comp = rec.record(None, argv, args, environ)
        comp["errors"] = [{**e, "file": str(root.resolve(e["file"]))} for e in comp["errors"]]
        components.append(comp)
    addresses = []
    if (folder / "addresses").is_file():
        text, _ = _read(folder / "addresses")
        addresses = [a.strip() for a in (text or "").split() if a.strip()]
    return {"schema": SCHEMA, "host": folder.name, "source": "folder", "collected_at": None,
            "addresses": addresses, "components": components, "errors": errors}


__all__ = ["MAX_FILE_BYTES", "SCHEMA", "collect", "for_manifest", "from_folder", "from_manifest", "merge"]
