"""The scripts are one suite: every script builds its parser in `build_parser()`, its --help
renders, and an option shared by several scripts has one name, one set of choices and one
default everywhere (the reference is what src/cli.py's add_* functions make)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from functools import cache

import pytest

from src.cli import (
    AMP_CHOICES,
    DEVICE_DEFAULT,
    PREDICTION_AMP,
    TRAINING_AMP,
    add_data_dir,
    add_device,
    add_folds,
    add_no_progress,
)
from tests.helpers import REPO_ROOT
from tests.test_clean_errors import SCRIPTS

# Scripts that read and write only the paths they are given, never the data directory.
WITHOUT_DATA_DIR = {
    "export_onnx.py": "a checkpoint in, an .onnx beside it or at --out",
    "make_dataset.py": "makes a data directory: --out",
}
# Where choosing folds makes sense: training, prediction, tagging, streaming.
WITH_FOLDS = {
    "train_folds.py",
    "stacking_train.py",
    "predict_folds.py",
    "stacking_predict.py",
    "tag_audio.py",
    "demo.py",
    "search.py",
    "train_probe.py",
}
# What replaces something that exists (an experiment, a dataset, an import) asks for --force.
WITH_FORCE = {
    "train_folds.py",
    "stacking_train.py",
    "import_weights.py",
    "make_dataset.py",
    "make_synthetic.py",
    "train_probe.py",
}
RETIRED = {
    "--stacking": "--experiments (stacking_predict.py), --stacking-experiments (build_kernel.py)",
    "--blend": "--blend-experiments",
    "--fold": "--folds",
    "--overwrite": "--force",
}


@cache
def script_module(script: str):
    spec = importlib.util.spec_from_file_location(f"script_{script[:-3]}", REPO_ROOT / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def parsers_of(script: str) -> dict[str, argparse.ArgumentParser]:
    """The script's parser, or one per sub-command ('script command')."""
    parser = script_module(script).build_parser()
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update({f"{script} {name}": sub for name, sub in action.choices.items()})
    return found or {script: parser}


def option(parser: argparse.ArgumentParser, name: str) -> argparse.Action | None:
    return next((a for a in parser._actions if name in a.option_strings), None)


def reference(add, *args) -> argparse.Action:
    parser = argparse.ArgumentParser()
    add(parser, *args)
    return parser._actions[-1]


ALL = [(name, parser) for script in SCRIPTS for name, parser in parsers_of(script).items()]
IDS = [name for name, _ in ALL]


def test_every_script_builds_its_parser_in_build_parser():
    for script in SCRIPTS:
        parser = script_module(script).build_parser()
        assert isinstance(parser, argparse.ArgumentParser), script
        assert parser.format_help().strip(), script


@pytest.mark.parametrize(("name", "parser"), ALL, ids=IDS)
def test_help_renders_and_shared_options_agree(name, parser):
    script = name.split()[0]
    assert parser.format_help()

    data_dir = option(parser, "--data-dir")
    if script in WITHOUT_DATA_DIR:
        assert data_dir is None, f"{name}: {WITHOUT_DATA_DIR[script]}"
    else:
        assert data_dir is not None, f"{name} has no --data-dir"
        assert data_dir.help == reference(add_data_dir).help and data_dir.default is None

    device = option(parser, "--device")
    if device is not None:
        assert device.default == DEVICE_DEFAULT == "auto", name
        assert device.help == reference(add_device).help, name

    amp = option(parser, "--amp")
    if amp is not None:
        assert tuple(amp.choices) == AMP_CHOICES, name
        training = script in ("train_folds.py", "search.py")
        assert amp.default == (TRAINING_AMP if training else PREDICTION_AMP)

    folds = option(parser, "--folds")
    assert (folds is not None) == (script in WITH_FOLDS), f"{name}: --folds"
    if folds is not None:
        assert folds.default is None and folds.metavar == reference(add_folds).metavar, name

    force = option(parser, "--force")
    assert (force is not None) == (script in WITH_FORCE), f"{name}: --force"
    if force is not None:
        assert isinstance(force, argparse._StoreTrueAction), name

    progress = option(parser, "--no-progress")
    if progress is not None:
        assert progress.help == reference(add_no_progress).help, name

    out = option(parser, "--out")
    if out is not None:
        words = out.help.lower()
        assert any(w in words for w in ("folder", "zip", "file")), f"{name}: --out {out.help!r}"

    for old, new in RETIRED.items():
        assert option(parser, old) is None, f"{name}: {old} is now {new}"


def test_experiment_is_one_and_experiments_are_several():
    """--experiment takes one name; a list of names is --experiments or --*-experiments."""
    for name, parser in ALL:
        for action in parser._actions:
            for flag in action.option_strings:
                if flag == "--experiment":
                    assert action.nargs is None and "comma" not in (action.help or ""), name
                if flag.endswith("-experiments") or flag == "--experiments":
                    assert action.nargs is None, name


def test_stacking_train_offers_only_what_a_stacking_experiment_uses():
    (parser,) = parsers_of("stacking_train.py").values()
    for unused in ("--augment-on", "--compile", "--channels-last", "--amp"):
        assert option(parser, unused) is None, unused
    assert list(option(parser, "--scale").choices) == ["full", "smoke"]
    assert option(parser, "--no-corrections") is not None  # its labels take corrections
    (first_level,) = parsers_of("train_folds.py").values()
    assert list(option(first_level, "--scale").choices) == ["full", "cpu", "smoke"]


def test_folds_parse_alike_everywhere():
    """The same --folds text means the same folds in every script that takes it."""
    for script in sorted(WITH_FOLDS):
        (parser,) = parsers_of(script).values()
        required = [a for a in parser._actions if a.required]
        argv = []
        for action in required:
            value = "1" if action.type is int else "x"
            argv += [action.option_strings[0], value] if action.option_strings else [value]
        if script == "tag_audio.py":
            argv += ["--experiment", "x"]
        if script == "demo.py":
            argv += ["--experiment", "x"]
        args = parser.parse_args([*argv, "--folds", "0,2"])
        assert args.folds == "0,2", script
