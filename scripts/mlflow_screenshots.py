"""Screenshots of the MLflow UI for the README (docs/mlflow_*.png), taken in headless Chromium.

    .venv/bin/python scripts/mlflow_screenshots.py [--work /tmp/raw2logit-mlflow-ui] [--smoke] [--skip-build] [--out docs]

1. builds a store in --work: the README's forensics sweep (3 λ x 2 targets) and one synthesis
   train pipeline (2 folds, so there are per-epoch training curves);
2. starts `mlflow ui` on that store;
3. drives Chromium with playwright-core (Node; `npm install playwright-core` in --work if it is not
   there; the browser is Debian's /usr/bin/chromium, or --chromium) and writes
   docs/mlflow_runs.png (the runs table, sweep expanded, tag and metric columns),
   docs/mlflow_lambda_sweep.png (compare view: accuracy_after against log10_lambda per target) and
   docs/mlflow_training_curves.png (one synthesis cell's training and validation curves);
4. stops the server.
Takes about 5 minutes on 2 cores (2.5 with --smoke, whose models barely learn).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHOOT_MJS = r"""
import { chromium } from 'playwright-core';
import fs from 'fs';
const c = JSON.parse(process.argv[2]);
const ctx = await chromium.launchPersistentContext(fs.mkdtempSync(c.work + '/profile-'), {
  executablePath: c.chromium, headless: true, viewport: { width: 1400, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
const page = ctx.pages()[0] || await ctx.newPage();
const open = async (hash) => { await page.goto(c.url + '/#' + hash, { waitUntil: 'load' }); await page.waitForTimeout(6000);
  const close = page.getByRole('button', { name: 'Close' });          // the MLflow Assistant panel
  if (await close.count()) { await close.first().click(); await page.waitForTimeout(500); } };
const expand = async (name) => { await page.locator('[role=row]', { hasText: name }).first()
  .locator('[col-id="attributes.`Run Name`"] button').first().click(); await page.waitForTimeout(800); };

// workflowType=machine_learning: MLflow 3.17 opens every page on its GenAI side otherwise
const ml = 'workflowType=machine_learning';
// (a) runs table
await page.setViewportSize({ width: 1600, height: 900 });
await open(`/experiments/${c.experiment}/runs?${ml}`);
for (const name of ['forensics sweep', 'forensics λ=0.1 all', 'synthesis ']) await expand(name);
await page.getByTestId('column-selection-dropdown').filter({ visible: true }).first().click();
await page.waitForTimeout(800);
const menu = page.locator('[data-radix-popper-content-wrapper]').last();
for (const col of ['Dataset', 'Source', 'accuracy_before', 'accuracy_after', 'log10_lambda', 'l2',
                   'raw2logit.target']) {
  await page.getByPlaceholder('Search columns').fill(col); await page.waitForTimeout(400);
  await menu.getByText(col, { exact: true }).first().click(); await page.waitForTimeout(300);
}
await page.keyboard.press('Escape'); await page.waitForTimeout(800);
await page.locator('.ag-header-cell[col-id="attributes.`Run Name`"] .ag-header-cell-resize').dblclick();  // fit names
await page.waitForTimeout(1500);
await page.screenshot({ path: c.docs + '/mlflow_runs.png' });

// (b) compare view of the sweep's jobs: parallel coordinates forensics.target, log10_lambda, accuracy_after
await page.setViewportSize({ width: 1400, height: 900 });
await open(`/compare-runs?runs=${encodeURIComponent(JSON.stringify(c.sweep_children))}&experiments=${encodeURIComponent(JSON.stringify([c.experiment]))}&${ml}`);
await page.getByRole('button', { name: 'Clear All' }).click(); await page.waitForTimeout(500);
const selects = page.locator('.du-bois-light-select-selector');
for (const [i, name] of [[0, 'forensics.target'], [1, 'log10_lambda'], [1, 'accuracy_after']]) {
  await selects.nth(i).click(); await page.keyboard.type(name); await page.waitForTimeout(500);
  await page.keyboard.press('Enter'); await page.keyboard.press('Escape'); await page.waitForTimeout(500);
}
await page.mouse.click(300, 500); await page.waitForTimeout(2000);
await page.screenshot({ path: c.docs + '/mlflow_lambda_sweep.png' });

// (c) one synthesis cell's charts, filtered to the training and validation curves
await page.setViewportSize({ width: 1400, height: 1000 });
await open(`/experiments/${c.experiment}/runs/${c.cell}/model-metrics?${ml}`);
await page.getByPlaceholder('Search metric charts').fill('^(train|val)_');
await page.mouse.move(5, 995); await page.waitForTimeout(3000);
await page.screenshot({ path: c.docs + '/mlflow_training_curves.png' });
await ctx.close();
"""


def run(args: list[str]) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True)


def build_store(work: Path, smoke: bool) -> None:
    paths = [f"paths.outputs={work}", f"paths.data={work}/data", f"paths.cache={work}/cache"]
    extra = ["experiment=smoke"] if smoke else []
    run([sys.executable, "run.py", "-m", "mode=forensics", "lambda=1e-1,1e-2,1e-3",
         "forensics.target=all,black_level", *extra, *paths, f"hydra.sweep.dir={work}/sweep"])  # fmt: skip
    run([sys.executable, "run.py", "synthesis.train=[bi_s_me]", "synthesis.test=[bi_s_me,ma_u_ga,me_s_ga]",
         *extra, *(["epochs=8"] if smoke else []), *paths, f"hydra.run.dir={work}/synthesis"])  # fmt: skip


def run_ids(store: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("raw2logit").experiment_id
    latest = lambda f: client.search_runs(
        [experiment], f, order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    sweep = latest("tags.`raw2logit.sweep` = 'true'").info.run_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{sweep}'", max_results=100)
    cell = latest("tags.`raw2logit.mode` = 'synthesis' and tags.`raw2logit.fold` = '0'").info.run_id
    return {"experiment": experiment, "sweep_children": [r.info.run_id for r in children], "cell": cell}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/raw2logit-mlflow-ui"))
    parser.add_argument("--smoke", action="store_true", help="build the store with experiment=smoke")
    parser.add_argument("--skip-build", action="store_true", help="reuse the store already in --work")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.skip_build:
        build_store(work, args.smoke)
    store = f"sqlite:///{work}/mlflow.db"
    if not (work / "node_modules" / "playwright-core").exists():
        subprocess.run(["npm", "install", "--no-save", "--prefix", str(work), "playwright-core"], check=True)
    (work / "shoot.mjs").write_text(SHOOT_MJS)
    config = {**run_ids(store), "url": f"http://127.0.0.1:{args.port}", "work": str(work),
              "docs": str(args.out.resolve()), "chromium": args.chromium}  # fmt: skip
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", store, "--port", str(args.port)],
                              stdout=open(work / "mlflow_ui.log", "w"), stderr=subprocess.STDOUT)  # fmt: skip
    try:
        for _ in range(90):
            try:
                urllib.request.urlopen(config["url"] + "/health", timeout=2)
                break
            except OSError:
                time.sleep(2)
        subprocess.run(["node", str(work / "shoot.mjs"), json.dumps(config)], cwd=work, check=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name in ("mlflow_runs", "mlflow_lambda_sweep", "mlflow_training_curves"):
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
