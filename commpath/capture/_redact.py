"""Secret values out of recorded command lines and configuration text: tokens, passwords, private keys.

Line-based on purpose: the recorded files are YAML, JSON, INI or env files, often hand-edited and
sometimes broken; parsing them first would leak whatever the parser cannot read. A value is
redacted when its key names a secret (token, password, secret, private key, key data) and does not
name a file (``...File``, ``...-file``, ``...Path``, ``...-dir``): paths are evidence, contents are
not. Independently of keys, private-key PEM blocks, bootstrap tokens, JWTs, bearer tokens and URL
passwords are redacted wherever they appear.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

_SECRET_NAME = re.compile(r"token|passw(or)?d|secret|private[-_]?key|key[-_]?data|client[-_]?key[-_]?data|"
                          r"bearer|credential|apikey|api[-_]key", re.I)
_FILE_NAME = re.compile(r"(file|path|dir|directory|name|names|audience|usages?|ttl|groups?|auth)$", re.I)
_BOOL = {"true", "false", "1", "0", "yes", "no", ""}

_PEM_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(-----END \1-----|\Z)", re.S)
_BOOTSTRAP = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@", re.I)
# key: value (YAML, env, INI) and "key": "value" (JSON), the key possibly quoted or list-dashed
_YAML_PAIR = re.compile(r"^(?P<lead>\s*(?:-\s+)?[\"']?)(?P<key>[A-Za-z0-9_.\-]+)(?P<sep>[\"']?\s*[:=]\s*)(?P<val>.*)$")
_JSON_PAIR = re.compile(r"(?P<lead>\")(?P<key>[A-Za-z0-9_.\-]+)(?P<sep>\"\s*:\s*)(?P<val>\"(?:[^\"\\]|\\.)*\"|[^,}\s]+)")


def secret_key(name: str) -> bool:
    """A setting whose value is a secret itself (not the path of a file holding one)."""
    bare = name.lstrip("-")
    return bool(_SECRET_NAME.search(bare)) and not _FILE_NAME.search(bare)


def scrub(text: str) -> str:
    """Secrets that are recognisable by their shape, wherever they stand."""
    text = _PEM_KEY.sub(f"{REDACTED} private key", text)
    text = _JWT.sub(REDACTED, text)
    text = _BOOTSTRAP.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)


def _value_redacted(key: str, value: str) -> bool:
    v = value.strip().strip("\"'")
    return secret_key(key) and v.lower() not in _BOOL and v not in ("|", ">", "|-", ">-", "{}", "[]", "null", "~")


def text(content: str) -> str:
    """A configuration file's text with every secret value replaced by ``<redacted>``."""
    content = scrub(content)
    out: list[str] = []
    block_indent: int | None = None     # inside a YAML block scalar under a secret key
    for line in content.splitlines():
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if line.strip() and indent <= block_indent:
                block_indent = None
            else:
                if line.strip():
                    out.append(" " * indent + REDACTED)
                continue
        m = _YAML_PAIR.match(line)
        if m and secret_key(m["key"]):
            val = m["val"].strip()
            if val.split("#")[0].strip() in ("|", ">", "|-", ">-", "|+", ">+"):
                block_indent = indent
                out.append(line)
                continue
            if _value_redacted(m["key"], val):
                line = f"{m['lead']}{m['key']}{m['sep']}{REDACTED}"
        line = _JSON_PAIR.sub(lambda j: (f"{j['lead']}{j['key']}{j['sep']}\"{REDACTED}\""
                                         if _value_redacted(j["key"], j["val"]) else j[0]), line)
        out.append(line)
    return "\n".join(out) + ("\n" if content.endswith("\n") else "")


def cmdline(argv: list[str]) -> list[str]:
    """A command line with the values of secret flags (``--token=X``, ``--password X``) redacted."""
    out: list[str] = []
    pending = False
    for arg in argv:
        if pending and not arg.startswith("-"):
            out.append(REDACTED)
            pending = False
            continue
        pending = False
        if arg.startswith("-") and "=" in arg:
            name, _, value = arg.partition("=")
            out.append(f"{name}={REDACTED}" if _value_redacted(name, value) else scrub(arg))
        else:
            out.append(scrub(arg))
            pending = arg.startswith("--") and secret_key(arg) and not arg.startswith("--enable-")
    return out


__all__ = ["REDACTED", "cmdline", "scrub", "secret_key", "text"]
