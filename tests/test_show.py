"""show.py and src.tools.pictures: the pictures are drawn from the pipeline's own computations
(log-mel, training transforms, the network), bad input is one line, the README's pictures are
current, and tag_audio.py --plot draws the worst-scored clips."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import librosa
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import src.tools.pictures.worst_clips as worst_clips_module
import src.tools.tagging.api
import tag_audio
from src.augment.mixers import get_mixer
from src.augment.transforms import (
    CenterCrop,
    PadToSize,
    RandomCrop,
    RandomResizedCrop,
    SpecAugment,
    get_transforms,
)
from src.config import AUDIO
from src.data.audio import load_audio, make_extractor, read_as_melspectrogram, read_audio
from src.experiment_files import load_experiment
from src.models import MODELS
from src.tools.pictures.architecture import architecture_figure, experiment_graph
from src.tools.pictures.augmentations import augmentation_figure, augmentation_views
from src.tools.pictures.spectrograms import read_panels, spectrogram_figure
from src.tools.scoring import score_tags
from src.tools.tagging.api import Tagger
from src.tools.tagging.clips import Clip
from src.tools.tagging.files import TaggedFile
from src.tools.tagging.sources import ModelSource, Tags
from src.training.datasets import ClipDataset
from tests.helpers import REPO_ROOT, save_cnn_checkpoint, tone, write_wav

ROBIN = "456440__inspectorj__bird-whistling-robin-single-13.ogg"
TRUMPET = "sorohanro_-_solo-trumpet-06.ogg"
README_PICTURES = ("spectrograms.png", "augmentations.png", "architecture.png")


def run_show(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "show.py", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def images(figure) -> list[np.ndarray]:
    """The data of every image panel of a figure (subfigures included), in drawing order."""
    return [np.asarray(image.get_array()) for axis in figure.get_axes() for image in axis.images]


@pytest.fixture(scope="module")
def examples(librosa_examples) -> dict[str, Path]:
    return {path.name: path for path in librosa_examples}


# --------------------------------------------------------------------------------------
# Spectrograms
# --------------------------------------------------------------------------------------


def test_spectrograms_are_the_pipelines_log_mel(examples, tmp_path):
    paths = [examples[ROBIN], examples[TRUMPET]]
    labels = {ROBIN: "Chirp_and_tweet,robin"}
    panels = read_panels(paths, labels)
    figure = spectrogram_figure(panels)
    drawn = images(figure)
    assert len(drawn) == 2
    torch_extractor = make_extractor("torch")
    for path, image, axis in zip(paths, drawn, figure.get_axes()):
        # What the tagger and the spectrogram cache compute, bit for bit ...
        np.testing.assert_array_equal(image, torch_extractor([read_audio(path)])[0])
        # ... which is the original's read_as_melspectrogram (librosa) to 1e-4 dB.
        np.testing.assert_allclose(image, read_as_melspectrogram(path), rtol=0, atol=1e-4)
        # Seconds in the file: frame 0 where librosa's trim puts the start of the sound.
        start = librosa.effects.trim(load_audio(path), top_db=60)[1][0] / AUDIO.sampling_rate
        step = AUDIO.hop_length / AUDIO.sampling_rate
        left, right, _, _ = axis.images[0].get_extent()
        assert left == pytest.approx(start - step / 2)
        assert right - left == pytest.approx(image.shape[1] * step)
        # The mel axis in Hz: the 1 kHz tick sits where the filterbank's centres put 1 kHz.
        centres = librosa.mel_frequencies(AUDIO.n_mels + 2, fmin=AUDIO.fmin, fmax=AUDIO.fmax)
        ticks = dict(zip([t.get_text() for t in axis.get_yticklabels()], axis.get_yticks()))
        assert ticks["1k"] == pytest.approx(
            np.interp(1000, centres[1:-1], np.arange(128)), abs=0.02
        )
        assert axis.get_xlabel() == "seconds"
    titles = [axis.get_title("left") for axis in figure.get_axes()[:2]]
    assert titles[0] == f"{ROBIN[:20]}...{ROBIN[-19:]}\nlabels: Chirp_and_tweet, robin"
    assert titles[1].endswith("labels: (not in the labels file)")
    colour_bars = [a for a in figure.get_axes() if a.get_ylabel() == "dB"]
    assert len(colour_bars) == 1
    limits = colour_bars[0].get_ylim()
    assert limits[0] == pytest.approx(min(i.min() for i in drawn))
    assert limits[1] == pytest.approx(max(i.max() for i in drawn))


def test_spectrograms_and_worst_clips_with_a_checkpoint(examples, tmp_path):
    """show.py spectrograms --model shows the tagger's top classes; tag_audio.py --score
    --plot writes worst_clips.png beside the confusion matrix."""
    checkpoint = save_cnn_checkpoint(tmp_path / "model.pth")
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in (ROBIN, TRUMPET):
        (folder / name).symlink_to(examples[name])
    tags_csv, png = tmp_path / "tags.csv", tmp_path / "tagged.png"
    result = run_show(
        "spectrograms",
        str(folder),
        "--model",
        str(checkpoint),
        "--top",
        "2",
        "--device",
        "cpu",
        "--out",
        str(png),
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(png).size[0] > 500
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"fname": [ROBIN, TRUMPET], "labels": ["Chirp_and_tweet", "Bark"]}).to_csv(
        labels, index=False
    )
    plots = tmp_path / "plots"
    tagged = subprocess.run(
        [sys.executable, "tag_audio.py", str(folder), "--model", str(checkpoint), "--device",
         "cpu", "--csv", str(tags_csv), "--score", str(labels), "--plot", str(plots)],
        cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert tagged.returncode == 0, tagged.stderr
    assert f"worst clips (lowest label-ranking precision): {plots / 'worst_clips.png'}" in (
        tagged.stdout
    )
    assert Image.open(plots / "worst_clips.png").format == "PNG"
    # The tags drawn are the tagger's: the same two top classes as its CSV.
    frame = pd.read_csv(tags_csv)
    from src.tools.tagging.sources import checkpoint_source

    panels = read_panels(sorted(folder.iterdir()), source=checkpoint_source(checkpoint, "cpu", 8),
                         top=2)  # fmt: skip
    for panel, (_, row) in zip(panels, frame.iterrows()):
        probabilities = row.iloc[1:].astype(float)
        best = probabilities.sort_values(ascending=False, kind="stable").index[:2]
        expected = ", ".join(f"{name} {probabilities[name]:.2f}" for name in best)
        assert panel.lines == [f"top: {expected}"]


def test_spectrograms_with_a_trained_experiment(smoke_data, examples, tmp_path, capsys):
    """--experiment NAME tags with the trained experiment of the data directory, as
    tag_audio.py --experiment does (the geometric mean over its folds)."""
    import show
    from src.tools.tagging.trained import best_experiment

    name = best_experiment(smoke_data / "experiments").name
    out = tmp_path / "tagged.png"
    argv = ["spectrograms", str(examples[ROBIN]), "--experiment", name, "--device", "cpu"]
    assert show.main([*argv, "--data-dir", str(smoke_data), "--out", str(out)]) == 0
    assert Image.open(out).format == "PNG"
    assert f"1 spectrogram(s): {out}" in capsys.readouterr().err
    tagged = tmp_path / "tags.csv"
    assert tag_audio.main([str(examples[ROBIN]), "--experiment", name, "--device", "cpu",
                           "--csv", str(tagged), "--top", "3"]) == 0  # fmt: skip
    row = pd.read_csv(tagged).iloc[0, 1:].astype(float)
    best = row.sort_values(ascending=False, kind="stable").index[:3]
    from src.tools.tagging.sources import experiment_source

    source = experiment_source(smoke_data / "experiments", name, "cpu", 8)
    panel = read_panels([examples[ROBIN]], source=source)[0]
    assert panel.lines == ["top: " + ", ".join(f"{c} {row[c]:.2f}" for c in best)]


def direct_precision(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per file, the definition: for each label, the share of the file's labels among the
    classes scored at or above it, averaged over its labels."""
    return np.array(
        [np.mean([t[s >= s[c]].sum() / (s >= s[c]).sum() for c in np.nonzero(t)[0]])
         for t, s in zip(truth, scores)]
    )  # fmt: skip


