"""``report.html`` in a real browser (headless Chromium): every image loads (complete and
naturalWidth > 0), the page raises no error and logs no console error, and a screenshot
can be taken. Skipped only when Chromium is missing outside CI; in CI a missing browser
fails."""

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
    var pre = document.createElement("pre");
    pre.id = "__probe";
    pre.textContent = JSON.stringify({images: images.length, not_loaded: broken, errors: errors});
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


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    """A real report (validation in two formats and a tau sweep) of a small model."""
    d = tmp_path_factory.mktemp("browser")
    rng = np.random.default_rng(3)
    net = Network([Layer(rng.standard_normal((12, 8)), rng.standard_normal(12), "tanh"),
                   Layer(rng.standard_normal((4, 12)), None, "identity")], "browser")
    save_model(net, d / "m.npz")
    np.savez(d / "data.npz", x=rng.standard_normal((16, 8)), y=rng.integers(0, 4, 16))
    config = ReportConfig(model=str(d / "m.npz"), data=str(d / "data.npz"), samples=16, accs=("fp16", "bf16"),
                          low="bf16", high="fp32", taus=(10.0, 1.0), points=100, point_samples=8)
    return write_report(build_report(config), d / "report") / "report.html"


def _run(chromium: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _probe(chromium: str, html: str, tmp_path) -> dict:
    """Load ``html`` (with the probe at the top of <head>) and return what the probe saw."""
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    proc = _run(chromium, tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
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


def test_every_image_loads_without_errors(report_html, tmp_path):
    chromium = _chromium()
    html = report_html.read_text(encoding="utf-8")
    probe = _probe(chromium, html, tmp_path)
    assert probe["images"] == html.count("<img ") == 7
    assert probe["not_loaded"] == 0
    assert probe["errors"] == []


def test_screenshot(report_html, tmp_path):
    chromium = _chromium()
    shot = tmp_path / "report.png"
    proc = _run(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", "--virtual-time-budget=5000",
                report_html.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
