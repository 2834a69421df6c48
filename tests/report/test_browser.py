"""report.html in a real browser: Debian's headless ``chromium`` loads it from its file:// URL.

Every external host is unresolvable (``--host-resolver-rules``). Console output of the page is read
from Chromium's stderr log (``--enable-logging=stderr``): each ``console.*`` call, uncaught exception
and Content-Security-Policy violation of a page appears as ``INFO:CONSOLE...] "<message>", source:
<url> (<line>)``. The report has no script and logs nothing, so any console line from it fails.
Requests are read from Chromium's net log (``--log-net-log``). A deliberately broken page proves
that both detectors fire.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raw2logit.report.html import write_report
from tests.report.page import assert_frame_in_page, assert_images_embedded, cells, charts, parse

CHROMIUM_TIMEOUT_S = 120
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    # Every host is unresolvable: an accidental external request fails instead of leaving the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
# Chromium's log line for a page's console message, uncaught exception or CSP violation, e.g.
# [123:123:1128/143719.115003:INFO:CONSOLE:1] "Uncaught Error: boom", source: file:///p.html (1)
# (older releases write ``CONSOLE(1)``).
CONSOLE_LINE = re.compile(r':CONSOLE(?::|\()\d+\)?\] "(?P<message>.*)", source: (?P<source>\S*)')
BROWSER_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-extension:")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        message = "Debian's chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must provide it (.ci/run installs it).")
        pytest.skip(f"{message}; the headless browser tests are skipped outside CI.")
    return binary


def run_chromium(binary: str, page: Path, profile: Path, *action: str) -> subprocess.CompletedProcess:
    """Run Chromium once on ``page`` (its own profile); kill its whole process group on timeout."""
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, page.resolve().as_uri()]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"chromium did not finish within {CHROMIUM_TIMEOUT_S} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def console_problems(stderr: str, page: Path) -> list[str]:
    """Lines of Chromium's log that report console output or an uncaught exception of ``page``."""
    url = page.resolve().as_uri()
    problems = []
    for line in stderr.splitlines():
        match = CONSOLE_LINE.search(line)
        if "Uncaught" in line or (match and match["source"].startswith(url)):
            problems.append(line)
    return problems


def page_requests(net_log: Path) -> list[str]:
    """URLs a page loaded from a file asked the network for (browser-internal requests excluded)."""
    text = net_log.read_text(encoding="utf-8")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short at exit lacks its closing brackets
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if names.get(event.get("type")) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        # Requests on behalf of a file:// page carry the file:// site in their isolation key;
        # the browser's own background requests carry none ("null null") or their own site.
        if str(params.get("network_isolation_key", "")).startswith("file://") and not params[
            "url"
        ].startswith(BROWSER_SCHEMES):
            urls.append(params["url"])
    return urls


def load(binary: str, template: Path, scratch: Path) -> tuple[Path, Path, str, str, Path]:
    """A private copy of ``template`` with a fresh report, loaded in Chromium: (report folder, report,
    DOM, stderr, net log path)."""
    directory = Path(shutil.copytree(template, scratch / "run"))
    report = write_report(directory)
    net_log = scratch / "net_log.json"
    result = run_chromium(binary, report, scratch / "profile", f"--log-net-log={net_log}", "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    return directory, report, result.stdout, result.stderr, net_log


@pytest.fixture(scope="module")
def rendered(chromium, synthesis_template, tmp_path_factory):
    """The synthesis report loaded in Chromium."""
    return load(chromium, synthesis_template, tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def rendered_sweep(chromium, forensics_sweep_template, tmp_path_factory):
    """The forensics sweep report (inline SVG chart, no image) loaded in Chromium."""
    return load(chromium, forensics_sweep_template, tmp_path_factory.mktemp("browser"))


def test_browser_dom_holds_the_matrix_values(rendered):
    directory, _, dom, _, _ = rendered
    page = parse(dom)
    assert "raw2logit synthesis report" in page.all_text()
    matrix = pd.read_csv(directory / "synthesis" / "matrix.csv", index_col=0)
    assert len(cells(page, "matrix")) == matrix.size
    assert_frame_in_page(page, "matrix", matrix)
    assert_images_embedded(page, "synthesis/heatmap.png", "stages.png")


def test_browser_dom_holds_the_signature_chart(rendered_sweep):
    directory, _, dom, _, _ = rendered_sweep
    page = parse(dom)
    signature = json.loads((directory / "forensics" / "signature.json").read_text())
    assert list(charts(dom)) == ["forensics-signature"]
    # the chart's text is text in the page (legend and axis labels), not glyph outlines
    chart_text = [
        page.text_of(i)
        for i, (tag, a) in enumerate(page.elements)
        if a.get("class") == "chart" and tag == "svg"
    ]
    assert len(chart_text) == 1 and all(target in chart_text[0] for target in signature["targets"])


@pytest.mark.parametrize("loaded", ["rendered", "rendered_sweep"])
def test_browser_reports_no_console_error_and_no_request(request, loaded):
    _, report, _, stderr, net_log = request.getfixturevalue(loaded)
    assert console_problems(stderr, report) == []
    assert page_requests(net_log) == []


def test_detectors_flag_a_broken_page(chromium, tmp_path):
    """Proof that the two checks above can fail: an uncaught error and an external image."""
    page = tmp_path / "boom.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>boom</title></head><body><p>boom</p>'
        '<img src="https://example.invalid/pixel.png"><script>throw new Error("boom")</script></body></html>'
    )
    net_log = tmp_path / "net_log.json"
    result = run_chromium(chromium, page, tmp_path / "profile", f"--log-net-log={net_log}", "--dump-dom")
    problems = console_problems(result.stderr, page)
    assert any('"Uncaught Error: boom"' in line for line in problems), result.stderr[-3000:]
    assert set(page_requests(net_log)) == {"https://example.invalid/pixel.png"}


def test_browser_screenshot(chromium, rendered, tmp_path):
    _, report, _, _, _ = rendered
    shot = tmp_path / "report.png"
    result = run_chromium(
        chromium,
        report,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-3000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert shot.stat().st_size > 20_000 and pixels.std() > 10  # text, tables and figures, not a blank page
