"""report.html: built from the artifacts present, self-contained, robust; checked in headless Chromium.

The run folders are real: tiny runs of each mode and the real sweep assembly (see conftest.py).
Every expected number is read from the artifact files the runs wrote, never restated here.

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
import html
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
# A data-value attribute holds 10 significant digits.
RELATIVE_TOLERANCE = 1e-8
# θ is shown as text with 4 decimals.
DISPLAYED_THETA_TOLERANCE = 6e-5
CHROMIUM_TIMEOUT_S = 120
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


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


def close(found: float, expected: float) -> bool:
    return abs(float(found) - float(expected)) <= 1e-12 + RELATIVE_TOLERANCE * abs(float(expected))


def cells(page: _Page, table: str) -> dict[tuple[str, str], dict]:
    """(data-row, data-col) -> attributes of the numeric cells of one table."""
    return {
        (a.get("data-row"), a.get("data-col")): a
        for _, a in page.elements
        if a.get("data-table") == table and "data-value" in a
    }


def element(page: _Page, table: str, row: str, column: str | None) -> dict:
    """The attributes of one cell of a table, numeric or not."""
    found = [
        a
        for _, a in page.elements
        if a.get("data-table") == table and a.get("data-row") == row and a.get("data-col") == column
    ]
    assert len(found) == 1, f"{table}: {len(found)} cells for ({row}, {column})"
    return found[0]


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
            assert close(attributes[attribute], expected), (table, row, column)


def theta_shown(text: str, table: str) -> dict[str, np.ndarray]:
    """θ group -> the numbers of the last θ column of a θ table (the values after, or θ alone)."""
    body = re.search(rf'<table data-table="{re.escape(table)}">(.*?)</table>', text, re.S)
    assert body is not None, f"no table {table}"
    shown = {}
    for group, row in re.findall(r'<tr><th class="row">(.*?)</th>(.*?)</tr>', body.group(1), re.S):
        values = re.findall(r"<pre>(.*?)</pre>", row, re.S)
        shown[html.unescape(group)] = np.array([float(n) for n in NUMBER.findall(html.unescape(values[-1]))])
    return shown


def numeric_groups(theta: dict) -> dict[str, np.ndarray]:
    """The θ groups that are numbers (``pattern`` is not), flattened."""
    groups = {}
    for group, value in theta.items():
        try:
            groups[group] = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            continue
    return groups


def assert_self_contained(text: str) -> None:
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert not re.search(r"<script[^>]*\bsrc\s*=", lowered)
    assert "<link" not in lowered
    assert "@import" not in lowered and "url(" not in lowered and "@font-face" not in lowered


def images(page: _Page) -> list[str]:
    return [a.get("src", "") for tag, a in page.elements if tag == "img"]


def assert_images_embedded(page: _Page, *names: str) -> None:
    """Exactly the PNGs ``names`` (paths relative to the report's folder) are embedded, as PNG data."""
    embedded = [a for tag, a in page.elements if tag == "img"]
    assert sorted(a.get("alt") for a in embedded) == sorted(names)
    for attributes in embedded:
        source = attributes.get("src", "")
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def read(path: Path) -> tuple[str, _Page]:
    text = path.read_text(encoding="utf-8")
    return text, parse(text)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- every run writes its own report ------------------------------------------------------------
@pytest.mark.parametrize(
    "template, mode",
    [
        ("synthesis_template", "synthesis"),
        ("forensics_template", "forensics"),
        ("forensics_sweep_template", "forensics"),
        ("optimization_template", "optimization"),
        ("optimization_sweep_template", "optimization"),
        ("calibration_template", "calibrate"),
    ],
)
def test_every_run_and_sweep_wrote_its_report(request, template, mode):
    directory = request.getfixturevalue(template)
    text, page = read(directory / REPORT_NAME)
    assert f'<body data-mode="{mode}">' in text and "<section id=" in text
    assert 'id="notes"' not in text  # no artifact of a real run was skipped
    assert images(page)
    assert_self_contained(text)


# -- synthesis ---------------------------------------------------------------------------------
def test_synthesis_report_holds_every_matrix_value(synthesis_run, run_settings):
    path = write_report(synthesis_run)
    assert path == synthesis_run / REPORT_NAME and path.is_file()
    text, page = read(path)
    folder = synthesis_run / "synthesis"
    summary = read_json(synthesis_run / "summary.json")
    matrix = pd.read_csv(folder / "matrix.csv", index_col=0)
    assert set(matrix.index) == set(run_settings.synthesis_train)
    assert set(matrix.columns) == set(run_settings.synthesis_test)
    assert (
        len(cells(page, "matrix"))
        == matrix.size
        == len(run_settings.synthesis_train) * len(run_settings.synthesis_test)
    )
    assert_frame_in_page(page, "matrix", matrix)
    assert_frame_in_page(page, "matrix", pd.read_csv(folder / "matrix_std.csv", index_col=0), "data-std")
    corruptions = pd.read_csv(folder / "corruptions.csv", index_col=0)
    assert set(corruptions.columns) == {"clean", *run_settings.corruptions}
    assert len(cells(page, "corruptions")) == corruptions.size
    assert_frame_in_page(page, "corruptions", corruptions)
    assert_frame_in_page(
        page, "corruptions", pd.read_csv(folder / "corruptions_std.csv", index_col=0), "data-std"
    )
    assert_frame_in_page(page, "ranking", pd.read_csv(folder / "ranking.csv", index_col=0))
    best = pd.read_csv(folder / "best_train_per_test.csv", index_col=0)
    assert_frame_in_page(page, "best_train_per_test", best[[summary["metric"]]])
    numbers = keyed(page, "summary")
    for group in ("isp", "corruptions"):
        for part in ("train", "test", "change"):
            assert close(numbers[f"{group}.{part}"], summary[group][part])
    assert summary["best_train_pipeline"] in "".join(page.text)
    assert_images_embedded(page, "synthesis/heatmap.png", "stages.png")
    assert_self_contained(text)


def test_matrix_cells_mark_the_top_three_per_column(synthesis_run):
    _, page = read(write_report(synthesis_run))
    matrix = pd.read_csv(synthesis_run / "synthesis" / "matrix.csv", index_col=0)
    found = cells(page, "matrix")
    for column in matrix.columns:
        for row, value in matrix[column].items():
            # Ties share the better rank: 1 + the number of train pipelines strictly better.
            assert found[(row, column)]["data-rank"] == str(1 + int((matrix[column] > value).sum()))
        assert "background:#" in found[(matrix[column].idxmax(), column)]["style"]
    text = "".join(page.text)
    assert text.count("★") >= len(matrix.columns)


def test_provenance_is_collapsible(synthesis_run):
    text, _ = read(write_report(synthesis_run))
    run = read_json(synthesis_run / "run.json")
    provenance = text[text.index('<section id="provenance">') :]
    details = provenance.index("<details>")
    values = [run["command"], run["started"], run["platform"], "config.yaml", "mode: synthesis"]
    values += [run["git_commit"]] if run["git_commit"] else []
    expected = [html.escape(value) for value in values]
    expected += [
        f'data-key="{html.escape(name)}">{html.escape(version or "not installed")}<'
        for name, version in run["packages"].items()
    ]
    assert run["packages"]["torch"] in torch.__version__
    for value in expected:
        assert provenance.index(value) > details, value


# -- other modes --------------------------------------------------------------------------------
def test_forensics_report_shows_result_curves_and_theta(forensics_run):
    text, page = read(write_report(forensics_run))
    result = read_json(forensics_run / "forensics" / "result.json")
    numbers = keyed(page, "forensics")
    for key in ("lambda", "metric_before", "metric_after", "l2", "l2_per_pixel", "epochs"):
        assert close(numbers[key], result[key]), key
    assert close(numbers["metric_change"], result["metric_after"] - result["metric_before"])
    assert text.count('<svg class="chart"') == 3  # metric, l2, loss over epochs
    theta = cells(page, "forensics-theta")
    before, after = numeric_groups(result["theta_before"]), numeric_groups(result["theta_after"])
    assert {row for row, _ in theta} == set(after) and len(after) > 1
    for group, value in after.items():
        change = float(np.max(np.abs(value - before[group])))
        assert close(theta[(group, "max_abs_change")]["data-value"], change), group
    assert_images_embedded(page, "forensics/samples.png", "stages.png")
    assert_self_contained(text)


def test_forensics_sweep_report_shows_signature(forensics_sweep, run_settings):
    text, page = read(write_report(forensics_sweep))
    folder = forensics_sweep / "forensics"
    document = read_json(folder / "signature.json")
    assert set(document["targets"]) == set(run_settings.forensics_targets)
    sensitivity = cells(page, "signature-sensitivity")
    assert [row for row, _ in sensitivity] == document["ranking"] and document["ranking"]
    for target in document["ranking"]:
        assert close(sensitivity[(target, None)]["data-value"], document["sensitivity"][target])
    curves = cells(page, "signature-curves")
    jobs = len(run_settings.forensics_targets) * len(run_settings.forensics_lambdas)
    assert len(curves) == jobs * 5  # λ, before, after, drop, ℓ2 of each job
    for column in ("lambda", "metric_before", "metric_after", "metric_drop", "l2"):
        shown = sorted(float(a["data-value"]) for (_, col), a in curves.items() if col == column)
        expected = sorted(run[column] for runs in document["targets"].values() for run in runs)
        assert np.allclose(shown, expected, rtol=RELATIVE_TOLERANCE, atol=1e-12), column
    limits = document["limitations_of_use"]
    assert limits
    for target, limit in limits.items():
        for key in ("largest_safe_change", "smallest_unsafe_change", "worst_metric", "clean_metric"):
            attributes = element(page, "signature-limits", target, key)
            if limit[key] is None:  # no search state cost more than the tolerance: shown as "–"
                assert "data-value" not in attributes
            else:
                assert close(attributes["data-value"], limit[key]), (target, key)
    markdown = (folder / "signature.md").read_text()
    assert "signature.md" in text and html.escape(markdown.splitlines()[0]) in text
    # metric after and ℓ2 against λ; the sweep directory has no result.json of its own (its jobs do)
    assert text.count('<svg class="chart"') == 2
    assert_images_embedded(page, "forensics/signature.png")
    assert_self_contained(text)


def test_optimization_report_shows_table_2_and_curves(optimization_run):
    text, page = read(write_report(optimization_run))
    rows = cells(page, "optimization-summary")
    summary = read_json(optimization_run / "summary.json")
    stats = summary["table2"]
    assert {row for row, _ in rows} == set(stats) == {summary["setting"]}
    for setting, values in stats.items():
        for key, spread in (("mean", "std"), ("final_mean", "final_std")):
            assert close(rows[(setting, key)]["data-value"], values[key])
            assert close(rows[(setting, key)]["data-std"], values[spread])
    assert f"validation {summary['metric']}" in text
    assert text.count('<svg class="chart"') == 1 and text.count("<polyline") == 1  # one setting
    assert "Learned θ" in text
    theta = numeric_groups(read_json(optimization_run / "optimization" / "theta.json")["theta"])
    shown = theta_shown(text, "optimization-theta")
    assert set(theta) <= set(shown) and len(theta) > 1
    for group, value in theta.items():
        assert np.allclose(shown[group], value.ravel(), rtol=0, atol=DISPLAYED_THETA_TOLERANCE), group
    assert_images_embedded(page, "optimization/curves.png", "optimization/samples.png", "stages.png")
    assert_self_contained(text)


def test_optimization_sweep_report_compares_settings(optimization_sweep, run_settings):
    text, page = read(write_report(optimization_sweep))
    comparison = pd.read_csv(optimization_sweep / "optimization" / "comparison.csv", index_col=0)
    assert len(comparison) == run_settings.optimization_jobs
    assert_frame_in_page(page, "comparison", comparison)
    rows = cells(page, "optimization-summary")
    for setting, values in read_json(optimization_sweep / "summary.json")["table2"].items():
        assert close(rows[(setting, "mean")]["data-value"], values["mean"])
    best = comparison["mean"].idxmax()
    assert "best" in rows[(best, "mean")]["class"] and "★" in "".join(page.text)
    assert text.count("<polyline") == len(comparison)  # one curve per setting
    assert_images_embedded(page, "optimization/comparison.png")
    assert_self_contained(text)


def test_calibration_report(calibration_run, run_settings):
    text, page = read(write_report(calibration_run))
    fit = read_json(calibration_run / "calibrate" / "fit.json")
    numbers = keyed(page, "calibration-fit")
    metrics = {key: value for key, value in fit["metrics"].items() if not isinstance(value, str)}
    assert "psnr" in metrics
    for key, value in metrics.items():
        assert close(numbers[key], value), key
    assert numbers["heldout_pairs (count)"] == len(fit["heldout_pairs"])
    variants = pd.read_csv(calibration_run / "calibrate" / "variants.csv", index_col=0)
    assert set(variants["variant"]) == set(run_settings.calibration_variants)  # (+wb_first: Malvar, Menon)
    assert_frame_in_page(page, "calibration-variants", variants)
    assert "Fitted θ" in text and "Camera parameters" in text
    theta = numeric_groups(fit["theta"])
    shown = theta_shown(text, "calibration-theta")
    for group, value in theta.items():
        assert np.allclose(shown[group], value.ravel(), rtol=0, atol=DISPLAYED_THETA_TOLERANCE), group
    assert_images_embedded(page, "calibrate/residuals.png", "stages.png")
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


def test_malformed_result_json_is_reported_not_raised(forensics_run):
    (forensics_run / "forensics" / "result.json").write_text('{"lambda": 0.001, "metric_before": ')
    text, page = read(write_report(forensics_run))
    assert "forensics/result.json was skipped" in text
    assert_images_embedded(page, "forensics/samples.png", "stages.png")  # the rest of the run is still there
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
    assert not any("data-std" in a for a in cells(page, "matrix").values())
    assert_images_embedded(page, "stages.png")


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


def test_stage_figure_of_a_run(synthesis_template):
    """The figure the synthesis run drew of its best static pipeline on three of its raw images."""
    width, height = png_size(synthesis_template / "stages.png")
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
    assert_images_embedded(page, "synthesis/heatmap.png", "stages.png")


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
