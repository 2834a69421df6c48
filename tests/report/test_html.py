"""report.html: built from the artifacts present, self-contained, robust; checked in headless Chromium.

The browser tests run Debian's ``chromium`` against the file:// URL with every external host
unresolvable (``--host-resolver-rules``). Console output of the page is read from Chromium's
stderr log (``--enable-logging=stderr``): each ``console.*`` call, uncaught exception and
Content-Security-Policy violation of a page appears as ``INFO:CONSOLE...] "<message>", source:
<url> (<line>)``. The report has no script and logs nothing, so any console line from it fails.
Requests are read from Chromium's net log (``--log-net-log``). A deliberately broken page proves
that both detectors fire.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raw2logit.errors import InputError
from raw2logit.isp import STAGE_NAMES, CameraParams, ParametrizedPipeline, StaticPipeline
from raw2logit.report.html import REPORT_NAME, write_report
from raw2logit.report.stages import save_stage_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOLERANCE = 1e-4
CHROMIUM_TIMEOUT_S = 120


# -- parsing the page -------------------------------------------------------------------------
class _Page(HTMLParser):
    """Every element's attributes, every <img> src, and the text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def cells(page: _Page, table: str) -> dict[tuple[str, str], dict]:
    """(data-row, data-col) -> attributes of the numeric cells of one table."""
    return {
        (a.get("data-row"), a.get("data-col")): a
        for _, a in page.elements
        if a.get("data-table") == table and "data-value" in a
    }


def keyed(page: _Page, table: str) -> dict[str, float]:
    """data-key -> data-value of one key/value table."""
    return {
        a["data-key"]: float(a["data-value"])
        for _, a in page.elements
        if a.get("data-table") == table and "data-key" in a and "data-value" in a
    }


def assert_frame_in_page(page: _Page, table: str, frame: pd.DataFrame, attribute: str = "data-value") -> None:
    found = cells(page, table)
    for row in frame.index:
        for column in frame.columns:
            expected = float(frame.loc[row, column])
            if np.isnan(expected):
                continue
            attributes = found.get((str(row), str(column)))
            assert attributes is not None, f"{table}: no cell for ({row}, {column})"
            assert abs(float(attributes[attribute]) - expected) <= TOLERANCE, (table, row, column)


def assert_self_contained(text: str) -> None:
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert not re.search(r"<script[^>]*\bsrc\s*=", lowered)
    assert "<link" not in lowered
    assert "@import" not in lowered and "url(" not in lowered and "@font-face" not in lowered


def images(page: _Page) -> list[str]:
    return [a.get("src", "") for tag, a in page.elements if tag == "img"]


def assert_images_embedded(page: _Page, count: int) -> None:
    sources = images(page)
    assert len(sources) == count
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def read(path: Path) -> tuple[str, _Page]:
    text = path.read_text(encoding="utf-8")
    return text, parse(text)


# -- synthesis ---------------------------------------------------------------------------------
def test_synthesis_report_holds_every_matrix_value(synthesis_run):
    path = write_report(synthesis_run)
    assert path == synthesis_run / REPORT_NAME and path.is_file()
    text, page = read(path)
    folder = synthesis_run / "synthesis"
    matrix = pd.read_csv(folder / "matrix.csv", index_col=0)
    assert len(cells(page, "matrix")) == matrix.size == 144
    assert_frame_in_page(page, "matrix", matrix)
    assert_frame_in_page(page, "matrix", pd.read_csv(folder / "matrix_std.csv", index_col=0), "data-std")
    assert_frame_in_page(page, "corruptions", pd.read_csv(folder / "corruptions.csv", index_col=0))
    assert_frame_in_page(
        page, "corruptions", pd.read_csv(folder / "corruptions_std.csv", index_col=0), "data-std"
    )
    assert_frame_in_page(page, "ranking", pd.read_csv(folder / "ranking.csv", index_col=0))
    best = pd.read_csv(folder / "best_train_per_test.csv", index_col=0)
    assert_frame_in_page(page, "best_train_per_test", best[["accuracy"]])
    summary = json.loads((synthesis_run / "summary.json").read_text())
    numbers = keyed(page, "summary")
    for group in ("isp", "corruptions"):
        for part in ("train", "test", "change"):
            assert abs(numbers[f"{group}.{part}"] - summary[group][part]) <= TOLERANCE
    assert summary["best_train_pipeline"] in "".join(page.text)
    # heatmap.png and stages.png
    assert_images_embedded(page, 2)
    assert_self_contained(text)


