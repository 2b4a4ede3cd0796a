"""A tiny model must learn real audio: spoken digits (FSDD), held-out speaker.

The full check (`bench/fsdd_learning.py` settings, >= 0.9 lwlrap, minutes of CPU) is marked
slow; the short one, run by default, trains a few epochs and must be clearly above chance
(chance is about 0.29 for 10 single-label classes).
"""

import sys
from dataclasses import replace

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from fsdd_learning import FsddSettings, fsdd_learning


def test_a_small_model_learns_spoken_digits_quickly(fsdd, tmp_path):
    settings = replace(FsddSettings(), base_size=8, lr=0.003, epochs=5, epoch_size=512)
    assert fsdd_learning(fsdd, tmp_path, settings) > 0.5


@pytest.mark.slow
def test_the_bench_configuration_reaches_0_9_on_a_held_out_speaker(fsdd, tmp_path):
    assert fsdd_learning(fsdd, tmp_path, FsddSettings()) >= 0.9