def test_worst_clips_are_the_lowest_precision_files(tmp_path, monkeypatch, capsys):
    classes = ("dog", "cat", "bird", "car")
    rng = np.random.default_rng(3)
    n = 20
    truth = np.zeros((n, 4))
    truth[np.arange(n), rng.integers(0, 4, n)] = 1
    truth[:5, 0] = 1  # some files with two labels
    scores = rng.random((n, 4))
    names = [f"f{i:02d}.wav" for i in range(n)]
    table = pd.DataFrame(
        {"fname": names, "labels": [",".join(np.array(classes)[t > 0]) for t in truth]}
    )
    folder = tmp_path / "test"
    for i, name in enumerate(names):
        write_wav(folder / name, tone(0.6 + 0.05 * i, 300 + 40 * i))
    labels = tmp_path / "labels.csv"
    table.to_csv(labels, index=False)
    # Laid out as make_dataset.py lays out: the panels are titled with the recordings' names.
    recording = {name: f"/home/me/recordings/take_{i:02d}.wav" for i, name in enumerate(names)}
    pd.DataFrame(
        {"split": "test", "file": [f"test/{n}" for n in names], "source": recording.values()}
    ).to_csv(tmp_path / "sources.csv", index=False)

    precision = direct_precision(truth, scores)
    score = score_tags([str(folder / f) for f in names], scores, classes, table)
    np.testing.assert_allclose(score.per_file["precision"], precision)

    by_name = dict(zip(names, scores))

    def fake_tag_files(files, source, embeddings=False):
        for path in files:
            yield TaggedFile(
                Clip(Path(path), np.zeros((128, 10)), 0.0),
                Tags(by_name[Path(path).name], by_name[Path(path).name][None]),
                np.zeros(1),
            )

    drawn = {}
    real_save = worst_clips_module.save_figure

    def keep(figure, path, dpi):
        drawn["titles"] = [axis.get_title("left") for axis in figure.get_axes() if axis.images]
        drawn["images"] = images(figure)
        real_save(figure, path, dpi)

    source = ModelSource(
        "stand-in model", classes, predictor=SimpleNamespace(tile=128, embeds=False)
    )
    monkeypatch.setattr(tag_audio, "load_tagger", lambda args: Tagger(source))
    monkeypatch.setattr(src.tools.tagging.api, "tag_files", fake_tag_files)
    monkeypatch.setattr(worst_clips_module, "save_figure", keep)
    plots = tmp_path / "plots"
    assert tag_audio.main([str(folder), "--score", str(labels), "--plot", str(plots)]) == 0
    assert (plots / "worst_clips.png").is_file() and (plots / "confusion_matrix.png").is_file()
    worst = np.argsort(precision, kind="stable")[:12]
    assert [t.split("\n")[0] for t in drawn["titles"]] == [
        Path(recording[names[i]]).name for i in worst
    ]
    first = drawn["titles"][0].split("\n")
    top = np.argsort(-scores[worst[0]], kind="stable")[:3]
    assert first[1] == f"labels: {table['labels'][worst[0]].replace(',', ', ')}"
    assert first[2] == "top: " + ", ".join(f"{classes[c]} {scores[worst[0], c]:.2f}" for c in top)
    assert first[3] == f"label-ranking precision {precision[worst[0]]:.2f}"
    # Each panel is the file's spectrogram as the tagger reads it.
    extractor = make_extractor("torch")
    np.testing.assert_array_equal(
        drawn["images"][0], extractor([read_audio(folder / names[worst[0]])])[0]
    )


