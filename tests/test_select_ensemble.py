"""select_ensemble.py: the blends it scores are stacking_predict.py's numbers to the last bit,
the search finds what an independent brute force finds, the written file runs on through
stacking_train.py, stacking_predict.py and blend_predict.py, bad input is one line, and a
signal stops it cleanly."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import gmean

from src.config import FAT2019_CLASSES, ConfigError, get_paths, load_vocabulary
from src.prediction.tables import cv_scores, gmean_frames
from src.tools.lab import blend_search
from src.tools.lab.blend_search import BlendTables, choose_method, search
from src.tools.lab.selection import blend_scores, load_candidates, parse_sizes
from src.utils import PROBABILITY_FLOOR
from tests.helpers import REPO_ROOT, copy_tree, ctrl_c_as_in_a_terminal
from tests.test_metrics import direct_lwlrap_ties_by_index

CLASSES = FAT2019_CLASSES[:6]


def oof_tree(
    data: Path,
    n_experiments: int = 5,
    clips: int = 40,
    classes=CLASSES,
    seed: int = 0,
    levels: int | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """First-level experiments with out-of-fold predictions of every fold (clip i in fold
    i % 5), the curated labels and the classes: what predict_folds.py leaves. `levels`
    quantises the probabilities (ties within and across experiments). Returns the names, the
    (experiment, clip, class) probabilities and the (clip, class) labels."""
    rng = np.random.default_rng(seed)
    n_classes = len(classes)
    truth = np.zeros((clips, n_classes))
    truth[np.arange(clips), rng.integers(0, n_classes, clips)] = 1
    truth[rng.random((clips, n_classes)) < 0.1] = 1
    fnames = [f"{i:05d}.wav" for i in range(clips)]
    data.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns=["fname", *classes]).to_csv(data / "sample_submission.csv", index=False)
    labels = [",".join(c for c, t in zip(classes, row) if t) for row in truth]
    pd.DataFrame({"fname": fnames, "labels": labels}).to_csv(
        data / "train_curated.csv", index=False
    )
    names = [f"exp_{chr(ord('a') + e)}" for e in range(n_experiments)]
    probabilities = []
    for name in names:
        skill = rng.uniform(0.5, 2.5)
        logits = skill * truth - 1 + rng.normal(size=truth.shape)
        probs = 1 / (1 + np.exp(-logits))
        if levels:
            probs = np.round(probs * levels) / levels  # 0 included: the floor matters
        probabilities.append(probs)
        folder = data / "experiments" / name
        folder.mkdir(parents=True)
        record = {"config": {"kind": "cnn", "name": name, "scale": "smoke"}, "classes": classes}
        (folder / "params.json").write_text(json.dumps(record))
        for k in range(5):
            rows = np.arange(k, clips, 5)
            out = data / "predictions" / name / f"fold_{k}" / "val"
            out.mkdir(parents=True)
            frame = pd.DataFrame(probs[rows], columns=list(classes))
            frame.insert(0, "fname", [fnames[i] for i in rows])
            frame.to_csv(out / "probs.csv", index=False)
    # read_oof's row order: fold 0's clips, then fold 1's, ...
    order = np.concatenate([np.arange(k, clips, 5) for k in range(5)])
    return names, np.stack(probabilities)[:, order], truth[order]


def brute_force(probabilities: np.ndarray, truth: np.ndarray, sizes) -> dict:
    """Every blend's lwlrap, independently: scipy's geometric mean, the definition's lwlrap."""
    scores = {}
    for size in sizes:
        for members in combinations(range(len(probabilities)), size):
            chosen = probabilities[list(members)]
            blend = chosen[0] if size == 1 else gmean(np.clip(chosen, PROBABILITY_FLOOR, None))
            per_class, weights = direct_lwlrap_ties_by_index(truth, blend)
            scores[members] = float(per_class @ weights)
    return scores


