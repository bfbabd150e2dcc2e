"""Regenerate docs/report.png: the HTML report of the bundled `broken` scenario in headless Chromium."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import commpath
from commpath.present import _browser, html

ROOT = Path(__file__).resolve().parents[1]


def main(scenario: str = "broken", out: Path = ROOT / "docs" / "report.png") -> Path:
    folder = ROOT / "captures" / scenario
    keylog, ca = folder / "keylog.txt", folder / "pki" / "ca.crt"
    analysis = commpath.open(folder, inventory=folder / "inventory.yaml",
                             keylog=keylog if keylog.is_file() else None, ca=ca if ca.is_file() else None)
    with tempfile.TemporaryDirectory(prefix="commpath-docs-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html.build_html(analysis, title=f"commpath report — lab scenario '{scenario}'"),
                        encoding="utf-8")
        return _browser.screenshot(page, out, width=1280, height=2300)


if __name__ == "__main__":
    print(main(*sys.argv[1:2]))