# --------------------------------------------------------------------------------------
# Augmentations
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def robin_and_trumpet(examples) -> tuple[np.ndarray, np.ndarray]:
    extractor = make_extractor("torch")
    return tuple(extractor([read_audio(examples[n])])[0] for n in (ROBIN, TRUMPET))


def test_augmented_images_are_the_training_transforms_output(robin_and_trumpet):
    robin, trumpet = robin_and_trumpet
    config = load_experiment("corr_noisy_007")
    views = augmentation_views(robin, config, ROBIN, trumpet, TRUMPET, seeds=4)
    # The reference: the pipeline built from the configuration as the original built it.
    transforms, mix = config["transforms"], config["mixer"]
    transform = get_transforms(True, 256, **transforms)
    mixer = get_mixer(mix["prob"], tuple(mix["sigmoid_range"]), tuple(mix["p"]), mix["alpha_dist"])
    partner = ClipDataset({"t": trumpet}, ["t"], np.array([[0.0, 1.0]]), 0, transform)
    mixed = 0
    for seed, panel in enumerate(views.pipeline):
        rng = np.random.default_rng(seed)
        image = transform(robin, rng)
        image, target = mixer(partner, image, torch.tensor([1.0, 0.0]), rng)
        np.testing.assert_array_equal(panel.image, image[0].numpy() * np.float32(100))
        assert f"target {target[0]:.2f} / {target[1]:.2f}" in panel.title
        mixed += bool(target[1] > 0)
    assert mixed > 0  # seeds 0..3 draw at least one mix (p 0.8)

    # Each transform alone, on the wrap-padded crop of seed 0.
    alone = {panel.title.split(" (")[0].split("\n")[0]: panel.image for panel in views.alone}
    assert list(alone) == [
        "wrap pad to 256", "constant pad to 256", "RandomResizedCrop", "SpecAugment",
        "SigmoidConcatMixer", "AddMixer",
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    window = RandomCrop(256)(PadToSize(256, "wrap")(robin, rng), rng)
    np.testing.assert_array_equal(alone["wrap pad to 256"], window)
    assert robin.shape[1] < 256  # so the padding shows: the clip repeats
    period = robin.shape[1]
    np.testing.assert_array_equal(window[:, period:], window[:, : 256 - period])
    spec = SpecAugment(2, 0.15, 0.2)(window, np.random.default_rng(0))
    np.testing.assert_array_equal(alone["SpecAugment"], spec)
    resized = RandomResizedCrop(
        tuple(transforms["resize_scale"]), tuple(transforms["resize_ratio"])
    )
    np.testing.assert_array_equal(
        alone["RandomResizedCrop"], resized(window, np.random.default_rng(0))
    )

    # The input channels: log-mel, librosa's delta and delta-delta of the validation crop.
    crop = CenterCrop(256)(PadToSize(256, "constant")(robin))
    np.testing.assert_allclose(views.channels[0].image, crop, atol=1e-4)
    for order, panel in zip((1, 2), views.channels[1:]):
        expected = librosa.feature.delta(crop, width=9, order=order, mode="interp")
        np.testing.assert_allclose(panel.image, expected, atol=1e-3)

    # The figure draws exactly these arrays.
    drawn = images(augmentation_figure(views))
    expected = [views.clip, *views.channels, *views.alone, *views.pipeline]
    assert len(drawn) == len(expected)
    for image, panel in zip(drawn, expected):
        np.testing.assert_array_equal(image, panel.image)


def test_without_a_second_clip_each_sample_is_the_training_datasets(robin_and_trumpet):
    robin, _ = robin_and_trumpet
    for scale in ("full", "cpu"):
        config = load_experiment("corr_noisy_007", scale)
        views = augmentation_views(robin, config, ROBIN, seeds=3)
        crop = config["crop_size"]
        transform = get_transforms(True, crop, **config["transforms"])
        mix = config["mixer"]
        mixer = get_mixer(
            mix["prob"], tuple(mix["sigmoid_range"]), tuple(mix["p"]), mix["alpha_dist"]
        )
        dataset = ClipDataset({"r": robin}, ["r"], np.ones((1, 1)), 0, transform, mixer)
        for seed, panel in enumerate(views.pipeline):
            image = dataset.sample(0, np.random.default_rng(seed))[0]
            np.testing.assert_array_equal(panel.image, image[0].numpy() * np.float32(100))
            assert panel.image.shape == (128, crop)
        mixers = [p for p in views.alone if "Mixer" in p.title]
        assert len(mixers) == (2 if scale == "full" else 0)
        assert views.notes == (
            [] if scale == "full" else ["no mixing in this experiment (mixer.prob 0)"]
        )


# --------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "experiment, architecture, parameters, outputs",
    [
        ("auxiliary_016", "AuxSkipAttention", 17_326_950, 4),
        ("corrections_002", "SkipAttention", 16_793_587, 1),
        ("corr_noisy_003", "RnnAuxSkipAttention", 22_054_246, 4),
        ("stacking_008_fcnet_43040", "FCNet", 1_180_101, 1),
    ],
)
def test_architecture_counts_are_the_networks(experiment, architecture, parameters, outputs):
    graph = experiment_graph(load_experiment(experiment), 80)
    assert graph.architecture == architecture
    assert graph.total == parameters  # the original's counts
    assert sum(b.parameters for b in graph.blocks) + graph.own == graph.total
    assert graph.own == 0
    heads = sorted(b.output for b in graph.blocks if b.output is not None)
    assert heads == list(range(outputs))
    figure = architecture_figure(graph)
    texts = [t.get_text() for t in figure.get_axes()[0].texts]
    assert f"{architecture}: {parameters:,} parameters" in texts
    if architecture == "FCNet":
        assert graph.input_shape == (1, 7 * 80)
        return
    assert graph.input_shape == (1, 3, 128, 256)
    # Shapes as the network computes them, the skips feeding the concatenation beside conv4.
    assert graph.block("conv1").shape == (1, 64, 64, 128)
    assert graph.block("conv4").shape == (1, 512, 8, 16)
    cat = graph.block("cat")
    assert cat.inputs == ["conv4", "skip1", "skip2", "skip3"] and cat.shape == (1, 2048, 8, 16)
    for k in (1, 2, 3):
        skip = graph.block(f"skip{k}")
        assert skip.inputs == [f"conv{k}"] and skip.column == 1
        assert skip.row == graph.block(f"conv{k}").row
    assert graph.block("fc").output == 0 and graph.block("fc").column == 0
    if outputs == 4:
        assert [graph.block(f"aux{k}").output for k in (3, 2, 1)] == [1, 2, 3]
        assert graph.output_notes[1] == "auxiliary, loss weight 0.4"
    if architecture == "RnnAuxSkipAttention":
        assert graph.block("lstm").shape == (1, 16, 512)


