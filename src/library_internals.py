"""What the project relies on of its libraries' undocumented parts, in one place.

argus 1.1 keeps the bookkeeping that resuming needs in callback attributes it does not
document, and torch.compile wraps a module under `_orig_mod`. Every use of such a name is here,
so an upgrade of argus or torch has one place to look at: `tests/test_library_internals.py`
fails naming the field when a pinned library changes one of them.

Heavy imports (torch, argus) happen inside the functions: `src.utils` imports this module, and
scripts that only parse arguments must stay light.
"""

from __future__ import annotations

import logging
from typing import Any

# --------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------

# torch.compile returns a wrapper that holds the original module under this attribute; its
# state-dict keys carry the attribute as a prefix.
COMPILED_MODULE_ATTRIBUTE = "_orig_mod"
COMPILE_PREFIX = COMPILED_MODULE_ATTRIBUTE + "."


def plain_module(module):
    """The module a `torch.compile` wrapper holds (its parameters are shared), or `module`."""
    return getattr(module, COMPILED_MODULE_ATTRIBUTE, module)


def strip_compile_prefix(state_dict: dict) -> dict:
    """State-dict keys without torch.compile's `_orig_mod.` prefix (checkpoints whose network
    was saved through the compiled wrapper load as plain keys)."""
    return {
        (key[len(COMPILE_PREFIX) :] if key.startswith(COMPILE_PREFIX) else key): value
        for key, value in state_dict.items()
    }


# --------------------------------------------------------------------------------------
# argus: logging
# --------------------------------------------------------------------------------------

# argus models and callbacks log through loggers named "argus.<...>" (Model.logger included).
ARGUS_LOGGER_PREFIX = "argus."


def is_argus_record(record: logging.LogRecord) -> bool:
    return record.name.startswith(ARGUS_LOGGER_PREFIX)


def console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers argus gave a model's logger that print to the console: plain
    StreamHandlers (argus's LoggingToFile adds FileHandlers, a StreamHandler subclass)."""
    return [handler for handler in logger.handlers if type(handler) is logging.StreamHandler]


# --------------------------------------------------------------------------------------
# argus: the model
# --------------------------------------------------------------------------------------


def check_predict_ready(model) -> None:
    """argus's own check before `predict` (a prediction transform and a network exist)."""
    model._check_predict_ready()


def fit(
    model, train_loader, val_loader, start_epoch: int, end_epoch: int, metrics, callbacks
) -> None:
    """argus `Model.fit` starting at `start_epoch` and without its epoch -1 validation pass
    (it changes nothing but the log and costs a full validation): the same engines, metrics,
    default logging and per-epoch validation that `Model.fit` wires, built here."""
    from argus.callbacks import attach_callbacks, on_epoch_complete
    from argus.callbacks.logging import default_logging
    from argus.engine import Engine, State
    from argus.metrics.loss import Loss
    from argus.metrics.metric import attach_metrics

    phase_states: dict = {}
    train_engine = Engine(model.train_step, phase_states=phase_states)
    attach_metrics(train_engine, [Loss()])
    default_logging.attach(train_engine)
    val_engine = Engine(model.val_step, phase_states=phase_states)
    attach_metrics(val_engine, [Loss(), *metrics])
    default_logging.attach(val_engine)

    @on_epoch_complete
    def validate(train_state: State) -> None:
        val_state = val_engine.run(val_loader, train_state.epoch, train_state.epoch + 1)
        train_state.metrics.update(val_state.metrics)

    validate.attach(train_engine)
    attach_callbacks(train_engine, callbacks)
    train_engine.run(train_loader, start_epoch, end_epoch)


# --------------------------------------------------------------------------------------
# argus: the bookkeeping of its callbacks, saved and restored across a resume
# --------------------------------------------------------------------------------------


def callback_state(checkpoint, scheduler) -> dict[str, Any]:
    """What MonitorCheckpoint (None: not on this process) and the learning-rate callback
    (ReduceLROnPlateau, CosineAnnealingWarmRestarts) hold between epochs in argus's attributes,
    as plain data: the checkpoint files kept, the torch scheduler inside argus's callback."""
    return {
        "checkpoint_files": [str(p) for p in checkpoint.saved_files_paths] if checkpoint else [],
        "scheduler": scheduler.scheduler.state_dict(),
    }


def restore_callback_state(saved: dict[str, Any], checkpoint, scheduler) -> None:
    """Put `callback_state`'s record back into freshly started callbacks."""
    if checkpoint is not None:
        checkpoint.saved_files_paths = list(saved["checkpoint_files"])
    scheduler.scheduler.load_state_dict(saved["scheduler"])
    # A scheduler built at the start sets the optimizer's rates to its first epoch's (warm
    # restarts do); the restored state's last rates are the ones the next epoch runs at.
    torch_scheduler = scheduler.scheduler
    for group, lr in zip(torch_scheduler.optimizer.param_groups, torch_scheduler.get_last_lr()):
        group["lr"] = lr
