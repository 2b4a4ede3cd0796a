"""search.py: the space and its refusals, trials as real experiments, continuing a study,
processes sharing one storage, pruning, interruption, stacking, masked passwords, PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from src.config import ConfigError, get_paths, load_vocabulary
from src.experiment_files import load_experiment
from src.runs import STATE_FILE, best_checkpoint
from src.tools.lab.journal import read_journal
from src.tools.search.space import as_overrides, parse_space, read_space, settings
from src.tools.search.storage import masked, open_storage, open_study, scrub
from src.tools.search.trials import Search
from src.training.command import train_command
from src.training.parts import RunOptions
from tests.helpers import REPO_ROOT

# The tiny tree's trials: a few steps per epoch, three epochs.
MICRO = {
    "base": "corrections_002",
    "epoch_size": 32,
    "batch_size": 8,
    "val_batch_size": 16,
    "max_epochs": 3,
}
SPACE = {
    "optimizer.params.lr": {"log": [1e-4, 1e-2]},
    "scheduler.patience": {"int": [1, 3]},
    "model.params.dropout": [0.0, 0.1],
}
RUN = ["--scale", "smoke", "--folds", "0", "--workers", "0", "--device", "cpu", "--no-progress"]


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def search_main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from search import main
    finally:
        sys.path.remove(str(REPO_ROOT))
    return main(argv)


def search_command(tmp_path: Path, study: str, trials: int, *extra: str) -> list[str]:
    micro, space = write(tmp_path / "micro.json", MICRO), write(tmp_path / "space.json", SPACE)
    return [
        "--experiment",
        str(micro),
        "--space",
        str(space),
        "--trials",
        str(trials),
        "--study",
        study,
        *RUN,
        *extra,
    ]


def load_study(data: Path, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{data}/search/{study}.db")


# ----------------------------------------------------------------------------------------------
# The space
# ----------------------------------------------------------------------------------------------


def test_a_space_reads_ranges_choices_and_shares():
    space = read_space(REPO_ROOT / "search_spaces/first_level.json")
    kinds = {d.key: d.kind for d in space}
    assert kinds["optimizer.params.lr"] == "choice" and kinds["scheduler.patience"] == "int"
    assert kinds["datasets.curated"] == "one_minus"
    drawn = {"datasets.noisy": 0.25, "datasets.corrected": 0.5, "loss.params.noisy_weight": 0.3}
    drawn.update({d.key: d.low for d in space if d.drawn and d.key not in drawn and d.low})
    drawn["optimizer.params.lr"] = 0.001
    values = settings(space, drawn)
    assert values["datasets.curated"] == pytest.approx(0.25)
    assert values["loss.params.curated_weight"] == pytest.approx(0.7)
    assert as_overrides({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    # The original's stacking space with its reversed lr bounds put right.
    stacking = {d.key: d for d in read_space(REPO_ROOT / "search_spaces/stacking.json")}
    lr = stacking["optimizer.params.lr"]
    assert (lr.kind, lr.low, lr.high) == ("uniform", 1e-5, 1e-4)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"optimizer.params.lrr": {"log": [1e-4, 1e-2]}}, "unknown setting 'optimizer.params.lrr'"),
        ({"scheduler.patience": {"uniform": [2, 10]}}, "'scheduler.patience' takes int"),
        ({"model.params": [1, 2]}, "'model.params' takes dict"),
        ({"kind": ["cnn"]}, "'kind' cannot be overridden"),
        ({"optimizer.params.lr": {"log": [0, 1e-2]}}, "'optimizer.params.lr': a log range"),
        ({"optimizer.params.lr": {"uniform": [1e-2, 1e-4]}}, "low bound must be below"),
        ({"scheduler.patience": {"int": [2.5, 10]}}, "int takes [lo, hi], two integers"),
        ({"batch_size": []}, "'batch_size': an empty list"),
        ({"batch_size": {"choice": [1]}}, "'batch_size': unknown kind 'choice'"),
        ({"datasets.curated": {"one_minus": ["datasets.noisy"]}}, "not a range of this space"),
        (
            {
                "datasets.noisy": {"uniform": [0.0, 0.7]},
                "datasets.corrected": {"uniform": [0.0, 0.7]},
                "datasets.curated": {"one_minus": ["datasets.noisy", "datasets.corrected"]},
            },
            "falls to -0.4",
        ),
        ({"optimizer..lr": [0.1]}, "name a setting as --set does"),
    ],
)
def test_bad_spaces_are_refused_before_any_trial(tiny_data, tmp_path, space, message):
    args = search_command(tmp_path, "refused", 3)
    write(tmp_path / "space.json", space)
    with pytest.raises(ConfigError, match=f"space.json: .*{_escape(message)}"):
        search_main(args)
    assert not (tiny_data / "search").exists()
    assert not (tiny_data / "experiments").exists()


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_stacking_base_at_cpu_scale_is_refused(tiny_data, tmp_path):
    space = write(tmp_path / "space.json", {"scheduler.patience": {"int": [3, 12]}})
    args = ["--experiment", "stacking_008_fcnet_43040", "--space", str(space), "--trials", "1"]
    with pytest.raises(ConfigError, match="--scale cpu is for first-level"):
        search_main([*args, "--scale", "cpu"])


# ----------------------------------------------------------------------------------------------
# Trials on the tiny tree
# ----------------------------------------------------------------------------------------------


def test_a_search_runs_trials_as_experiments_and_continues(tiny_data, tmp_path, capsys):
    best_file = tmp_path / "best_micro.json"
    assert search_main(search_command(tmp_path, "micro", 3, "--write", str(best_file))) == 0
    study = load_study(tiny_data, "micro")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    paths = get_paths()
    for trial in study.trials:
        folder = paths.experiment_dir(f"micro_t{trial.number}")
        record = json.loads((folder / "params.json").read_text())
        # The drawn settings over the base, recorded as overrides that resolve to the same run.
        assert record["config"]["base"] == "corrections_002"
        assert record["config"]["optimizer"]["params"]["lr"] == trial.params["optimizer.params.lr"]
        again = load_experiment(
            str(tmp_path / "micro.json"),
            "smoke",
            changes=as_overrides(trial.params),
            name=folder.name,
        )
        assert record["config"] == json.loads(json.dumps(again))
        # The objective is the fold's best checkpoint score, as its file name records it.
        assert trial.value == pytest.approx(best_checkpoint(folder / "fold_0")[1])
        assert record["runtime"]["search"] == {
            "study": "micro",
            "trial": trial.number,
            "storage": f"sqlite:///{tiny_data}/search/micro.db",
        }
    out = capsys.readouterr().out
    assert "3 trials (3 complete, 0 pruned, 0 failed)" in out
    best = max(study.trials, key=lambda t: t.value)
    written = load_experiment(str(best_file), "smoke")
    trained = json.loads(
        (paths.experiment_dir(f"micro_t{best.number}") / "params.json").read_text()
    )
    assert {**written, "name": None} == {**trained["config"], "name": None}
    assert f"train_folds.py --experiment {best_file} --scale smoke" in out

    finished = {
        n: (paths.experiment_dir(f"micro_t{n}") / "fold_0/finished.json").stat().st_mtime_ns
        for n in range(3)
    }
    picture = tmp_path / "micro.png"
    assert search_main([*search_command(tmp_path, "micro", 2), "--plot", str(picture)]) == 0
    assert picture.stat().st_size > 10_000
    study = load_study(tiny_data, "micro")
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    for n, stamp in finished.items():  # the first three were not trained again
        assert (
            paths.experiment_dir(f"micro_t{n}") / "fold_0/finished.json"
        ).stat().st_mtime_ns == stamp
    journal = read_journal(paths).set_index("experiment")
    assert {f"micro_t{n}" for n in range(5)} <= set(journal.index)
    assert (journal.loc[[f"micro_t{n}" for n in range(5)], "folds_finished"] == 1).all()

    # Another recipe on the same study is refused, naming what differs.
    with pytest.raises(ConfigError, match="searches another folds"):
        search_main([*search_command(tmp_path, "micro", 1), "--folds", "1"])


def test_two_processes_on_one_sqlite_storage_run_distinct_trials(tiny_data, tmp_path):
    args = search_command(tmp_path, "shared", 2)
    env = {**os.environ, "FREESOUND_DATA_DIR": str(tiny_data), "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [sys.executable, "search.py", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    study = load_study(tiny_data, "shared")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    # Each process ran two of the four, and each trial has its own folder.
    announced = [
        {n for n in range(4) if f"trial {n} (shared_t{n}): val_lwlrap" in out} for out in outputs
    ]
    assert len(announced[0]) == len(announced[1]) == 2 and not announced[0] & announced[1]
    for n in range(4):
        record = json.loads(
            (get_paths().experiment_dir(f"shared_t{n}") / "params.json").read_text()
        )
        assert record["runtime"]["search"]["trial"] == n


def micro_search(tmp_path: Path, study: str, folds: list[int], **changes) -> Search:
    micro = write(tmp_path / f"{study}.json", {**MICRO, **changes})
    paths = get_paths()
    return Search(
        experiment=str(micro),
        space=parse_space(SPACE, "space"),
        space_source="space",
        scale="smoke",
        folds=folds,
        paths=paths,
        vocabulary=load_vocabulary(paths),
        options=RunOptions(),
        study=study,
        storage_shown="memory",
        corrections="if-present",
        progress=False,
    )


def test_a_pruned_trial_stops_its_fold_cleanly_and_trains_no_further_fold(tiny_data, tmp_path):
    search = micro_search(tmp_path, "pruned", [0, 1], max_epochs=4)
    storage = open_storage(f"sqlite:///{tmp_path}/pruned.db")
    # Every score is below 1.1: the pruner stops each trial once its warm-up step has passed.
    pruner = optuna.pruners.ThresholdPruner(lower=1.1, n_warmup_steps=1)
    study = open_study(storage, "pruned", {"test": 1}, "memory", pruner)
    study.optimize(search.objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at"] == 1
    assert sorted(trial.intermediate_values) == [0, 1]
    fold = get_paths().experiment_dir("pruned_t0") / "fold_0"
    log = pd.read_csv(fold / "log.csv")
    assert log["epoch"].tolist() == [0, 1]  # stopped after epoch 1 of 4
    assert trial.intermediate_values[1] == pytest.approx(log["val_lwlrap"].iloc[1])
    assert (fold / "finished.json").is_file() and not (fold / STATE_FILE).exists()
    assert not (fold.parent / "fold_1").exists()
    # The fold says it was pruned, and the journal tells the trial from a finished fold.
    assert json.loads((fold / "finished.json").read_text())["pruned_at_epoch"] == 1
    row = read_journal(get_paths()).set_index("experiment").loc["pruned_t0"]
    assert row["status"] == "pruned (fold 0, epoch 1)" and row["folds_finished"] == 1


def test_an_interrupted_trial_is_marked_failed_and_the_study_goes_on(tiny_data, tmp_path):
    """SIGTERM in the middle of trial 1: it is FAIL and its folder an interrupted run, trial 0
    is untouched, and the same command continues the study with trial 2."""
    args = search_command(tmp_path, "stopped", 0, "--no-pruning")
    write(tmp_path / "micro.json", {**MICRO, "early_stopping": 1000})
    write(tmp_path / "space.json", {**SPACE, "max_epochs": [2, 400]})
    assert search_main(args) == 0  # creates the study; its first trials are queued short, long
    study = load_study(tiny_data, "stopped")
    study.enqueue_trial({"max_epochs": 2})
    study.enqueue_trial({"max_epochs": 400})
    more = [*args]
    more[more.index("--trials") + 1] = "3"
    env = {**os.environ, "FREESOUND_DATA_DIR": str(tiny_data), "OMP_NUM_THREADS": "1"}
    with (tmp_path / "search.log").open("w") as log:
        run = subprocess.Popen(
            [sys.executable, "search.py", *more], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
        )
    paths = get_paths()
    second = paths.experiment_dir("stopped_t1") / "fold_0" / "log.csv"
    deadline = time.time() + 300
    while not second.is_file() and time.time() < deadline:
        assert run.poll() is None, (tmp_path / "search.log").read_text()
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 128 + signal.SIGTERM
    text = (tmp_path / "search.log").read_text()
    assert "trial 1 (stopped_t1) stopped and marked FAIL" in text and "Traceback" not in text
    assert [t.state.name for t in load_study(tiny_data, "stopped").trials] == ["COMPLETE", "FAIL"]
    first = paths.experiment_dir("stopped_t0") / "fold_0" / "finished.json"
    stamp = first.stat().st_mtime_ns
    journal = read_journal(paths).set_index("experiment")
    assert journal.loc["stopped_t0", "folds_finished"] == 1
    assert journal.loc["stopped_t1", "folds_interrupted"] == "0"

    load_study(tiny_data, "stopped").enqueue_trial({"max_epochs": 2})
    one = [*args]
    one[one.index("--trials") + 1] = "1"
    assert search_main(one) == 0
    study = load_study(tiny_data, "stopped")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert first.stat().st_mtime_ns == stamp


def test_stacking_trials_train_on_the_out_of_fold_predictions(tiny_data, tmp_path):
    """Two micro first-level experiments trained and predicted on every fold, then a search
    of the stacking MLP on their out-of-fold predictions (the original's stacking space)."""
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from predict_folds import main as predict_main
    finally:
        sys.path.remove(str(REPO_ROOT))
    train = ["--smoke", "--workers", "0", "--no-progress", "--device", "cpu"]
    for name, lr in (("micro_a", 0.003), ("micro_b", 0.001)):
        micro = write(tmp_path / f"{name}.json", {**MICRO, "optimizer": {"params": {"lr": lr}}})
        assert train_command(["--experiment", str(micro), *train], "", kind="cnn") == 0
        assert predict_main(["--experiment", name, "--device", "cpu", "--no-progress"]) == 0
    base = write(
        tmp_path / "mlp.json",
        {
            "base": "stacking_008_fcnet_43040",
            "inputs": ["micro_a", "micro_b"],
            "max_epochs": 3,
            "epoch_size": 128,
        },
    )
    args = ["--experiment", str(base), "--space", str(REPO_ROOT / "search_spaces/stacking.json")]
    assert search_main([*args, "--trials", "2", "--study", "mlp", *RUN]) == 0
    study = load_study(tiny_data, "mlp")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        folder = get_paths().experiment_dir(f"mlp_t{trial.number}")
        config = json.loads((folder / "params.json").read_text())["config"]
        assert config["kind"] == "stacking" and config["inputs"] == ["micro_a", "micro_b"]
        assert config["batch_size"] == trial.params["batch_size"]
        assert config["model"]["params"]["base_size"] == trial.params["model.params.base_size"]
        assert trial.value == pytest.approx(best_checkpoint(folder / "fold_0")[1])


# ----------------------------------------------------------------------------------------------
# Storage URLs and their passwords
# ----------------------------------------------------------------------------------------------


def test_a_password_in_a_storage_url_is_masked():
    url = "postgresql://search:s3cr%40t@db.example:5432/studies"
    assert masked(url) == "postgresql://search:***@db.example:5432/studies"
    assert scrub("failed for s3cr@t and s3cr@t", url) == "failed for *** and ***"
    assert masked("sqlite:////data/search/x.db") == "sqlite:////data/search/x.db"


def test_an_unreachable_storage_is_one_line_without_its_password(tiny_data, tmp_path, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://search:topsecret@127.0.0.1:{port}/studies"
    with pytest.raises(ConfigError) as error:
        search_main([*search_command(tmp_path, "remote", 1), "--storage", url])
    assert f"--storage postgresql://search:***@127.0.0.1:{port}/studies: cannot open it" in str(
        error.value
    )
    assert "topsecret" not in str(error.value) and "topsecret" not in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# PostgreSQL, for real: a server this test starts and stops (Debian's postgresql package)
# ----------------------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url(tmp_path):
    """postgresql://postgres:<password>@127.0.0.1:<port>/postgres of a fresh server, run as a
    user other than root (postgres refuses root), stopped at the end."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg")  # the driver SQLAlchemy takes for postgresql://
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start postgres")
        as_user = ["runuser", "-u", "nobody", "--"]
    home = Path(tempfile.mkdtemp(prefix="search-pg-"))
    password = "pg-Secret-4711"
    (home / "pw").write_text(password)
    if as_user:
        shutil.chown(home, "nobody")
        shutil.chown(home / "pw", "nobody")
    cluster, port = home / "cluster", free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True)  # noqa: E731
    run(
        str(binaries / "initdb"),
        "-D",
        str(cluster),
        "-U",
        "postgres",
        "--pwfile",
        str(home / "pw"),
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
    )
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
    run(
        str(binaries / "pg_ctl"),
        "-D",
        str(cluster),
        "-o",
        options,
        "-l",
        str(home / "log"),
        "-w",
        "start",
    )
    try:
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres", password
    finally:
        subprocess.run(
            [*as_user, str(binaries / "pg_ctl"), "-D", str(cluster), "-m", "fast", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)


def test_a_study_on_postgresql_continues_and_never_shows_its_password(
    tiny_data, tmp_path, postgres_url, capsys, caplog
):
    url, password = postgres_url
    shown = url.replace(password, "***")
    assert search_main([*search_command(tmp_path, "team", 2), "--storage", url]) == 0
    assert search_main([*search_command(tmp_path, "team", 1), "--storage", url]) == 0
    study = optuna.load_study(study_name="team", storage=url)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    paths = get_paths()
    records = [(paths.experiment_dir(f"team_t{n}") / "params.json").read_text() for n in range(3)]
    assert all(password not in text for text in records)
    assert json.loads(records[0])["runtime"]["search"]["storage"] == shown
    captured = capsys.readouterr()
    assert shown in captured.out + caplog.text
    assert password not in captured.out + captured.err + caplog.text
    journal = read_journal(paths)
    assert password not in journal.to_csv()
    assert not (tiny_data / "search").exists()  # nothing went to the default SQLite file
