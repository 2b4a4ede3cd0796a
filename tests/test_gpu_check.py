"""bench/gpu_check.sh --dry-run (every step of the GPU check on the CPU at tiny sizes), the
report's table reading, and the wheel list of bench/gpu_wheels.py (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_report  # noqa: E402
import gpu_wheels  # noqa: E402

STEPS = [
    "wheels",
    "data",
    "logmel_store",
    "logmel_compute",
    "train_faithful",
    "train_fast",
    "train_step",
    "predict_folds",
    "predict_bench",
    "kernel_estimate",
    "search_trial",
    "train_resume",
    "train_finetune",
    "train_compiled",
]


def test_markdown_tables_splits_tables_printed_back_to_back():
    text = "\n".join(
        [
            "header line",
            "| a | b |",
            "|---|---|",
            "| 1 | 2.50x |",
            "| c | d |",
            "|---|---|",
            "| 3 | 4 |",
            "",
            "| e |",
            "|---|",
        ]
    )
    tables = gpu_report.markdown_tables(text)
    assert tables == [[{"a": "1", "b": "2.50x"}], [{"c": "3", "d": "4"}], []]
    assert gpu_report.number("2.50x") == 2.5 and gpu_report.number("1,961") == 1961
    assert gpu_report.share(4800, full_size=True) == "29.8%"
    assert gpu_report.share(4800, full_size=False) == "n/a"


def test_wheel_list_is_what_the_gpu_image_lacks(tmp_path):
    names = {gpu_wheels.canonicalize_name(r.name) for r in gpu_wheels.root_requirements()}
    assert names == {
        "pytorch-argus",
        "librosa",
        "soundfile",
        "sounddevice",
        "optuna",
        "sqlalchemy",
        "psycopg",
        "psycopg-binary",
    }
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.1",
            "Name: demo",
            "Requires-Dist: numpy>=1.22",
            "Requires-Dist: pooch>=1.1",
            'Requires-Dist: standard-aifc; python_version >= "3.13"',
            'Requires-Dist: pytest; extra == "tests"',
            'Requires-Dist: colorama; sys_platform == "win32"',
        ]
    )
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo-1.0.dist-info/METADATA", metadata)
    assert [r.name for r in gpu_wheels.requires(wheel)] == ["numpy", "pooch"]
    assert "numpy" in gpu_wheels.IMAGE_PACKAGES and "pooch" not in gpu_wheels.IMAGE_PACKAGES


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("FREESOUND_DATA_DIR", None)
    result = subprocess.run(
        ["bash", str(ROOT / "bench/gpu_check.sh"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return out, result


def test_dry_run_passes_every_step(dry_run):
    out, result = dry_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["dry_run"] and report["passed"]
    assert [s["step"] for s in report["steps"]] == STEPS
    status = {s["step"]: s["status"] for s in report["steps"]}
    assert status.pop("wheels") == status.pop("train_compiled") == "skipped"
    assert set(status.values()) == {"ok"}


def test_dry_run_report_tables(dry_run):
    out, result = dry_run
    report = json.loads((out / "gpu_report.json").read_text())
    figures = {f["figure"]: f for f in report["figures"]}
    faithful = next(
        f for name, f in figures.items() if name.startswith("training end to end, fp32")
    )
    assert faithful["vs faithful"] == "1.00x" and faithful["value"] > 0
    assert any(name.startswith("training end to end, bf16") for name in figures)
    assert any(name.startswith("store build, torch log-mel") for name in figures)
    assert any(name.startswith("step only, bf16") for name in figures)
    assert any(name.startswith("predict_folds.py fold 0") for name in figures)
    assert any(name.startswith("stacking kernel estimate") for name in figures)
    resumed = json.loads((out / "train_resume.json").read_text())
    assert resumed["exact"] and resumed["saved_epoch"] == 0 and resumed["epochs"] == 2
    assert set(resumed["largest_differences"].values()) == {0.0}  # bit for bit on the CPU
    assert "terminated (SIGTERM)" in (out / "logs" / "train_resume.log").read_text()
    assert all(f["share of bf16 peak"] == "n/a" for f in figures.values())  # not full size
    runs = report["training_runs"]
    assert runs["train_faithful"]["epoch_samples"] == runs["train_fast"]["epoch_samples"] == 64
    assert runs["train_finetune"]["epochs"] == 2
    assert any(name.startswith("training end to end, fine-tune") for name in figures)
    # the fine-tune started from the fast run's fold 0, heads first, then at two rates
    params = json.loads((out / "runs" / "train_finetune" / "params.json").read_text())
    assert params["init_from"]["folds"]["0"]["fold"] == 0
    log = (out / "runs" / "train_finetune" / "log.txt").read_text()
    assert "lr: [0.003, 0.0003]" in log
    markdown = (out / "gpu_report.md").read_text()
    assert markdown.startswith("# GPU check (dry run")
    for heading in ("## Figures", "## Steps", "## Training runs", "## train_step (table 2"):
        assert heading in markdown
    assert "| figure | value | unit | vs faithful | share of bf16 peak | target |" in markdown
    # The short table comes last on the standard output, before the closing line.
    tail = result.stdout.strip().splitlines()
    assert tail[-2] == "all steps passed" and tail[-1].startswith("gpu_check: ")