def test_matrix_cells_mark_the_top_three_per_column(synthesis_run):
    _, page = read(write_report(synthesis_run))
    matrix = pd.read_csv(synthesis_run / "synthesis" / "matrix.csv", index_col=0)
    found = cells(page, "matrix")
    for column in matrix.columns:
        order = matrix[column].sort_values(ascending=False).index
        for rank, row in enumerate(order[:3], start=1):
            assert found[(row, column)]["data-rank"] == str(rank)
        assert "background:#" in found[(order[0], column)]["style"]
    text = "".join(page.text)
    assert text.count("★") >= len(matrix.columns)


def test_provenance_is_collapsible(synthesis_run):
    text, _ = read(write_report(synthesis_run))
    provenance = text[text.index('<section id="provenance">') :]
    assert provenance.index("<details>") < provenance.index("0123456789abcdef")
    for expected in ("run.py mode=synthesis seed=7", "torch", torch.__version__, "config.yaml"):
        assert expected in provenance


# -- other modes --------------------------------------------------------------------------------
def test_forensics_report_shows_result_curves_and_theta(tmp_path, artifacts):
    directory = artifacts.forensics(tmp_path / "run")
    text, page = read(write_report(directory))
    result = artifacts.forensics_result()
    numbers = keyed(page, "forensics")
    for key in ("lambda", "metric_before", "metric_after", "l2"):
        assert abs(numbers[key] - result[key]) <= TOLERANCE
    assert abs(numbers["metric_change"] - (result["metric_after"] - result["metric_before"])) <= TOLERANCE
    assert text.count('<svg class="chart"') == 3  # metric, l2, loss over epochs
    theta = cells(page, "forensics-theta")
    assert abs(float(theta[("gamma", "max_abs_change")]["data-value"]) - 0.4) <= TOLERANCE
    assert_images_embedded(page, 2)  # samples.png, stages.png
    assert_self_contained(text)


def test_forensics_sweep_report_shows_signature(tmp_path, artifacts):
    directory = artifacts.forensics(tmp_path / "sweep", sweep=True)
    text, page = read(write_report(directory))
    document = json.loads((directory / "forensics" / "signature.json").read_text())
    assert float(cells(page, "signature-sensitivity")[("gamma", None)]["data-value"]) == 12.5
    curves = cells(page, "signature-curves")
    assert len(curves) == 4 * 5  # λ, before, after, drop, ℓ2 of each of the 4 jobs
    after = sorted(float(a["data-value"]) for (_, col), a in curves.items() if col == "metric_after")
    expected = sorted(run["metric_after"] for runs in document["targets"].values() for run in runs)
    assert np.allclose(after, expected, atol=TOLERANCE)
    limits = cells(page, "signature-limits")
    assert float(limits[("gamma", "smallest_unsafe_change")]["data-value"]) == 0.4
    assert "signature.md" in text and text.count('<svg class="chart"') == 3 + 2
    assert_images_embedded(page, 3)  # samples.png, signature.png, stages.png
    assert_self_contained(text)


def test_optimization_report_shows_table_2_and_curves(tmp_path, artifacts):
    directory = artifacts.optimization(tmp_path / "run")
    text, page = read(write_report(directory))
    rows = cells(page, "optimization-summary")
    stats = json.loads((directory / "summary.json").read_text())["table2"]
    for setting, values in stats.items():
        for key, spread in (("mean", "std"), ("final_mean", "final_std")):
            assert abs(float(rows[(setting, key)]["data-value"]) - values[key]) <= TOLERANCE
            assert abs(float(rows[(setting, key)]["data-std"]) - values[spread]) <= TOLERANCE
    assert "validation accuracy" in text and '<svg class="chart"' in text
    assert "Learned θ" in text and "2.31" in text
    assert_images_embedded(page, 2)  # curves.png, samples.png
    assert_self_contained(text)


def test_optimization_sweep_report_compares_settings(tmp_path, artifacts):
    directory = artifacts.optimization(tmp_path / "sweep", sweep=True)
    text, page = read(write_report(directory))
    comparison = pd.read_csv(directory / "optimization" / "comparison.csv", index_col=0)
    assert_frame_in_page(page, "comparison", comparison)
    rows = cells(page, "optimization-summary")
    best = comparison["mean"].idxmax()
    assert "best" in rows[(best, "mean")]["class"] and "★" in "".join(page.text)
    assert_images_embedded(page, 1)  # comparison.png
    assert_self_contained(text)


def test_calibration_report(tmp_path, artifacts):
    directory = artifacts.calibration(tmp_path / "run")
    text, page = read(write_report(directory))
    assert keyed(page, "calibration-fit")["psnr"] == 34.5
    assert_frame_in_page(
        page, "calibration-variants", pd.read_csv(directory / "calibration" / "variants.csv", index_col=0)
    )
    assert "Fitted θ" in text and "Camera parameters" in text
    assert_images_embedded(page, 1)
    assert_self_contained(text)


