"""What HTTP/1 and HTTP/2 parsing share: redaction of request targets, credential kinds, the result record."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .streams import FlowStreams, Stream

MAX_PATH = 2048

#: Query parameters whose values are secrets.
SECRET_PARAMS = re.compile(
    r"(?i)([?&;](?:access_token|token|id_token|refresh_token|password|passwd|secret|api_key|apikey|"
    r"key|sig|signature|auth|authorization|code|x-amz-signature|x-amz-credential|x-amz-security-token)=)"
    r"[^&;#]*")
USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")
REDACTED = "REDACTED"


def redact_path(path: str) -> str:
    """Drop credentials from a request target: userinfo and secret query values."""
    if "?" not in path and "&" not in path and ";" not in path and "@" not in path:
        return path[:MAX_PATH]                      # neither pattern can match: nothing to drop
    path = USERINFO.sub(r"\1" + REDACTED + "@", path)
    path = SECRET_PARAMS.sub(r"\1" + REDACTED, path)
    return path[:MAX_PATH]


def auth_kinds(headers: list[tuple[str, str]]) -> str | None:
    """Which credentials a message carried (names only; the values are dropped here)."""
    kinds: list[str] = []
    for name, value in headers:
        n = name.lower()
        if n in ("authorization", "proxy-authorization"):
            scheme = value.split(" ", 1)[0].lower() if value else "unknown"
            kind = scheme if scheme in ("bearer", "basic", "digest", "negotiate", "ntlm", "aws4-hmac-sha256") \
                else "other"
            if n == "proxy-authorization":
                kind = "proxy-" + kind
        elif n == "cookie":
            kind = "cookie"
        elif n == "set-cookie":
            kind = "set-cookie"
        elif n in ("x-auth-token", "x-api-key", "x-csrf-token", "x-amz-security-token"):
            kind = n
        else:
            continue
        if kind not in kinds:
            kinds.append(kind)
    return ",".join(kinds) or None


@dataclass
class HttpResult:
    rows: list[dict] = field(default_factory=list)
    tunnel: FlowStreams | None = None           # bytes inside a CONNECT tunnel (or after 101 h2c)
    partial: bool = False
    parse_error: str | None = None


def sub_stream(stream: Stream, start: int) -> Stream:
    """The part of ``stream`` from ``start`` on, with offsets rebased to 0."""
    if start <= 0:
        return stream
    offs: list[int] = []
    frs: list[int] = []
    for off, fr in zip(stream.offsets, stream.frames):
        if off <= start:
            offs, frs = [0], [fr]
        else:
            offs.append(off - start)
            frs.append(fr)
    return Stream(stream.data[start:], tuple(offs), tuple(frs), stream.gap, stream.limited)