def test_architecture_follows_scale_and_set():
    config = load_experiment("corr_noisy_007", "cpu", ["model.params.base_size=24"])
    graph = experiment_graph(config, 10)
    network = MODELS["AuxSkipAttention"](10, **config["model"]["params"])
    assert graph.total == sum(p.numel() for p in network.parameters())
    assert graph.input_shape == (1, 3, 128, 64)
    assert graph.block("conv1").shape == (1, 24, 64, 32)
    assert graph.block("fc").shape == (1, 10)


# --------------------------------------------------------------------------------------
# Bad input: one line, exit status 1, nothing written
# --------------------------------------------------------------------------------------


def test_bad_input_is_one_line(tmp_path, capsys):
    import show
    from src.cli import run_main

    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEjunk bytes, not audio" * 10)
    out = tmp_path / "out.png"
    cases = [
        (["spectrograms", str(tmp_path / "missing.wav")], "missing.wav: file not found"),
        (["spectrograms", str(junk)], "junk.wav: cannot decode audio"),
        (["augmentations", str(junk), "--experiment", "corr_noisy_007"], "junk.wav: cannot decode"),
        (["architecture", "--experiment", "no_such"], "unknown experiment 'no_such'"),
        (["augmentations", str(junk), "--experiment", "no_such"], "unknown experiment 'no_such'"),
        (["augmentations", str(junk), "--experiment", "stacking_008_fcnet_43040"],
         "is a stacking experiment"),
        (["architecture", "--experiment", "auxiliary_016", "--set", "model.name=Foo"],
         "unknown network 'Foo'"),
        (["architecture", "--experiment", "auxiliary_016", "--set", "model.params.nope=1"],
         "nope"),
    ]  # fmt: skip
    for index, (args, message) in enumerate(cases):
        if index < 2:  # as a user runs it
            result = run_show(*args, "--out", str(out))
            status, stderr = result.returncode, result.stderr
        else:  # the same exit path, in this process (faster)
            with pytest.raises(SystemExit) as exit_info:
                run_main(lambda argv=[*args, "--out", str(out)]: show.main(argv))
            status, stderr = exit_info.value.code, capsys.readouterr().err
        assert status == 1, (args, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
        assert not out.exists() and not list(tmp_path.glob(".out.png*"))


# --------------------------------------------------------------------------------------
# The README's pictures
# --------------------------------------------------------------------------------------


def pictures_recipe() -> list[str]:
    """The command lines of `make pictures`."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile.split("\npictures: venv\n", 1)[1]
    return [line.strip() for line in recipe.split("\n\n", 1)[0].splitlines()]


def test_readme_shows_the_pictures_and_their_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    # Shell continuations joined: the README's commands as one line each.
    commands = readme.replace("\\\n", " ")
    commands = re.sub(r" +", " ", commands)
    recipe = pictures_recipe()
    assert len(recipe) == len(README_PICTURES)
    for name, line in zip(README_PICTURES, recipe):
        assert f"](docs/{name})" in readme
        assert (REPO_ROOT / "docs" / name).stat().st_size < 200_000
        command = (
            line.replace("$(BIN)/python", "python")
            .replace("$(EXAMPLES)", "$E")
            .replace("$(PICTURES_DIR)", "docs")
        )
        assert command in commands, command
    assert "E=../shared/data/real-audio/librosa-examples" in readme
    # Near the top: before the quick start.
    assert readme.index("](docs/spectrograms.png)") < readme.index("## Quick start")


def test_make_pictures_regenerates_the_committed_ones(real_audio, tmp_path):
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        ["make", "-o", f"{bin_dir}/.installed", "pictures", f"BIN={bin_dir}",
         f"EXAMPLES={real_audio / 'librosa-examples'}", f"PICTURES_DIR={tmp_path}"],
        cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in README_PICTURES:
        made, committed = Image.open(tmp_path / name), Image.open(REPO_ROOT / "docs" / name)
        assert made.size == committed.size, f"{name}: run `make pictures` and commit docs/"
        made_bytes = (tmp_path / name).stat().st_size
        committed_bytes = (REPO_ROOT / "docs" / name).stat().st_size
        assert 0.8 < made_bytes / committed_bytes < 1.25, name
