"""What the project relies on of argus's and torch's undocumented parts (src/library_internals.py)
is still there: each check fails naming the field when an upgrade of a pinned library changes
it, before a resume, a compiled checkpoint or the console switch breaks silently."""

from __future__ import annotations

import logging

import pytest
import torch
from argus.callbacks import LoggingToFile, MonitorCheckpoint, ReduceLROnPlateau
from argus.engine import Engine

from src import library_internals
from src.models.argus_models import StackingModel, model_params
from tests.helpers import micro_config


def stacking_model() -> StackingModel:
    config = {**micro_config("stacking_008_fcnet_43040"), "kind": "stacking"}
    return StackingModel(model_params(config, 3, "cpu", in_channels=6))


def has(owner: object, field: str, where: str) -> None:
    assert hasattr(owner, field), f"{where} no longer has `{field}` (src/library_internals.py)"


def test_torch_compile_keeps_the_module_under_orig_mod():
    module = torch.nn.Linear(2, 2)
    compiled = torch.compile(module)
    has(compiled, library_internals.COMPILED_MODULE_ATTRIBUTE, "torch.compile's wrapper")
    assert library_internals.plain_module(compiled) is module
    keys = list(compiled.state_dict())
    assert keys and all(k.startswith(library_internals.COMPILE_PREFIX) for k in keys), (
        f"torch.compile's state-dict keys no longer start with {library_internals.COMPILE_PREFIX}"
    )
    assert list(library_internals.strip_compile_prefix(compiled.state_dict())) == list(
        module.state_dict()
    )


def test_argus_models_log_under_argus_and_print_through_a_plain_stream_handler(tmp_path):
    model = stacking_model()
    record = model.logger.makeRecord(model.logger.name, logging.INFO, "", 0, "x", (), None)
    assert library_internals.is_argus_record(record), (
        f"argus's model logger is named {model.logger.name!r}, not argus.*"
    )
    assert library_internals.console_handlers(model.logger), (
        "argus's model logger has no plain StreamHandler (the console switch finds none)"
    )
    to_file = LoggingToFile(tmp_path / "log.txt")
    to_file.start(Engine(model.train_step).state)
    consoles = library_internals.console_handlers(model.logger)
    assert all(type(h) is logging.StreamHandler for h in consoles)
    assert len(model.logger.handlers) > len(consoles), "LoggingToFile added no file handler"


def test_argus_model_has_its_predict_check():
    model = stacking_model()
    has(model, "_check_predict_ready", "argus.Model")
    library_internals.check_predict_ready(model)


def test_argus_callbacks_keep_their_bookkeeping_where_resuming_reads_it(tmp_path):
    model = stacking_model()
    state = Engine(model.train_step).state
    checkpoint = MonitorCheckpoint(tmp_path, monitor="val_lwlrap", better="max")
    plateau = ReduceLROnPlateau(monitor="val_lwlrap", better="max", patience=2)
    for callback in (checkpoint, plateau):
        callback.start(state)
    has(checkpoint, "saved_files_paths", "argus.callbacks.MonitorCheckpoint")
    has(plateau, "scheduler", "argus.callbacks.ReduceLROnPlateau")
    assert isinstance(plateau.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau), (
        "argus.callbacks.ReduceLROnPlateau.scheduler is no longer torch's ReduceLROnPlateau"
    )
    # The record round-trips into freshly started callbacks.
    checkpoint.saved_files_paths = [tmp_path / "model-001-0.700000.pth"]
    plateau.scheduler.step(0.5)
    plateau.scheduler.step(0.4)
    saved = library_internals.callback_state(checkpoint, plateau)
    fresh = (
        MonitorCheckpoint(tmp_path, monitor="val_lwlrap", better="max"),
        ReduceLROnPlateau(monitor="val_lwlrap", better="max", patience=2),
    )
    for callback in fresh:
        callback.start(state)
    assert library_internals.callback_state(*fresh) != saved
    library_internals.restore_callback_state(saved, *fresh)
    assert library_internals.callback_state(*fresh) == saved


def test_argus_engine_takes_shared_phase_states():
    model = stacking_model()
    phases: dict = {}
    try:
        Engine(model.train_step, phase_states=phases)
    except TypeError as error:
        pytest.fail(f"argus.engine.Engine no longer takes `phase_states`: {error}")
    assert phases, "argus.engine.Engine no longer registers itself in `phase_states`"
