"""Path catalog text (title, requirements, reference) for reports, read from the classify layer's catalog."""

from __future__ import annotations

from ..classify.catalog import load_catalog, path_info as _lookup


def path_info(path_id: str) -> dict:
    """The catalog entry of a path ({} for an id outside the catalog)."""
    try:
        return dict(_lookup(path_id))
    except KeyError:
        return {}


def document_url() -> str:
    """The URL of the document the catalog quotes."""
    return str(load_catalog()["document"]["url"])


def reference_url(reference: str) -> str:
    """A link for a finding's reference: absolute URLs unchanged, anchors onto the document's URL."""
    ref = (reference or "").strip()
    if ref.startswith(("http://", "https://")):
        return ref
    anchor = ref.split("#", 1)[1] if "#" in ref else ref
    return document_url() + (f"#{anchor}" if anchor else "")
