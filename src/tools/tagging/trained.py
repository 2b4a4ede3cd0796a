"""Finding trained models in `<data>/experiments`, for tag_audio.py and the demo: the best
first-level experiment, and the names of a loaded checkpoint's outputs."""

from __future__ import annotations

from pathlib import Path

from src.cli import command_line
from src.config import ConfigError
from src.prediction.tiling import output_count
from src.runs import TrainedExperiment, checkpoint_classes, trained_experiments


def train_hint() -> str:
    """Where models come from: the released weights, training (on the data directory), or a
    checkpoint named on the command line."""
    return (
        "import the released weights (`"
        + command_line("import_weights.py", "experiments.zip")
        + "`), or train one (`"
        + command_line("train_folds.py", "--experiment", "corr_noisy_007", "--scale", "cpu")
        + "` on a dataset in the data directory: README, 'Quick start'), or pass --model PATH"
    )


def best_experiment(experiments_dir: Path) -> TrainedExperiment:
    """The first-level experiment with the highest mean validation score over its folds.

    The mean over folds rather than the best single fold: fold scores differ with the fold's
    difficulty, so a single lucky fold says little about the experiment.
    """
    candidates = [e for e in trained_experiments(experiments_dir) if e.kind == "cnn"]
    if not candidates:
        raise ConfigError(
            f"no trained model found in {experiments_dir} (the data directory's experiments: "
            f"--data-dir, else $FREESOUND_DATA_DIR, else data/): {train_hint()}"
        )
    return max(candidates, key=lambda e: (e.mean_score, e.name))


def model_classes(model, checkpoint: Path) -> tuple[str, ...]:
    """Names of a loaded checkpoint's outputs (`src.runs.checkpoint_classes`)."""
    return checkpoint_classes(checkpoint, output_count(model))
