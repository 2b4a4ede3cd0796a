"""Failing output folders, Ctrl-C and folders where files are expected end
in one line naming the path, a non-zero status (130 for Ctrl-C) and nothing half-written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO_ROOT, ctrl_c_as_in_a_terminal, tone, write_wav

SCRIPTS = [
    "blend_predict.py",
    "build_kernel.py",
    "demo.py",
    "export_onnx.py",
    "import_weights.py",
    "lab.py",
    "make_corrections.py",
    "make_dataset.py",
    "make_folds.py",
    "make_synthetic.py",
    "package_weights.py",
    "predict_folds.py",
    "search.py",
    "select_ensemble.py",
    "show.py",
    "stacking_predict.py",
    "stacking_train.py",
    "tag_audio.py",
    "train_folds.py",
    "train_probe.py",
]


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """The folder cannot be written to while inside. Root ignores permissions, but not the
    immutable attribute (chattr +i, which fails with "Operation not permitted")."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root:
        if shutil.which("chattr") is None:
            pytest.skip("root ignores file permissions and chattr is missing")
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("root ignores file permissions and chattr +i failed here")
    else:
        folder.chmod(0o555)
    try:
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, **kwargs
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run's stderr is one `error: ...` line (no traceback); returns it."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_every_script_exits_through_run_main():
    # The one place that turns Ctrl-C and OS errors into a line: no script may bypass it.
    for script in SCRIPTS:
        tail = (REPO_ROOT / script).read_text().rstrip().splitlines()[-1]
        assert tail.strip() == "run_main(main)", script
    found = {p.name for p in REPO_ROOT.glob("*.py")}
    assert found == set(SCRIPTS)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            PermissionError(13, "Permission denied", "/ro/.submission.csv.tmp-7"),
            "error: /ro/.submission.csv.tmp-7: Permission denied (check its permissions, or "
            "write elsewhere (--out, FREESOUND_DATA_DIR))",
        ),
        (
            OSError(28, "No space left on device", "/data/cache/x.f32"),
            "error: /data/cache/x.f32: No space left on device (free some disk space and run the "
            "command again)",
        ),
        (
            OSError(30, "Read-only file system", "/mnt/data/experiments"),
            "error: /mnt/data/experiments: Read-only file system (the file system is read-only: "
            "write elsewhere (--out, FREESOUND_DATA_DIR))",
        ),
        (KeyboardInterrupt(), "interrupted"),
    ],
)
def test_run_main_turns_errors_into_one_line(error, expected, capsys, monkeypatch):
    monkeypatch.delenv("FREESOUND_DEBUG", raising=False)

    def main() -> int:
        raise error

    from src.cli import run_main

    with pytest.raises(SystemExit) as exit_:
        run_main(main)
    assert exit_.value.code == (130 if isinstance(error, KeyboardInterrupt) else 1)
    assert capsys.readouterr().err.strip() == expected


def test_debug_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("FREESOUND_DEBUG", "1")

    def main() -> int:
        raise PermissionError(13, "Permission denied", "/ro/x")

    from src.cli import run_main

    with pytest.raises(PermissionError):
        run_main(main)


def test_read_only_data_folder(tmp_path):
    data = Path(os.environ["FREESOUND_DATA_DIR"])
    rows = [(f"{i:02d}.wav", "Bark") for i in range(6)]
    for fname, _ in rows:
        write_wav(data / "train_curated" / fname, tone(0.1))
    pd.DataFrame(rows, columns=["fname", "labels"]).to_csv(data / "train_curated.csv", index=False)
    with read_only(data):
        result = run("make_folds.py")
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"error: {data}/.train_folds.csv.tmp-" in line
    assert "check its permissions, or write elsewhere (--out, FREESOUND_DATA_DIR)" in line
    assert sorted(p.name for p in data.iterdir()) == ["train_curated", "train_curated.csv"]


def test_read_only_output_folder_is_refused_before_tagging(tmp_path):
    audio = write_wav(tmp_path / "clip.wav", tone(1.0))
    out = tmp_path / "read-only"
    out.mkdir()
    with read_only(out):
        result = run("tag_audio.py", str(audio), "--csv", str(out / "tags.csv"), "--model", "x")
    assert result.returncode == 1
    assert f"--csv {out / 'tags.csv'}: cannot write to {out}" in one_error_line(result)


