"""Which epoch a fold keeps and when it stops: a higher val lwlrap, or an equal one with a lower
val bce, is a better epoch (src/training/callbacks/improvement.py). A small validation set
saturates at lwlrap 1.0, and the score alone would keep the first epoch that reaches it."""

from __future__ import annotations

import logging

import pytest
from argus.callbacks import ReduceLROnPlateau
from argus.engine import Engine

from src.runs import STATE_FILE, read_checkpoint
from src.training.callbacks.checkpoints import BestCheckpoint
from src.training.callbacks.curves import TrainingCurves
from src.training.callbacks.early_stopping import EarlyStopping
from src.training.callbacks.improvement import Improvement, best_epoch
from src.training.callbacks.resume import ResumeState
from src.training.parts import MONITOR, TIE_BREAK
from tests.test_library_internals import stacking_model

# (val lwlrap, val bce) per epoch: saturated from epoch 1, the bce still falling until epoch 4;
# epoch 3's lower bce comes with a lower score, so it is not better.
EPOCHS = [(0.8, 0.50), (1.0, 0.40), (1.0, 0.30), (0.9, 0.10), (1.0, 0.20), (1.0, 0.25),
          (1.0, 0.26), (1.0, 0.27), (1.0, 0.28)]  # fmt: skip
PATIENCE = 3


def run_epochs(fold_dir, epochs, interrupt_after: int | None = None):
    """Feed the epochs' metrics to the checkpoint and early stopping as the fold loop does;
    with `interrupt_after`, save the resume state there and go on with fresh callbacks.
    Returns the epoch that stopped the fold (None: it ran to the end)."""
    model = stacking_model()

    def fresh(saved=None):
        callbacks = [BestCheckpoint(fold_dir), EarlyStopping(PATIENCE)]
        plateau = ReduceLROnPlateau(monitor=MONITOR, better="max", patience=2)
        resume = ResumeState(fold_dir / STATE_FILE, *callbacks, plateau, saved, writes=True)
        callbacks += [plateau, resume]
        state = Engine(model.train_step).state
        state.stopped = False  # as Engine.run sets it
        for callback in callbacks:
            callback.start(state)
        return callbacks, state

    callbacks, state = fresh()
    for epoch, (score, bce) in enumerate(epochs):
        state.epoch, state.metrics = epoch, {MONITOR: score, TIE_BREAK: bce}
        for callback in callbacks:
            callback.epoch_complete(state)
        if state.stopped:
            return epoch
        if epoch == interrupt_after:
            callbacks, state = fresh(read_checkpoint(fold_dir / STATE_FILE, map_location="cpu"))
    return None


def kept(fold_dir) -> list[str]:
    return sorted(path.name for path in fold_dir.glob("model-*.pth"))


def test_an_equal_score_with_a_lower_bce_is_kept_and_keeps_the_fold_going(tmp_path):
    stopped = run_epochs(tmp_path, EPOCHS)
    # The score alone would keep epoch 1 and stop at epoch 4 (three epochs without a higher one).
    assert kept(tmp_path) == ["model-004-1.000000.pth"]
    assert stopped == 4 + PATIENCE


@pytest.mark.parametrize("interrupt_after", [2, 5])
def test_a_resumed_fold_keeps_the_same_epoch_and_stops_at_the_same_one(tmp_path, interrupt_after):
    stopped = run_epochs(tmp_path, EPOCHS, interrupt_after)
    assert kept(tmp_path) == ["model-004-1.000000.pth"]
    assert stopped == 4 + PATIENCE


def test_the_curves_mark_the_epoch_the_checkpoint_holds(tmp_path):
    run_epochs(tmp_path, EPOCHS)
    rows = [{MONITOR: score, TIE_BREAK: bce} for score, bce in EPOCHS]
    assert kept(tmp_path) == [f"model-{best_epoch(rows):03d}-1.000000.pth"]
    assert best_epoch([]) is None


def test_a_higher_score_wins_whatever_its_bce():
    best = Improvement()
    assert best.update({MONITOR: 0.7, TIE_BREAK: 0.1})
    assert best.update({MONITOR: 0.8, TIE_BREAK: 0.9})
    assert not best.update({MONITOR: 0.79, TIE_BREAK: 0.0})
    assert not best.update({MONITOR: 0.8, TIE_BREAK: 0.9})  # equal on both: not better
    assert best.update({MONITOR: 0.8, TIE_BREAK: 0.5})
    assert best.state() == {"score": 0.8, "loss": 0.5}


def test_a_state_saved_with_the_score_alone_resumes_with_any_bce_breaking_the_tie():
    best = Improvement()
    best.restore(1.0)
    assert best.update({MONITOR: 1.0, TIE_BREAK: 0.3})


def test_an_epoch_without_the_tie_break_metric_is_one_clear_error():
    with pytest.raises(ValueError, match="val_bce"):
        Improvement().update({MONITOR: 0.5})


def test_the_curves_are_drawn_with_the_kept_epoch_and_a_failure_is_only_a_warning(tmp_path, caplog):
    rows = [f"{epoch},0.001,0.5,0.4,{score},{bce}" for epoch, (score, bce) in enumerate(EPOCHS)]
    csv = tmp_path / "log.csv"
    csv.write_text("\n".join(["epoch,lr,train_loss,val_loss,val_lwlrap,val_bce", *rows]) + "\n")
    state = Engine(stacking_model().train_step).state
    TrainingCurves(csv, tmp_path / "curves.png", "fold 0").complete(state)
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    # A log that cannot be read leaves training alone: one warning naming the picture.
    with caplog.at_level(logging.WARNING):
        TrainingCurves(tmp_path / "missing.csv", tmp_path / "x.png", "fold 1").complete(state)
    assert "could not draw" in caplog.text and "x.png" in caplog.text
    assert not (tmp_path / "x.png").exists()