def run(script: str, data: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def select(data: Path, *args: str) -> subprocess.CompletedProcess:
    return run("select_ensemble.py", data, "--data-dir", str(data), "--no-progress", *args)


# ----------------------------------------------------------------------------------------------
# The numbers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sizes", [[2, 3, 4], [1, 2, 3, 4, 5], [3]])
def test_every_combination_finds_the_brute_force_best(tmp_path, sizes, workers):
    _, probabilities, truth = oof_tree(tmp_path / "data", seed=sum(sizes))
    expected = brute_force(probabilities, truth, sizes)
    result = search(BlendTables.build(probabilities, truth), sizes, "exhaustive", 100, workers)
    assert result.method == "exhaustive" and result.evaluated == len(expected)
    best = max(expected.items(), key=lambda item: item[1])
    assert result.best.members == best[0]
    assert result.best.score == pytest.approx(best[1], abs=1e-12)
    found = {b.members: b.score for blends in result.by_size.values() for b in blends}
    assert found.keys() == expected.keys()
    for members, score in found.items():
        assert score == pytest.approx(expected[members], abs=1e-12), members


def test_greedy_search_ends_where_no_swap_improves(tmp_path):
    _, probabilities, truth = oof_tree(tmp_path / "data", n_experiments=7, seed=5)
    sizes = [2, 3, 4]
    expected = brute_force(probabilities, truth, [1, *sizes])
    result = search(BlendTables.build(probabilities, truth), sizes, "greedy", keep=50, workers=2)
    assert result.method == "greedy" and result.evaluated < len(expected)
    for size in sizes:
        best = result.by_size[size][0]
        assert best.score == pytest.approx(expected[best.members], abs=1e-12)
        swaps = [
            tuple(sorted((*(m for m in best.members if m != out), x)))
            for out in best.members
            for x in range(7)
            if x not in best.members
        ]
        assert all(expected[s] <= best.score + 1e-12 for s in swaps), size
    top = max((v, k) for k, v in expected.items() if len(k) in sizes)
    assert result.best.score <= top[0] + 1e-12


def test_blend_scores_are_stacking_predicts_to_the_last_bit(tmp_path, monkeypatch):
    """With ties everywhere (probabilities on a grid of 4, zeros floored): the search's score
    of every blend equals cv_scores of gmean_frames, the first-level blend row of
    stacking_predict.py's table (`oof_table`), exactly."""
    data = tmp_path / "data"
    names, _, _ = oof_tree(data, n_experiments=5, clips=60, levels=4, seed=3)
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(data))
    paths = get_paths()
    candidates = load_candidates(paths, load_vocabulary(paths), [])
    assert candidates.names == names
    found = search(candidates.tables, range(1, 6), "exhaustive", keep=40)
    scored = {b.members: b.score for blends in found.by_size.values() for b in blends}
    assert len(scored) == 31
    for members, score in scored.items():
        frames = [candidates.frames[m] for m in members]
        table = frames[0] if len(frames) == 1 else gmean_frames(frames)
        exact = cv_scores(table, candidates.truth, candidates.vocabulary)["overall_lwlrap"]
        assert score == exact, members
        assert blend_scores(candidates, [names[m] for m in members])["overall_lwlrap"] == exact


def test_auto_enumerates_up_to_the_limit(monkeypatch):
    monkeypatch.setattr(blend_search, "EXHAUSTIVE_LIMIT", 35)
    assert choose_method("auto", 7, [3]) == "exhaustive"  # 35 blends
    assert choose_method("auto", 7, [3, 4]) == "greedy"  # 70
    assert choose_method("exhaustive", 70, [3, 4]) == "exhaustive"


