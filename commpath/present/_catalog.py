"""Path catalog text (title, requirements, reference) for reports, from the classify layer when present."""

from __future__ import annotations

DOC_URL = "https://kubernetes.io/docs/concepts/architecture/control-plane-node-communication/"


def path_info(path_id: str) -> dict:
    """The catalog entry of a path ({} when the catalog is unavailable or lacks it)."""
    try:
        from ..classify.catalog import path_info as lookup
        return dict(lookup(path_id))
    except Exception:  # catalog not installed, or an id outside it
        return {}


def document_url() -> str:
    try:
        from ..classify.catalog import load_catalog
        return str(load_catalog()["document"]["url"])
    except Exception:
        return DOC_URL


def reference_url(reference: str) -> str:
    """A link for a finding's reference: absolute URLs unchanged, anchors onto the document's URL."""
    ref = (reference or "").strip()
    if ref.startswith(("http://", "https://")):
        return ref
    anchor = ref.split("#", 1)[1] if "#" in ref else ref
    return document_url() + (f"#{anchor}" if anchor else "")
