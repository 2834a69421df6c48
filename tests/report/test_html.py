"""report.html: built from the artifacts present, each mode's section by the mode, self-contained, robust.

The run folders are real: tiny runs of each mode and the real sweep assembly (see conftest.py).
Every expected number is read from the artifact files the runs wrote, never restated here. The
headless-browser checks are in test_browser.py.
"""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import pytest
import torch

from raw2logit.errors import InputError
from raw2logit.report.html import REPORT_NAME, write_report
from tests.report.page import (
    RELATIVE_TOLERANCE,
    arrays_shown,
    assert_frame_in_page,
    assert_images_embedded,
    assert_no_figure_shown_twice,
    assert_self_contained,
    cells,
    charts,
    close,
    element,
    images,
    keyed,
    keyed_text,
    numeric_groups,
    read,
    read_json,
    series,
)

# θ is shown as text with 4 decimals.
DISPLAYED_THETA_TOLERANCE = 6e-5


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
    assert images(page) or charts(text)  # a sweep's figures are inline charts
    # the navigation links every section, in page order
    anchors = [a["id"] for tag, a in page.elements if tag == "section"]
    links = [
        a["href"] for i, (tag, a) in enumerate(page.elements) if tag == "a" and "nav" in page.ancestors[i]
    ]
    assert links == [f"#{anchor}" for anchor in anchors] and "summary" in anchors
    assert_no_figure_shown_twice(text, page)
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
    assert numbers["cells"] == summary["cells"]
    assert keyed_text(page, "summary")["best_train_pipeline"][0] == summary["best_train_pipeline"]
    assert_images_embedded(page, "synthesis/heatmap.png", "stages.png")
    # The heatmap is the tables' numbers again: one click away, not shown a second time.
    heatmap = next(
        i for i, (tag, a) in enumerate(page.elements) if tag == "img" and a["alt"] == "synthesis/heatmap.png"
    )
    assert "details" in page.ancestors[heatmap]
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
    assert page.all_text().count("★") >= len(matrix.columns)


def test_provenance_is_collapsible(synthesis_run):
    text, page = read(write_report(synthesis_run))
    run = read_json(synthesis_run / "run.json")
    provenance = text[text.index('<section id="provenance">') :]
    details = provenance.index("<details>")
    values = [run["command"], run["started"], run["platform"], "config.yaml"]
    values += [run["git_commit"]] if run["git_commit"] else []
    for value in values:
        assert provenance.index(html.escape(value, quote=False)) > details, value
    assert "mode: synthesis" in text
    packages = keyed_text(page, "packages")
    assert run["packages"]["torch"] in torch.__version__
    for name, version in run["packages"].items():
        shown, enclosing = packages[name]
        assert shown == (version or "not installed") and "details" in enclosing, name


