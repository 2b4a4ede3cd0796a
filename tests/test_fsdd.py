"""A tiny model must learn real audio: spoken digits (FSDD), held-out speaker.

The full check (`bench/fsdd_learning.py` settings, 20 epochs, >= 0.9 lwlrap, about 5 CPU
minutes) is marked slow and left out of the default run (`make test-slow` runs it); the short
one, run by default, stops after 9 of those epochs (about 2 minutes; the bench reached 0.77 by
then) and must be at least twice chance (about 0.29 for 10 single-label classes).
"""

import sys
from dataclasses import replace

import pytest
import torch

from tests.helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from fsdd_learning import FsddSettings, fsdd_learning


@pytest.fixture
def two_threads():
    """The bench's 2 threads (the suite runs torch on 1): this is the longest test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_a_small_model_learns_spoken_digits_quickly(fsdd, tmp_path, two_threads):
    settings = replace(FsddSettings(), epochs=9)
    assert fsdd_learning(fsdd, tmp_path, settings) > 0.6


@pytest.mark.slow
def test_the_bench_configuration_reaches_0_9_on_a_held_out_speaker(fsdd, tmp_path):
    assert fsdd_learning(fsdd, tmp_path, FsddSettings()) >= 0.9
