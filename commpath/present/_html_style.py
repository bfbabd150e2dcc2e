"""The HTML report's style sheet and its one script (the copy buttons of Wireshark filters)."""

CSS = """
:root { --fg:#212121; --muted:#616161; --line:#E0E0E0; --bg:#FAFAFA; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); margin: 0; background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 64px; }
header.top { border-bottom: 3px solid #263238; padding-bottom: 12px; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 8px; }
.meta { color: var(--muted); font-size: 13px; }
.overall { display: inline-block; margin-top: 8px; padding: 6px 12px; border-radius: 6px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #ECEFF1; font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: var(--bg); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         border: 1px solid; white-space: nowrap; }
.sev { display: inline-block; padding: 0 6px; border-radius: 4px; color: #fff; font-size: 12px; font-weight: 600; }
.pathdot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; vertical-align: middle; }
figure { margin: 8px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
section.path { border-left: 5px solid #90A4AE; padding-left: 16px; margin-top: 28px; }
.finding { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; margin: 10px 0; background: #fff; }
.finding h4 { margin: 0 0 6px; font-size: 14.5px; }
.finding dl { display: grid; grid-template-columns: 140px 1fr; gap: 3px 10px; margin: 6px 0 0; }
.finding dt { color: var(--muted); }
.finding dd { margin: 0; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; background: #F5F5F5;
       padding: 1px 4px; border-radius: 3px; word-break: break-all; }
button.copy { font-size: 11.5px; margin-left: 6px; padding: 1px 7px; cursor: pointer; border: 1px solid #B0BEC5;
              background: #fff; border-radius: 4px; }
.req { margin: 4px 0 8px 18px; padding: 0; }
blockquote { margin: 6px 0; padding: 4px 12px; border-left: 3px solid #B0BEC5; color: #455A64; font-style: italic; }
.note { color: var(--muted); font-size: 12.5px; }
.chips { margin-left: 14px; }
.scroll { max-width: 100%; }
table { table-layout: auto; }
td, th { overflow-wrap: anywhere; }
table.connections { font-size: 12px; table-layout: fixed; }
table.connections col.ep { width: 17%; }
table.connections col.ev { width: 8.5%; }
table.connections col.tls { width: 8%; }
table.connections col.sni { width: 11%; }
table.connections col.cipher { width: 14%; }
table.connections col.when { width: 7%; }
table.connections col.size { width: 7%; }
table.connections col.where { width: 11.5%; }
table.connections td { overflow-wrap: anywhere; word-break: normal; }
table.connections code { word-break: break-all; white-space: normal; }
td.bad { color: #C62828; font-weight: 600; }
td.good { color: #2E7D32; }
nav.toc { columns: 3; column-gap: 24px; margin: 8px 0 4px; font-size: 13.5px; }
nav.toc a { display: block; margin: 1px 0; }
nav.toc b { display: block; column-span: all; margin-bottom: 4px; }
ul.fix { margin: 4px 0 8px 18px; padding: 0; }
ul.fix li { margin: 3px 0; }
.controls { font-size: 12.5px; color: #37474F; }
figure img { width: 100%; }
@media print {
  body { font-size: 11px; }
  main { max-width: none; padding: 0; }
  nav.toc, button.copy { display: none; }
  th { position: static; }
  section.path, figure, .finding, table.verdicts, table.coverage { break-inside: avoid; }
  section.path { break-before: page; }
  a { color: inherit; text-decoration: none; }
  tr:hover td { background: none; }
  .overall, .badge, .sev { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
.chip { margin-right: 10px; font-size: 13px; }
table.coverage { width: auto; max-width: 100%; margin-top: 12px; }
table.coverage caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.coverage th { position: static; background: none; font-weight: 500; color: var(--muted); white-space: nowrap; }
"""

SCRIPT = """
document.querySelectorAll('button.copy').forEach(function (b) {
  b.addEventListener('click', function () {
    var text = b.getAttribute('data-copy');
    if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text); }
    else { var t = document.createElement('textarea'); t.value = text; document.body.appendChild(t);
           t.select(); try { document.execCommand('copy'); } catch (e) {} document.body.removeChild(t); }
    b.textContent = 'copied';
  });
});
"""
