"""``report.html`` in a real browser (headless Chromium), for an MLP and a graph model:
every image loads (complete and naturalWidth > 0), the page raises no error and logs no
console error, the verdict is the first section, no table is wider than the page at
1280 px, and a screenshot at that width can be taken (its path is printed). Skipped only
when Chromium is missing outside CI; in CI a missing browser fails."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from analysis.report import ReportConfig, build_report, write_report
from emulator.modelio import save_model
from emulator.network import Layer, Network

pytestmark = pytest.mark.browser

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) { errors.push(String(e.message || e.type)); }, true);
  var original = console.error;
  console.error = function () { errors.push(Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
    var page = document.documentElement.clientWidth;
    var wide = Array.prototype.slice.call(document.querySelectorAll("table")).filter(function (t) {
      var box = t.getBoundingClientRect();
      return box.right > page + 0.5 || box.left < -0.5 || t.parentElement.scrollWidth > t.parentElement.clientWidth;
    }).map(function (t) { return t.caption ? t.caption.textContent.slice(0, 60) : "?"; });
    var headings = Array.prototype.slice.call(document.querySelectorAll("h2")).map(function (h) { return h.textContent; });
    var pre = document.createElement("pre");
    pre.id = "__probe";
    pre.textContent = JSON.stringify({images: images.length, not_loaded: broken, errors: errors, page: page,
                                      tables: document.querySelectorAll("table").length, wide: wide,
                                      headings: headings});
    document.body.appendChild(pre);
  });
})();
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI must run the browser test (.ci/run installs it)")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")


def _mlp_config(d) -> ReportConfig:
    """Validation in two formats and a tau sweep of a small MLP."""
    rng = np.random.default_rng(3)
    net = Network([Layer(rng.standard_normal((12, 8)), rng.standard_normal(12), "tanh"),
                   Layer(rng.standard_normal((4, 12)), None, "identity")], "browser")
    save_model(net, d / "m.npz")
    np.savez(d / "data.npz", x=rng.standard_normal((16, 8)), y=rng.integers(0, 4, 16))
    return ReportConfig(model=str(d / "m.npz"), data=str(d / "data.npz"), samples=16, accs=("fp16", "bf16"),
                        low="bf16", high="fp32", taus=(10.0, 1.0), points=100, point_samples=8)


def _graph_config(d) -> ReportConfig:
    """The bundled digits-cnn graph: per-site tables and heat maps."""
    return ReportConfig(model="digits-cnn", samples=16, accs=("bf16", "fp8-e4m3fn"), low="fp8-e4m3fn", high="fp32",
                        taus=(10.0, 1.0), point_samples=8)


IMAGES = {"mlp": 7, "graph": 3}


@pytest.fixture(scope="module", params=["mlp", "graph"])
def report_html(request, tmp_path_factory):
    """A real report of each kind: (kind, path of report.html)."""
    d = tmp_path_factory.mktemp(f"browser-{request.param}")
    config = (_mlp_config if request.param == "mlp" else _graph_config)(d)
    return request.param, write_report(build_report(config), d / "report") / "report.html"


def _run(chromium: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _probe(chromium: str, html: str, tmp_path) -> dict:
    """Load ``html`` (with the probe at the top of <head>) in a 1280 px wide window and
    return what the probe saw."""
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    proc = _run(chromium, tmp_path, "--window-size=1280,2000", "--virtual-time-budget=5000", "--dump-dom",
                probed.as_uri())
    found = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no probe in the rendered page (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_the_probe_sees_broken_images_and_errors(tmp_path):
    """The check below can fail: a broken image and a script error are caught."""
    chromium = _chromium()
    page = ('<!DOCTYPE html><html><head><title>t</title></head><body><img src="data:image/png;base64,AAAA" alt="x">'
            "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    probe = _probe(chromium, page, tmp_path)
    assert probe["images"] == 1 and probe["not_loaded"] == 1
    assert any("boom" in e for e in probe["errors"]) and any("undefinedFunction" in e for e in probe["errors"])


def test_the_probe_sees_a_wide_table(tmp_path):
    """The width check can fail: a table of 40 long cells is wider than 1280 px."""
    chromium = _chromium()
    row = "".join(f"<td>{'x' * 12}{k}</td>" for k in range(40))
    page = (f'<!DOCTYPE html><html><head><title>t</title></head><body><h2>Verdict</h2><div class="scroll" '
            f'style="overflow-x: auto"><table><caption>wide</caption><tr>{row}</tr></table></div></body></html>')
    probe = _probe(chromium, page, tmp_path)
    assert probe["page"] <= 1280 and probe["wide"] == ["wide"]


def test_every_image_loads_without_errors(report_html, tmp_path):
    kind, path = report_html
    chromium = _chromium()
    html = path.read_text(encoding="utf-8")
    probe = _probe(chromium, html, tmp_path)
    assert probe["images"] == html.count("<img ") == IMAGES[kind]
    assert probe["not_loaded"] == 0
    assert probe["errors"] == []


def test_verdict_first_and_tables_fit_1280(report_html, tmp_path):
    kind, path = report_html
    probe = _probe(_chromium(), path.read_text(encoding="utf-8"), tmp_path)
    assert probe["headings"][0] == "Verdict"
    assert 1200 <= probe["page"] <= 1280
    assert probe["tables"] >= 4
    assert probe["wide"] == []


def test_screenshot(report_html, tmp_path):
    kind, path = report_html
    chromium = _chromium()
    shot = tmp_path / f"report-{kind}-1280.png"
    proc = _run(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", "--virtual-time-budget=5000",
                path.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot at 1280 px: {shot}")
