"""The report of bench/gpu_check.sh: gpu_report.md and gpu_report.json from what its steps left.

    python bench/gpu_report.py --out DIR [--dry-run]

Reads DIR/steps.tsv (status and seconds of every step), DIR/logs/*.log (the tables the bench
scripts print), DIR/runs/*/log.csv (the training runs, one row per epoch), DIR/*.json (stores
and the kernel estimate) and the predictions under DIR/data. Every figure that a failed step
did not produce is left out with that step's error; ratios are against the faithful baseline
of the same run; the share of the bf16 peak (790 TFLOP/s, H100/H200 dense) counts 49 GFLOP
per training sample of the full-size network and is given for full-size training figures only
(never in a dry run, whose network is the smoke one). Prints the short table last.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from datetime import datetime
from pathlib import Path

PEAK_TFLOPS = 790.0
GFLOP_PER_SAMPLE = 49.0
EXPERIMENT = "corr_noisy_007"
TRAIN_RUNS = {
    "train_faithful": "fp32, numpy augmentation in the loader workers (faithful)",
    "train_fast": "bf16 + channels-last + GPU augmentation",
    "train_compiled": "bf16 + channels-last + GPU augmentation + torch.compile",
    "train_finetune": "fine-tune (--init-from, 1 frozen epoch, then all weights)",
}


def markdown_tables(text: str) -> list[list[dict]]:
    """Every markdown table in a log (as bench/common.table prints them) as rows of dicts."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines) - 1:
        head, rule = lines[i].strip(), lines[i + 1].strip()
        if head.startswith("|") and rule.startswith("|---"):
            columns = [c.strip() for c in head.strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                if i + 1 < len(lines) and lines[i + 1].strip().startswith("|---"):
                    break  # the header of the next table, printed right after this one
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(columns, cells)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(str(text).replace(",", "").rstrip("x%").strip())
    except ValueError:
        return None


def read_steps(out: Path) -> list[dict]:
    path = out / "steps.tsv"
    if not path.is_file():
        return []
    with path.open() as handle:
        steps = list(csv.DictReader(handle, delimiter="\t"))
    for step in steps:
        step["seconds"] = float(step["seconds"])
        step["cpu_seconds"] = float(step.get("cpu_seconds") or 0)
        if step["status"] != "ok":
            log = out / "logs" / f"{step['step']}.log"
            lines = [
                ln
                for ln in (log.read_text(errors="replace").splitlines() if log.is_file() else [])
                if ln.strip()
            ]
            step["error"] = lines[-1][:300] if lines else "(no output)"
    return steps


def log_text(out: Path, step: str) -> str:
    path = out / "logs" / f"{step}.log"
    return path.read_text(errors="replace") if path.is_file() else ""


def epoch_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "log.csv"
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def training_run(out: Path, name: str, seconds: float | None) -> dict | None:
    """Samples/s of a run: the second epoch's (training + validation) from log.csv times."""
    rows = epoch_rows(out / "runs" / name)
    if len(rows) < 2:
        return None
    times = [datetime.fromisoformat(r["time"]) for r in rows]
    samples = int(float(rows[-1].get("train_samples") or 0))
    epoch_s = (times[-1] - times[-2]).total_seconds()
    return {
        "epochs": len(rows),
        "epoch_samples": samples,
        "epoch_seconds": round(epoch_s, 2),
        "samples_per_s": round(samples / epoch_s, 1) if epoch_s > 0 else None,
        "command_seconds": seconds,
        "val_lwlrap": round(float(rows[-1]["val_lwlrap"]), 4),
    }


def count_tiles(folder: Path) -> int:
    import numpy as np

    return sum(int(np.load(p, mmap_mode="r").shape[0]) for p in folder.glob("*.npy"))


def environment(dry_run: bool) -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available() and not dry_run:
            info["device"] = torch.cuda.get_device_name()
        else:
            info["device"] = f"CPU ({platform.processor() or platform.machine()})"
    except Exception as error:  # the report must come out whatever is broken
        info["torch"] = f"not importable: {error}"
    return info


def share(samples_per_s: float | None, full_size: bool) -> str:
    if samples_per_s is None or not full_size:
        return "n/a"
    return f"{100 * samples_per_s * GFLOP_PER_SAMPLE / 1000 / PEAK_TFLOPS:.1f}%"


def build(out: Path, dry_run: bool) -> dict:
    steps = read_steps(out)
    seconds = {s["step"]: s["seconds"] for s in steps if s["status"] == "ok"}
    full = not dry_run
    figures: list[dict] = []
    runs: dict[str, dict] = {}

    def figure(name, value, unit, vs=None, peak="n/a", target=""):
        figures.append(
            {
                "figure": name,
                "value": value,
                "unit": unit,
                "vs faithful": f"{vs:.2f}x" if vs is not None else "",
                "share of bf16 peak": peak,
                "target": target,
            }
        )

    def logmel():
        # a) log-mel
        stores_path = out / "logmel_store.json"
        if "logmel_store" in seconds and stores_path.is_file():
            stores = json.loads(stores_path.read_text())
            sets = stores["sets"].values()
            figure(
                f"store build of the 3 sets, torch log-mel on {stores['device']} (first build: "
                "device start-up and decoding included)",
                round(sum(x["audio_seconds"] for x in sets) / sum(x["seconds"] for x in sets)),
                "audio s/s",
            )
            curated = stores["sets"]["curated"]
            fast = curated["audio_seconds"] / stores["torch_curated_seconds"]
            slow = curated["audio_seconds"] / stores["librosa_curated_seconds"]
            figure(
                f"store build, torch log-mel on {stores['device']} vs librosa (curated, decoding "
                f"included, {stores['workers']} worker(s))",
                round(fast),
                "audio s/s",
                fast / slow,
            )
        tables = markdown_tables(log_text(out, "logmel_compute"))
        if "logmel_compute" in seconds and tables:
            rows = tables[0]
            librosa = number(rows[0]["audio s per s"])
            device_rows = [r for r in rows if r.get("device") != "cpu"] or rows[1:2]
            for row in device_rows:
                rate = number(row["audio s per s"])
                figure(
                    f"log-mel {row['path']} on {row['device']} vs librosa per core",
                    rate,
                    "audio s/s",
                    rate / librosa if librosa and rate else None,
                    target=">= 20x librosa" if full else "",
                )

    def training():
        # b) training
        for name, title in TRAIN_RUNS.items():
            run = training_run(out, name, seconds.get(name))
            if run is None:
                continue
            runs[name] = run
            base = runs.get("train_faithful", {}).get("samples_per_s")
            rate = run["samples_per_s"]
            figure(
                f"training end to end, {title}",
                rate,
                "samples/s",
                rate / base if base and rate else None,
                share(rate, full),
                ">= 4,800 samples/s (30% of peak)" if full and name != "train_faithful" else "",
            )
            figure(
                f"one epoch of {run['epoch_samples']:,} samples (with validation), {name}",
                run["epoch_seconds"],
                "s",
                target="< 7 s" if full and name != "train_faithful" else "",
            )

    def step_only():
        # c) step only and data path
        tables = markdown_tables(log_text(out, "train_step"))
        if "train_step" in seconds and len(tables) >= 3:
            step_rows, data_rows = tables[:2]
            for row in step_rows:
                rate = number(row["samples/s"])
                figure(
                    f"step only, {row['step']}",
                    rate,
                    "samples/s",
                    number(row["vs fp32"]),
                    share(rate, full),
                )
            for row in data_rows:
                figure(
                    f"data path, {row['data path']}",
                    number(row["samples/s"]),
                    "samples/s",
                    number(row["vs CPU path"]),
                    target="never the bottleneck" if "worker" in row["data path"] else "",
                )
            fast = runs.get("train_fast", {}).get("samples_per_s")
            bf16 = next(
                (number(r["samples/s"]) for r in step_rows if r["step"].startswith("bf16")), None
            )
            if fast and bf16:
                figure(
                    "end to end (train_fast) / step only (bf16): below 1 = loader or "
                    "validation cost",
                    round(fast / bf16, 2),
                    "ratio",
                )

    def prediction():
        # d) prediction
        prediction = out / "data" / "predictions" / EXPERIMENT / "fold_0"
        if "predict_folds" in seconds and prediction.is_dir():
            tiles = {part: count_tiles(prediction / part) for part in ("val", "test")}
            total = tiles["val"] + tiles["test"]
            figure(
                f"predict_folds.py fold 0: {tiles['test']} test + {tiles['val']} val tiles, "
                "whole command (start-up included)",
                round(total / seconds["predict_folds"], 1),
                "tiles/s",
            )
        tables = markdown_tables(log_text(out, "predict_bench"))
        if "predict_bench" in seconds and tables:
            for row in tables[0]:
                if row.get("tiles/s"):
                    figure(
                        f"bench/predict.py {row['what']}",
                        number(row["tiles/s"]),
                        "tiles/s",
                        number(row.get("vs faithful")),
                    )
                key = next((k for k in row if k.endswith("clips") and k != "clips/s"), None)
                if key and row.get(key) and "ensemble" in row["what"]:
                    figure(
                        f"{row['what']} on {key}",
                        number(row[key].split()[0]),
                        "min",
                        target="< 5 min" if full else "",
                    )

    def kernel_estimate():
        estimate_path = out / "kernel_estimate.json"
        if "kernel_estimate" in seconds and estimate_path.is_file():
            estimate = json.loads(estimate_path.read_text())
            figure(
                f"stacking kernel estimate, {estimate['clips']:,} clips of "
                f"{estimate['mean_seconds']} s ({estimate['experiments']} experiments x 5 folds)",
                estimate["total_minutes"],
                "min",
                target="Kaggle limit 60 min",
            )

    def resumed():
        resume_path = out / "train_resume.json"
        if "train_resume" in seconds and resume_path.is_file():
            resume = json.loads(resume_path.read_text())
            figure(
                f"train_fast stopped by SIGTERM after epoch {resume['saved_epoch']} and resumed: "
                "largest val_lwlrap difference from the uninterrupted run",
                resume["largest_differences"]["val_lwlrap"],
                "lwlrap",
                target="0 on the CPU, <= 0.05 on CUDA",
            )

    errors = []
    for part in (logmel, training, step_only, prediction, kernel_estimate, resumed):
        try:
            part()
        except Exception as error:  # the report must come out whatever is missing
            errors.append(f"{part.__name__}: {error!r}")

    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "environment": environment(dry_run),
        "steps": steps,
        # 'skipped' is a step left out by design (a dry run's wheels and torch.compile)
        "passed": bool(steps) and all(s["status"] in ("ok", "skipped") for s in steps),
        "training_runs": runs,
        "report_errors": errors,
        "figures": figures,
        "logs": {s["step"]: markdown_tables(log_text(out, s["step"])) for s in steps},
    }


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