def test_sizes():
    assert parse_sizes("3-8") == [3, 4, 5, 6, 7, 8]
    assert parse_sizes("5") == [5]
    assert parse_sizes(" 2-3, 7 ") == [2, 3, 7]


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def test_the_command_reports_and_writes_the_choice(tmp_path):
    data = tmp_path / "data"
    names, probabilities, truth = oof_tree(data, n_experiments=6, seed=8)
    expected = brute_force(probabilities, truth, [2, 3, 4])
    best, cv = max(expected.items(), key=lambda item: item[1])
    singles = brute_force(probabilities, truth, [1])
    out = tmp_path / "out"
    result = select(
        data,
        "--sizes",
        "2-4",
        "--top",
        "5",
        "--write",
        str(out / "chosen.json"),
        "--csv",
        str(out / "top.csv"),
        "--per-class",
        str(out / "per_class.csv"),
        "--plot",
        str(out / "per_class.png"),
    )
    assert result.returncode == 0, result.stderr
    chosen = [names[m] for m in best]
    written = json.loads((out / "chosen.json").read_text())
    assert written == {"base": "stacking_008_fcnet_43040", "name": "chosen", "inputs": chosen}
    top = pd.read_csv(out / "top.csv")
    assert len(top) == 5 and top["experiments"][0] == ",".join(chosen)
    assert top["oof_lwlrap"][0] == pytest.approx(cv, abs=1e-12)
    assert top["gain"][0] == pytest.approx(cv - max(singles.values()), abs=1e-12)
    assert top["oof_lwlrap"].is_monotonic_decreasing
    per_class = pd.read_csv(out / "per_class.csv")
    assert sorted(per_class["class"]) == sorted(CLASSES)
    assert per_class["change"].is_monotonic_decreasing
    assert (out / "per_class.png").stat().st_size > 10_000
    printed = result.stdout
    assert f"exhaustive: {len(expected)} blends of sizes 2-4" in printed
    assert f"chosen: {','.join(chosen)}: out-of-fold lwlrap {cv:.4f}" in printed
    prefix = f"FREESOUND_DATA_DIR={shlex.quote(str(data))} python"
    lines = printed.splitlines()
    # This data directory has no corrections.json (as a dataset of one's own): the MLP's
    # command, run as printed, must not stop on it.
    assert f"{data / 'corrections' / 'corrections.json'}: not found" in printed
    for command in (
        f"stacking_train.py --experiment {out / 'chosen.json'} --no-corrections",
        f"stacking_predict.py --experiments {out / 'chosen.json'}",
        f"blend_predict.py --experiments {out / 'chosen.json'}",
    ):
        assert f"  {prefix} {command}" in lines


def test_the_suggested_mlp_command_uses_the_corrections_present(tmp_path):
    data = tmp_path / "data"
    oof_tree(data, n_experiments=3, seed=8)
    (data / "corrections").mkdir()
    (data / "corrections" / "corrections.json").write_text("{}")
    chosen = tmp_path / "chosen.json"
    result = select(data, "--sizes", "2", "--write", str(chosen))
    assert result.returncode == 0, result.stderr
    prefix = f"FREESOUND_DATA_DIR={shlex.quote(str(data))} python"
    assert f"  {prefix} stacking_train.py --experiment {chosen}" in result.stdout.splitlines()
    assert "not found" not in result.stdout


def test_a_single_experiment_better_than_every_blend_is_said(tmp_path):
    data = tmp_path / "data"
    names, probabilities, truth = oof_tree(data, n_experiments=4, seed=2)
    # exp_a informative, the others guesses: every blend ranks worse than exp_a alone.
    rng = np.random.default_rng(5)
    probabilities[0] = 1 / (1 + np.exp(-(3 * truth - 1.5 + rng.normal(size=truth.shape))))
    probabilities[1:] = rng.random(probabilities[1:].shape)
    for name, table in zip(names, probabilities):
        start = 0  # read_oof's row order: fold 0's clips, then fold 1's, ...
        for k in range(5):
            out = data / "predictions" / name / f"fold_{k}" / "val" / "probs.csv"
            frame = pd.read_csv(out)
            frame[list(CLASSES)] = table[start : start + len(frame)]
            frame.to_csv(out, index=False)
            start += len(frame)
    blends = brute_force(probabilities, truth, [2, 3])
    singles = brute_force(probabilities, truth, [1])
    assert max(blends.values()) < singles[(0,)] == max(singles.values())  # the premise

    result = select(data, "--sizes", "2-3")
    assert result.returncode == 0, result.stderr
    assert f"note: no blend of sizes 2-3 beats {names[0]} alone" in result.stdout
    assert "--sizes 1-3 lets one experiment be the choice" in result.stdout
    result = select(data, "--sizes", "1-3", "--write", str(tmp_path / "one.json"))  # as said
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stdout
    assert json.loads((tmp_path / "one.json").read_text())["inputs"] == [names[0]]


