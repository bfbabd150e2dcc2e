"""Headless Chromium rendering of a report: the DOM after load (with script errors) and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio", "--disable-extensions"]

#: Injected before anything else: records script errors and, after load, how many images decoded.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e)); });
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var b = document.body;
  b.setAttribute('data-probe-images', String(imgs.length));
  b.setAttribute('data-probe-images-ok', String(ok));
  b.setAttribute('data-probe-errors', window.__errors.join(' | '));
  b.setAttribute('data-probe-done', '1');
});
</script>"""


def chromium() -> str | None:
    """The Chromium binary (Debian's `chromium`), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(html_file: Path, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium not installed")
    with tempfile.TemporaryDirectory(prefix="commpath-chromium-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *extra, html_file.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(html_file, timeout: float = 90) -> tuple[str, str]:
    """The DOM of the page after its load event (with the error/image probe), and Chromium's stderr."""
    html_file = Path(html_file)
    with tempfile.TemporaryDirectory(prefix="commpath-probe-") as tmp:
        probed = Path(tmp) / html_file.name
        text = html_file.read_text(encoding="utf-8")
        probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
        proc = _run(probed, ["--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom"],
                    timeout)
    return proc.stdout, proc.stderr


def screenshot(html_file, png_file, width: int = 1280, height: int = 2200, timeout: float = 90) -> Path:
    """A PNG of the page's top ``height`` pixels at ``width``."""
    png_file = Path(png_file).resolve()
    png_file.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(Path(html_file), [f"--window-size={width},{height}", f"--screenshot={png_file}",
                                  "--virtual-time-budget=10000"], timeout)
    if not png_file.exists():
        raise RuntimeError(f"chromium wrote no screenshot: {proc.stderr.strip()[-500:]}")
    return png_file