# -- robustness ---------------------------------------------------------------------------------
def test_missing_artifacts_are_omitted(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "summary.json").write_text(json.dumps({"mode": "synthesis", "metric": "accuracy"}))
    text, page = read(write_report(directory))
    for section in ("synthesis", "forensics", "optimization", "stages", "provenance"):
        assert f'<section id="{section}"' not in text
    assert images(page) == []
    assert 'id="notes"' not in text


def test_empty_directory_gives_a_page_with_a_note(tmp_path):
    text, _ = read(write_report(tmp_path))
    assert "summary.json is missing" in text


def test_malformed_result_json_is_reported_not_raised(tmp_path, artifacts):
    directory = artifacts.forensics(tmp_path / "run")
    (directory / "forensics" / "result.json").write_text('{"lambda": 0.001, "metric_before": ')
    text, page = read(write_report(directory))
    assert "forensics/result.json was skipped" in text
    assert_images_embedded(page, 2)  # the rest of the run is still there
    assert '<section id="provenance">' in text


def test_malformed_optional_artifacts_are_reported(synthesis_run):
    folder = synthesis_run / "synthesis"
    (folder / "matrix_std.csv").write_text("")
    (folder / "heatmap.png").write_bytes(b"not a png")
    (folder / "ranking.csv").write_text("train,rank\n")
    text, page = read(write_report(synthesis_run))
    assert "synthesis/matrix_std.csv was skipped" in text
    assert "synthesis/heatmap.png was skipped: ValueError: not a PNG file" in text
    assert "synthesis/ranking.csv was skipped" in text
    matrix = pd.read_csv(folder / "matrix.csv", index_col=0)
    assert_frame_in_page(page, "matrix", matrix)  # the matrix itself is still shown, without std
    assert_images_embedded(page, 1)


def test_summary_that_is_not_an_object_is_reported(tmp_path):
    (tmp_path / "summary.json").write_text("[1, 2]")
    text, _ = read(write_report(tmp_path))
    assert "summary.json was skipped: ValueError: expected a JSON object, got array" in text


def test_write_report_names_a_missing_directory(tmp_path):
    with pytest.raises(InputError, match="not an existing directory"):
        write_report(tmp_path / "absent")


# -- stage figure -------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_stage_figure_static_pipeline(tmp_path, artifacts):
    path = artifacts.stage_figure(tmp_path)
    width, height = png_size(path)
    assert width > 1.5 * height > 0  # 8 stages side by side, 3 rows of square images


def test_stage_figure_parametrized_pipeline_keeps_its_state(tmp_path):
    pipeline = ParametrizedPipeline(CameraParams.published("drone"), normalize_output=True).train()
    raw = torch.rand(5, 16, 16, generator=torch.Generator().manual_seed(1))
    path = save_stage_figure(pipeline, raw, tmp_path / "stages.png", max_images=2)
    assert png_size(path)[0] > 0
    assert pipeline.training and int(pipeline.output_norm.num_batches_tracked) == 0


def test_stage_figure_rejects_an_unknown_stage(tmp_path):
    pipeline = StaticPipeline("ma_u_ga", CameraParams.published("identity"))
    with pytest.raises(InputError, match="not produced"):
        save_stage_figure(pipeline, torch.rand(1, 16, 16), tmp_path / "x.png", names=[*STAGE_NAMES, "tone"])


# -- headless Chromium --------------------------------------------------------------------------
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


@pytest.fixture(scope="module")
def rendered(chromium, synthesis_template, tmp_path_factory):
    """The synthesis report loaded in Chromium: (report folder, report, DOM, stderr, net log path)."""
    directory = Path(shutil.copytree(synthesis_template, tmp_path_factory.mktemp("browser") / "run"))
    report = write_report(directory)
    scratch = tmp_path_factory.mktemp("chromium")
    net_log = scratch / "net_log.json"
    result = run_chromium(chromium, report, scratch / "profile", f"--log-net-log={net_log}", "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    return directory, report, result.stdout, result.stderr, net_log


def test_browser_dom_holds_the_matrix_values(rendered):
    directory, _, dom, _, _ = rendered
    page = parse(dom)
    assert "raw2logit synthesis report" in "".join(page.text)
    matrix = pd.read_csv(directory / "synthesis" / "matrix.csv", index_col=0)
    assert len(cells(page, "matrix")) == matrix.size
    assert_frame_in_page(page, "matrix", matrix)
    assert len(images(page)) == 2


def test_browser_reports_no_console_error_and_no_request(rendered):
    _, report, _, stderr, net_log = rendered
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
    assert png_size(shot) == (1280, 2000)
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert shot.stat().st_size > 20_000 and pixels.std() > 10  # text, tables and figures, not a blank page