def test_experiments_named_or_taken_from_a_stacking_file(tmp_path):
    data = tmp_path / "data"
    names, _, _ = oof_tree(data, n_experiments=5)
    file = tmp_path / "set.json"
    file.write_text(json.dumps({"base": "stacking_008_fcnet_43040", "inputs": names[:3]}))
    for given in (",".join(names[:3]), str(file)):
        result = select(data, "--experiments", given, "--sizes", "2")
        assert result.returncode == 0, result.stderr
        assert f"3 candidates ({', '.join(names[:3])})" in result.stdout
        assert "exhaustive: 3 blends" in result.stdout


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_unknown_experiments_are_one_line_listing_the_known(tmp_path):
    data = tmp_path / "data"
    names, _, _ = oof_tree(data, n_experiments=3)
    line = one_line_error(select(data, "--experiments", f"{names[0]},nope,other"))
    assert "unknown first-level experiment(s) nope, other" in line
    assert ", ".join(names) in line


def test_experiments_without_predictions_name_the_command(tmp_path):
    data = tmp_path / "data"
    names, _, _ = oof_tree(data, n_experiments=4)
    (data / "predictions" / names[1] / "fold_2" / "val" / "probs.csv").unlink()
    (data / "predictions" / names[3] / "fold_0" / "val" / "probs.csv").unlink()
    write = tmp_path / "chosen.json"
    line = one_line_error(select(data, "--experiments", ",".join(names), "--write", str(write)))
    quoted = shlex.quote(str(data))
    assert f"no out-of-fold predictions for {names[1]} (fold 2); {names[3]} (fold 0)" in line
    assert (
        f"run `FREESOUND_DATA_DIR={quoted} python predict_folds.py --experiment {names[1]} && "
        f"FREESOUND_DATA_DIR={quoted} python predict_folds.py --experiment {names[3]}`"
    ) in line
    assert not write.exists()
    # Not named: the others are the candidates, the skipped ones are said.
    result = select(data, "--sizes", "2")
    assert result.returncode == 0, result.stderr
    assert f"skipped {names[1]}: no out-of-fold predictions of fold 2" in result.stdout
    assert f"2 candidates ({names[0]}, {names[2]})" in result.stdout


@pytest.mark.parametrize("sizes", ["3-", "0", "a", "5-3", "2,,", "-2", "1.5", ""])
def test_malformed_sizes_are_refused(sizes):
    with pytest.raises(ConfigError, match="--sizes takes N, A-B or a comma-separated list") as e:
        parse_sizes(sizes)
    assert repr(sizes) in str(e.value)


def test_malformed_sizes_are_one_line_before_any_work(tmp_path):
    data = tmp_path / "data"
    oof_tree(data, n_experiments=3)
    line = one_line_error(select(data, "--sizes", "3-", "--write", str(tmp_path / "c.json")))
    assert "--sizes takes N, A-B or a comma-separated list of them" in line and "'3-'" in line
    assert not (tmp_path / "c.json").exists()


def test_sizes_beyond_the_candidates_and_bad_file_names(tmp_path):
    data = tmp_path / "data"
    oof_tree(data, n_experiments=3)
    line = one_line_error(select(data, "--sizes", "4-6"))
    assert "--sizes 4-6: only 3 experiment(s) with out-of-fold predictions to blend" in line
    line = one_line_error(select(data, "--write", str(tmp_path / "my set.json")))
    assert "names the stacking experiment" in line
    empty = tmp_path / "empty"
    oof_tree(empty, n_experiments=1)
    for k in range(5):
        (empty / "predictions" / "exp_a" / f"fold_{k}" / "val" / "probs.csv").unlink()
    line = one_line_error(select(empty))
    assert "has out-of-fold predictions of every fold" in line and "predict_folds.py" in line