# -- other modes --------------------------------------------------------------------------------
def test_forensics_report_shows_result_curves_and_theta(forensics_run):
    text, page = read(write_report(forensics_run))
    result = read_json(forensics_run / "forensics" / "result.json")
    numbers = keyed(page, "forensics")
    for key in ("lambda", "metric_before", "metric_after", "l2", "l2_per_pixel", "epochs"):
        assert close(numbers[key], result[key]), key
    assert close(numbers["metric_change"], result["metric_after"] - result["metric_before"])
    # metric, ℓ2 and loss over the search's epochs: one matplotlib chart each, inline
    assert text.count('<svg class="chart"') == 3
    drawn = charts(text)
    assert set(drawn) == {"forensics-metric", "forensics-l2", "forensics-loss"}
    assert all(len(series(svg)) == 1 for svg in drawn.values())
    theta = cells(page, "forensics-theta")
    before, after = numeric_groups(result["theta_before"]), numeric_groups(result["theta_after"])
    assert {row for row, _ in theta} == set(after) and len(after) > 1
    shown = arrays_shown(page, "forensics-theta", "theta_after")
    for group, value in after.items():
        assert close(
            theta[(group, "max_abs_change")]["data-value"], float(np.max(np.abs(value - before[group])))
        )
        assert np.allclose(shown[group], value, rtol=0, atol=DISPLAYED_THETA_TOLERANCE), group
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
            _, attributes = element(page, "signature-limits", target, key)
            if limit[key] is None:  # no search state cost more than the tolerance: shown as "–"
                assert "data-value" not in attributes
            else:
                assert close(attributes["data-value"], limit[key]), (target, key)
        for key in ("safe_min", "safe_max"):
            shown = arrays_shown(page, "signature-limits", key)[target]
            assert np.allclose(shown, np.ravel(limit[key]), rtol=0, atol=DISPLAYED_THETA_TOLERANCE)
    markdown = (folder / "signature.md").read_text()
    assert "signature.md" in text and markdown.splitlines()[0] in page.all_text()
    # The signature (paper Fig. 6a) once, inline, one line per θ group; signature.png holds the same
    # figure and is not embedded again. The sweep directory has no result.json of its own (its jobs do).
    drawn = charts(text)
    assert list(drawn) == ["forensics-signature"] and text.count('<svg class="chart"') == 1
    assert len(series(drawn["forensics-signature"])) == len(document["targets"])
    assert "(the same figure as forensics/signature.png)" in text
    assert images(page) == []
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
    drawn = charts(text)
    assert (
        list(drawn) == ["optimization-curves"] and len(series(drawn["optimization-curves"])) == 1
    )  # one setting
    assert "Learned θ" in text
    theta = numeric_groups(read_json(optimization_run / "optimization" / "theta.json")["theta"])
    shown = arrays_shown(page, "optimization-theta", "theta")
    assert set(theta) <= set(shown) and len(theta) > 1
    for group, value in theta.items():
        assert np.allclose(shown[group], value, rtol=0, atol=DISPLAYED_THETA_TOLERANCE), group
    # curves.png is the chart above: not embedded a second time
    assert_images_embedded(page, "optimization/samples.png", "stages.png")
    assert "(the same figure as optimization/curves.png)" in text
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
    assert "best" in rows[(best, "mean")]["class"] and "★" in page.all_text()
    drawn = charts(text)
    assert len(series(drawn["optimization-curves"])) == len(comparison)  # one curve per setting
    assert all(setting in drawn["optimization-curves"] for setting in comparison.index)  # legend as text
    assert "(the same figure as optimization/comparison.png)" in text and images(page) == []
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
    assert_frame_in_page(page, "calibration-variants", variants.select_dtypes("number"))
    assert "Fitted θ" in text and "Camera parameters" in text
    theta = numeric_groups(fit["theta"])
    shown = arrays_shown(page, "calibration-theta", "theta")
    for group, value in theta.items():
        assert np.allclose(shown[group], value, rtol=0, atol=DISPLAYED_THETA_TOLERANCE), group
    fitted = arrays_shown(page, "calibration-camera", "fitted")
    assert np.allclose(
        fitted["white_balance"], fit["camera"]["white_balance"], rtol=0, atol=DISPLAYED_THETA_TOLERANCE
    )
    assert_images_embedded(page, "calibrate/residuals.png", "stages.png")
    assert_self_contained(text)


# -- the mode decides its section ---------------------------------------------------------------
def test_mode_from_the_artifact_folder_when_summary_is_missing(forensics_run):
    (forensics_run / "summary.json").unlink()
    text, page = read(write_report(forensics_run))
    assert '<body data-mode="forensics">' in text and '<section id="forensics">' in text
    assert "summary.json is missing" in text
    assert_images_embedded(page, "forensics/samples.png", "stages.png")


def test_a_failing_mode_section_costs_that_section_only(synthesis_run, monkeypatch):
    from raw2logit.modes.synthesis import report

    def broken(artifacts, summary):
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "section_context", broken)
    text, page = read(write_report(synthesis_run))
    assert "synthesis section was skipped: RuntimeError: boom" in text
    assert '<section id="synthesis">' not in text
    assert '<section id="summary">' in text and '<section id="provenance">' in text
    # the figures that section would have shown still reach the page, once
    assert_images_embedded(page, "stages.png", "synthesis/heatmap.png")


def test_a_figure_is_embedded_when_its_data_is_unreadable(optimization_run, forensics_sweep):
    (optimization_run / "optimization" / "history.csv").write_text("step,setting\n")
    text, page = read(write_report(optimization_run))
    assert "optimization/history.csv was skipped: ValueError: missing column(s) metric" in text
    assert "optimization-curves" not in text
    assert "optimization/curves.png" in images(page)
    (forensics_sweep / "forensics" / "signature.json").write_text("{")
    text, page = read(write_report(forensics_sweep))
    assert "forensics/signature.json was skipped" in text and charts(text) == {}
    assert_images_embedded(page, "forensics/signature.png")


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
    assert "summary.json is missing" in text and "No artifacts found in this directory." in text


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


def test_text_from_artifacts_is_escaped(synthesis_run):
    summary = read_json(synthesis_run / "summary.json")
    summary["best_train_pipeline"] = "<img src=x onerror=alert(1)>"
    (synthesis_run / "summary.json").write_text(json.dumps(summary))
    text, _ = read(write_report(synthesis_run))
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert_self_contained(text)


def test_summary_that_is_not_an_object_is_reported(tmp_path):
    (tmp_path / "summary.json").write_text("[1, 2]")
    text, _ = read(write_report(tmp_path))
    assert "summary.json was skipped: ValueError: expected a JSON object, got array" in text


def test_write_report_names_a_missing_directory(tmp_path):
    with pytest.raises(InputError, match="not an existing directory"):
        write_report(tmp_path / "absent")
