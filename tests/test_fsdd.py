"""A tiny model must learn real audio: spoken digits (FSDD), held-out speaker.

The full check (`bench/fsdd_learning.py` settings, 20 epochs, >= 0.9 lwlrap, about 5 CPU
minutes) is marked slow and left out of the default run (`make test-slow` runs it); the short
one, run by default on one thread, stops after 6 of those epochs (about 2 minutes; the bench
reached 0.74 by then) and must be at least twice chance (about 0.29 for 10 single-label
classes).
"""

import sys
from dataclasses import replace

import pytest

from tests.helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from fsdd_learning import FsddSettings, fsdd_learning


def test_a_small_model_learns_spoken_digits_quickly(fsdd, tmp_path):
    settings = replace(FsddSettings(), epochs=6)
    assert fsdd_learning(fsdd, tmp_path, settings) > 0.6


@pytest.mark.slow
def test_the_bench_configuration_reaches_0_9_on_a_held_out_speaker(fsdd, tmp_path):
    assert fsdd_learning(fsdd, tmp_path, FsddSettings()) >= 0.9


@pytest.mark.slow
def test_own_sounds_path_learns_fsdd_at_the_cpu_scale(fsdd, tmp_path, capsys):
    """make_dataset.py -> make_folds.py -> train_folds.py --scale cpu (one fold) ->
    tag_audio.py --score on a held-out speaker (bench/fsdd_own_sounds.py): the issue's target,
    >= 0.9 lwlrap (fold 0 measured 0.924 on 2 threads, 0.915 on one; docs/performance.md)."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from fsdd_own_sounds import main as bench_main

    assert bench_main(["--fsdd", str(fsdd), "--keep", str(tmp_path / "work")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "fold 0" in x)
    assert float(line.split()[3]) >= 0.9, line