FIGURE_COLUMNS = ["figure", "value", "unit", "vs faithful", "share of bf16 peak", "target"]
STEP_COLUMNS = ["step", "status", "seconds", "limit", "cpu_seconds", "error"]


def markdown(report: dict) -> str:
    env = report["environment"]
    title = "GPU check" + (
        " (dry run: CPU, tiny sizes; no figure is a GPU figure)" if report["dry_run"] else ""
    )
    parts = [
        f"# {title}",
        "",
        f"{report['date']}: {env.get('device')}, torch {env.get('torch')} "
        f"(CUDA {env.get('cuda')}), Python {env.get('python')}. "
        + ("All steps passed." if report["passed"] else "NOT all steps passed."),
        "",
        "## Figures",
        "",
        table(report["figures"], FIGURE_COLUMNS),
        "",
        "## Steps",
        "",
        table(report["steps"], STEP_COLUMNS),
        "",
        "## Training runs (fold 0 of corr_noisy_007, from each run's log.csv)",
        "",
        table(
            [{"run": k, **v} for k, v in report["training_runs"].items()],
            [
                "run",
                "epochs",
                "epoch_samples",
                "epoch_seconds",
                "samples_per_s",
                "command_seconds",
                "val_lwlrap",
            ],
        ),
    ]
    if report["report_errors"]:
        parts += ["", "## Figures the report could not read", ""]
        parts += [f"- {error}" for error in report["report_errors"]]
    for step, tables in report["logs"].items():
        for index, rows in enumerate(tables):
            if rows:
                parts += [
                    "",
                    f"## {step} (table {index + 1} as printed)",
                    "",
                    table(rows, list(rows[0])),
                ]
    return "\n".join(parts) + "\n"


def short_table(report: dict) -> str:
    steps = table(report["steps"], ["step", "status", "seconds"])
    figures = table(
        report["figures"], ["figure", "value", "unit", "vs faithful", "share of bf16 peak"]
    )
    verdict = (
        "all steps passed" if report["passed"] else "SOME STEPS FAILED (errors in gpu_report.md)"
    )
    return f"{steps}\n\n{figures}\n\n{verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="the folder of bench/gpu_check.sh")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report = build(out, args.dry_run)
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_report.md").write_text(markdown(report))
    print(short_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
