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


#: Injected for layout checks: after load, the page's scroll width and every pair of text runs whose
#: boxes overlap (two different text nodes drawn on top of each other), as body attributes.
LAYOUT_PROBE = """<script>
window.addEventListener('load', function () {
  var runs = [];
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, null);
  var node, id = 0;
  while ((node = walker.nextNode())) {
    if (!node.textContent.trim()) continue;
    var el = node.parentElement;
    var style = el && window.getComputedStyle(el);
    if (!style || style.visibility === 'hidden' || style.display === 'none') continue;
    var range = document.createRange();
    range.selectNodeContents(node);
    var rects = range.getClientRects();
    for (var i = 0; i < rects.length; i++) {
      var r = rects[i];
      if (r.width < 1 || r.height < 1) continue;
      runs.push({id: id, l: r.left + window.scrollX, t: r.top + window.scrollY, r: r.right + window.scrollX,
                 b: r.bottom + window.scrollY, text: node.textContent.trim().slice(0, 40)});
    }
    id++;
  }
  runs.sort(function (a, b) { return a.t - b.t; });
  var overlaps = [];
  for (var i = 0; i < runs.length; i++) {
    for (var j = i + 1; j < runs.length && runs[j].t < runs[i].b; j++) {
      var a = runs[i], b = runs[j];
      if (a.id === b.id) continue;
      var w = Math.min(a.r, b.r) - Math.max(a.l, b.l), h = Math.min(a.b, b.b) - Math.max(a.t, b.t);
      // 1 px of slack: neighbouring lines of one paragraph may touch
      if (w > 1 && h > 1) overlaps.push(a.text + ' | ' + b.text);
    }
  }
  var scrollers = [];
  document.querySelectorAll('body *').forEach(function (el) {
    var ox = window.getComputedStyle(el).overflowX;
    if ((ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1) {
      scrollers.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : ''));
    }
  });
  var body = document.body, root = document.documentElement;
  body.setAttribute('data-layout-inner-scrollers', JSON.stringify(scrollers.slice(0, 20)));
  body.setAttribute('data-layout-viewport', String(root.clientWidth));
  body.setAttribute('data-layout-scroll-width', String(Math.max(root.scrollWidth, body.scrollWidth)));
  body.setAttribute('data-layout-text-runs', String(runs.length));
  body.setAttribute('data-layout-overlaps', JSON.stringify(overlaps.slice(0, 20)));
  body.setAttribute('data-layout-overlap-count', String(overlaps.length));
  body.setAttribute('data-layout-done', '1');
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


def dump_dom(html_file, timeout: float = 90, width: int | None = None, layout: bool = False) -> tuple[str, str]:
    """The DOM of the page after its load event (with the error/image probe, and the layout probe
    when ``layout``), laid out ``width`` pixels wide when given, and Chromium's stderr."""
    html_file = Path(html_file)
    with tempfile.TemporaryDirectory(prefix="commpath-probe-") as tmp:
        probed = Path(tmp) / html_file.name
        text = html_file.read_text(encoding="utf-8")
        probes = PROBE + (LAYOUT_PROBE if layout else "")
        probed.write_text(text.replace("<head>", "<head>" + probes, 1), encoding="utf-8")
        size = [f"--window-size={width},1000"] if width else []
        proc = _run(probed, [*size, "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom"],
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