def test_folder_named_like_the_output_file_is_refused_before_tagging(tmp_path):
    audio = write_wav(tmp_path / "clip.wav", tone(1.0))
    out = tmp_path / "tags.csv"
    out.mkdir()
    started = time.monotonic()
    result = run("tag_audio.py", str(audio), "--csv", str(out), "--model", "missing.pth")
    assert result.returncode == 1
    assert one_error_line(result) == f"error: --csv {out}: is a folder; give a file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "tags.csv"]
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    "script, args, option",
    [
        ("blend_predict.py", ["--experiments", "a,b"], "--out"),
        ("export_onnx.py", ["model.pth"], "--out"),
        ("package_weights.py", ["--experiments", "a"], "--out"),
        ("demo.py", ["--input", "clip.wav", "--headless", "--model", "model.pth"], "--dump"),
    ],
)
def test_every_output_file_option_is_checked_before_the_work(tmp_path, script, args, option):
    write_wav(tmp_path / "clip.wav", tone(1.0))
    (tmp_path / "model.pth").write_bytes(b"not read: the output is checked first")
    out = tmp_path / "out.file"
    out.mkdir()
    args = [str(tmp_path / a) if a in ("model.pth", "clip.wav") else a for a in args]
    result = run(script, *args, option, str(out))
    assert result.returncode == 1
    assert one_error_line(result) == f"error: {option} {out}: is a folder; give a file name"


def test_folder_named_like_an_audio_file(tmp_path):
    folder = tmp_path / "x.wav"
    folder.mkdir()
    result = run("tag_audio.py", str(folder))
    assert result.returncode == 1 and str(folder) in one_error_line(result)
    result = run("demo.py", "--input", str(folder), "--headless", "--model", str(folder))
    assert result.returncode == 1 and str(folder) in one_error_line(result)


SIZE = ["--curated-per-class", "20", "--noisy-per-class", "20", "--max-seconds", "4"]


def test_ctrl_c_is_one_line_status_130_and_leaves_nothing(tmp_path):
    """Ctrl-C reaches the whole foreground process group: the main process and its pool
    workers. make_synthetic.py generates into a temporary folder with two workers."""
    out = tmp_path / "synthetic"
    process = subprocess.Popen(
        [sys.executable, "make_synthetic.py", "--out", str(out), "--workers", "2", *SIZE],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(tmp_path.glob(".synthetic.tmp-*/train_curated/*.wav")):
            assert process.poll() is None and time.monotonic() < deadline, "never started"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary folder


def test_ctrl_c_in_a_fold_leaves_no_argus_traceback_on_the_console():
    """argus logs the exception that stops its engine with a traceback; for Ctrl-C the console
    gets only the script's `interrupted` (other exceptions keep their traceback)."""
    import io
    import logging
    from types import SimpleNamespace

    from src.training.callbacks.console import epoch_lines_to_log_only

    stream = io.StringIO()
    logger = logging.getLogger("test_ctrl_c_in_a_fold")
    logger.propagate = False
    logger.addHandler(logging.StreamHandler(stream))

    def engine_stopped_by(exception: BaseException) -> None:
        try:
            raise exception
        except BaseException as caught:  # what argus's Engine.run does with it
            logger.exception(caught)
            raise

    model = SimpleNamespace(logger=logger)
    with epoch_lines_to_log_only(model, verbose=True), pytest.raises(KeyboardInterrupt):
        engine_stopped_by(KeyboardInterrupt())
    assert stream.getvalue() == ""
    with epoch_lines_to_log_only(model, verbose=True), pytest.raises(ValueError):
        engine_stopped_by(ValueError("a real failure"))
    assert "Traceback" in stream.getvalue() and "a real failure" in stream.getvalue()


def living_in_group(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (from /proc: Linux)."""
    living = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            living.append(int(stat.parent.name))
    return living


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_ctrl_c_during_folds_in_parallel_stops_every_worker_with_one_line(tiny_data):
    """train_folds.py --gpus: the fold workers ignore Ctrl-C and the parent stops them, so the
    console shows `interrupted`, not a traceback per worker, and no worker outlives it."""
    argv = ["train_folds.py", "--experiment", "auxiliary_016", "--smoke", "--workers", "0"]
    process = subprocess.Popen(
        [sys.executable, *argv, "--gpus", "cpu,cpu", "--no-progress"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    experiment = tiny_data / "experiments" / "auxiliary_016"
    try:
        deadline = time.monotonic() + 240
        while len(list(experiment.glob("fold_*/log.txt"))) < 2:  # both workers in a fold
            assert process.poll() is None and time.monotonic() < deadline, "never started"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=120)
        time.sleep(1)
        assert living_in_group(process.pid) == []  # no worker outlives the command
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
