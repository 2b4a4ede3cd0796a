"""Shared fixtures: an isolated data directory, the real recordings, small audio files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_AUDIO = Path(
    os.environ.get("FREESOUND_REAL_AUDIO", REPO_ROOT.parent / "shared/data/real-audio")
)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Every test gets its own data directory and runs in local (non-Kaggle) mode."""
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MODE", raising=False)
    monkeypatch.delenv("FREESOUND_KAGGLE_ROOT", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def real_audio() -> Path:
    if not (REAL_AUDIO / "librosa-examples").is_dir():
        pytest.skip(f"real recordings not found at {REAL_AUDIO}")
    return REAL_AUDIO


@pytest.fixture(scope="session")
def librosa_examples(real_audio) -> list[Path]:
    return sorted((real_audio / "librosa-examples").glob("*.ogg"))


@pytest.fixture(scope="session")
def fsdd(real_audio) -> Path:
    folder = real_audio / "fsdd"
    if not (folder / "metadata.csv").is_file():
        pytest.skip(f"FSDD recordings not found at {folder}")
    return folder


def write_wav(path: Path, audio: np.ndarray, sr: int = 44100, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, sr, subtype=subtype)
    return path


def tone(seconds: float, freq: float = 440.0, sr: int = 44100, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)