@pytest.mark.parametrize(
    ("stop", "status", "said"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "")]
)
def test_a_signal_stops_the_search_and_its_workers_cleanly(tmp_path, stop, status, said):
    data = tmp_path / "data"
    oof_tree(data, n_experiments=14, clips=2000, classes=FAT2019_CLASSES[:40], seed=1)
    out = tmp_path / "out"
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data)}
    child = subprocess.Popen(
        [
            sys.executable,
            "select_ensemble.py",
            *("--sizes", "1-14", "--workers", "2"),
            *("--write", str(out / "chosen.json"), "--csv", str(out / "top.csv")),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    try:
        assert "candidates" in child.stdout.readline()  # printed before the search starts
        workers = []
        for _ in range(100):  # the pool's processes
            workers = [
                p for p in Path("/proc").iterdir() if p.name.isdigit() and parent(p) == child.pid
            ]
            if len(workers) == 2:
                break
            time.sleep(0.05)
        assert len(workers) == 2
        child.send_signal(stop)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == status, stderr
    assert (said or "interrupted") in stderr and "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())  # nothing written, not even half
    for worker in workers:
        for _ in range(100):
            if not worker.exists():
                break
            time.sleep(0.05)
        assert not worker.exists(), f"worker {worker.name} outlived the search"


def parent(proc: Path) -> int | None:
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# ----------------------------------------------------------------------------------------------
# On trained experiments: the chosen set runs on
# ----------------------------------------------------------------------------------------------


def test_the_written_file_runs_on_through_stacking_and_the_blend(smoke_tree, tmp_path, monkeypatch):
    """select_ensemble.py on the smoke pipeline's seven experiments, then the written file in
    stacking_train.py, stacking_predict.py (whose first-level blend row is the selection's
    CV, to the last bit) and blend_predict.py, each as the selection printed it."""
    data = copy_tree(smoke_tree, tmp_path / "data")
    chosen = tmp_path / "chosen.json"
    result = select(data, "--sizes", "2-3", "--write", str(chosen))
    assert result.returncode == 0, result.stderr
    inputs = json.loads(chosen.read_text())["inputs"]
    commands = [line.strip() for line in result.stdout.splitlines() if "python " in line]
    assert len(commands) == 3

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    smoke = " --smoke --set max_epochs=1 --set epoch_size=64 --no-progress"
    for command, extra in zip(commands, (smoke, " --no-progress", "")):
        done = subprocess.run(
            ["bash", "-c", command + extra],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, (command, done.stderr[-3000:])
    table = pd.read_csv(data / "predictions" / "ensemble_oof_lwlrap.csv")
    assert table["experiment"].tolist()[: len(inputs)] == inputs
    row = table[table["level"] == "first-level blend"]
    assert row["experiment"].tolist() == [f"geometric mean of the {len(inputs)} first-level"]
    assert table["experiment"].tolist()[len(inputs) + 1] == "chosen"  # the stacking MLP

    monkeypatch.setenv("FREESOUND_DATA_DIR", str(data))
    paths = get_paths()
    candidates = load_candidates(paths, load_vocabulary(paths), [])
    members = tuple(candidates.names.index(name) for name in inputs)
    assert float(row["oof_lwlrap"].iloc[0]) == candidates.tables.score(members)
    assert len(pd.read_csv(data / "submission.csv")) == len(list((data / "test").iterdir()))


def test_the_missing_predictions_command_runs_as_printed(smoke_tree, tmp_path):
    data = copy_tree(smoke_tree, tmp_path / "data")
    (data / "predictions" / "corrections_002" / "fold_3" / "val" / "probs.csv").unlink()
    named = ("--experiments", "corrections_002,corr_noisy_007", "--sizes", "2")
    line = one_line_error(select(data, *named))
    command = line.split("run `", 1)[1].rstrip("`")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("FREESOUND_DATA_DIR")  # the printed command says which data directory
    done = subprocess.run(
        ["bash", "-c", command + " --no-progress"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = select(data, *named)
    assert result.returncode == 0, result.stderr
    assert "chosen: corrections_002,corr_noisy_007" in result.stdout


def test_names_from_experiment_files(tmp_path):
    from src.experiment_files import blend_members, experiment_name

    stacking = tmp_path / "lab_pick.json"
    stacking.write_text(json.dumps({"base": "stacking_008_fcnet_45041", "inputs": ["x", "y"]}))
    first = tmp_path / "mine.json"
    first.write_text(json.dumps({"base": "corr_noisy_007", "name": "my_exp"}))
    assert experiment_name(str(stacking)) == "lab_pick"
    assert experiment_name("stacking_008_fcnet_43040") == "stacking_008_fcnet_43040"
    assert blend_members([str(stacking), "z", "x", str(first)]) == ["x", "y", "z", "my_exp"]
