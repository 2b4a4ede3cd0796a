"""Helpers shared by the top-level scripts: one-line errors, the default device, --folds.

Light on purpose: a script that only needs these must not load the training stack.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from src.config import N_FOLDS, ConfigError
from src.utils import set_progress, setup_logging

__all__ = [
    "add_amp",
    "add_data_dir",
    "add_device",
    "add_folds",
    "add_force",
    "add_no_progress",
    "add_prediction_arguments",
    "check_output_file",
    "command_line",
    "default_device",
    "fail",
    "names_list",
    "parse_folds",
    "resolve_device",
    "run_main",
    "setup_logging",
    "use_data_dir",
]

DEBUG_ENV = "FREESOUND_DEBUG"  # set to 1: errors reaching run_main keep their traceback
INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)
STOP_SIGNALS = ("SIGTERM", "SIGHUP")  # stop a command as Ctrl-C does (status 128 + signal)

_OS_ERROR_HINTS = {
    errno.EACCES: "check its permissions, or write elsewhere (--out, FREESOUND_DATA_DIR)",
    errno.EPERM: "check its permissions, or write elsewhere (--out, FREESOUND_DATA_DIR)",
    errno.EROFS: "the file system is read-only: write elsewhere (--out, FREESOUND_DATA_DIR)",
    errno.ENOSPC: "free some disk space and run the command again",
    errno.EDQUOT: "free some disk space (quota) and run the command again",
    errno.EISDIR: "a folder is in the way: give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def fail(error: Exception) -> int:
    """Print a one-line error for the user (no traceback) and return the exit status."""
    print(f"error: {error}", file=sys.stderr)
    return 1


def os_error_message(error: OSError) -> str:
    """'<path>: <reason> (<what to do>)' for an error of the operating system."""
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    reason = error.strerror or str(error)
    hint = _OS_ERROR_HINTS.get(error.errno)
    text = f"{' -> '.join(paths)}: {reason}" if paths else reason
    return f"{text} ({hint})" if hint else text


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main process where Ctrl-C raises KeyboardInterrupt, so
    that the same clean-up runs (workers stopped, temporary files removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP raise `Terminated` in this process, unless they are ignored (nohup).
    A forked child that inherits the handler ends as the signal's default would end it."""
    main_pid = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, handler)


def run_main(main: Callable[[], int]) -> NoReturn:
    """Exit with the status of a script's `main`; what escapes it becomes one line on stderr:
    Ctrl-C "interrupted" (status 130), SIGTERM or SIGHUP "terminated" (143, 129), an OS error
    its path and reason, a ConfigError its message (status 1). Every script's `__main__` goes
    through here; the writers are atomic and stores are built under temporary names, so an
    interrupted run leaves nothing half-written. FREESOUND_DEBUG=1 shows the traceback
    instead."""
    stop_on_signals()
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        sys.exit(main())
    try:
        code = main()
    except Terminated as stop:
        print(f"\nterminated ({signal.Signals(stop.signum).name})", file=sys.stderr)
        code = 128 + stop.signum
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = INTERRUPTED
    except BrokenPipeError:
        # `script | head` closed the pipe: stop quietly, as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except OSError as error:
        print(f"error: {os_error_message(error)}", file=sys.stderr)
        code = 1
    except ConfigError as error:
        code = fail(error)
    sys.exit(code)


def check_output_file(path: str | os.PathLike | None, option: str) -> None:
    """An output file named on the command line, checked before the work that fills it: not a
    folder, and a folder that can be written to (or created) above it."""
    if path is None:
        return
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):  # the nearest folder that exists: it gets the new ones
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{option} {path}: cannot write to {parent} (permission denied)")


# --------------------------------------------------------------------------------------
# The options every script shares: one name, one set of choices, one default each
# (tests/test_cli_convention.py runs every script's --help and checks them)
# --------------------------------------------------------------------------------------

DATA_DIR_ENV = "FREESOUND_DATA_DIR"
AMP_CHOICES = ("auto", "off", "fp16", "bf16")
# --amp's default by what a script does: training runs mixed precision where the device runs
# it natively (auto); prediction runs float32 unless asked, whatever the models were trained
# with, so out-of-fold predictions, stacking inputs and kernels are the same on every device.
TRAINING_AMP, PREDICTION_AMP = "auto", "off"
DEVICE_DEFAULT = "auto"


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"the data directory: inputs and every output (default: ${DATA_DIR_ENV}, else data/ "
        "in the repository)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default=DEVICE_DEFAULT,
        metavar="DEVICE",
        help="auto (default: cuda when available, else cpu), cpu, cuda or cuda:N",
    )


def add_amp(parser: argparse.ArgumentParser, default: str = PREDICTION_AMP) -> None:
    what = (
        "auto: bf16 on GPUs that support it, fp16 on older ones, off on the CPU"
        if default == TRAINING_AMP
        else "off: float32, whatever the models were trained with; bf16/fp16 autocast only "
        "on hardware that runs it natively"
    )
    parser.add_argument(
        "--amp",
        choices=AMP_CHOICES,
        default=default,
        help=f"mixed precision (default {default}; {what})",
    )


def add_folds(parser: argparse.ArgumentParser, what: str = "folds to use") -> None:
    parser.add_argument(
        "--folds", metavar="K[,K...]", default=None, help=f"comma-separated {what} (default: all)"
    )


def add_force(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--force", action="store_true", help=what)


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


_data_dir_option: str | None = None  # the --data-dir this process was given, if any


def use_data_dir(args: argparse.Namespace) -> None:
    """--data-dir, when given, is the data directory of this process and of every process it
    starts (as FREESOUND_DATA_DIR); --no-progress, when the script has it, hides every bar of
    the process (spectrogram extraction's too)."""
    global _data_dir_option
    if hasattr(args, "no_progress"):
        set_progress(not args.no_progress)
    data_dir = getattr(args, "data_dir", None)
    if data_dir:
        _data_dir_option = os.path.abspath(os.path.expanduser(data_dir))
        os.environ[DATA_DIR_ENV] = _data_dir_option


def command_line(script: str, *arguments: object) -> str:
    """`python SCRIPT ARGUMENTS` for a message to suggest, quoted for the shell, so that it
    runs as printed: on the data directory of this process when it came from --data-dir."""
    words = " ".join(shlex.quote(str(word)) for word in ("python", script, *arguments))
    if _data_dir_option is None:
        return words
    return f"{DATA_DIR_ENV}={shlex.quote(_data_dir_option)} {words}"


def resolve_device(device: str | None) -> str:
    """'auto' (or None) -> cuda when available, else cpu; a CUDA device on a machine without
    CUDA is one error naming it."""
    import torch  # here: scripts that only need run_main or fail do not load torch

    if device in (None, "", DEVICE_DEFAULT):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device}: not a device (auto, cpu, cuda or cuda:N)") from None
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = "this torch has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ConfigError(f"--device {device}: CUDA is not available on this machine ({build})")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)"
            )
    return device


def default_device() -> str:
    return resolve_device(None)


def parse_folds(text: str | None, n_folds: int = N_FOLDS) -> list[int]:
    if not text:
        return list(range(n_folds))
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--folds takes comma-separated fold numbers, got {text!r}") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad or not folds:
        raise ConfigError(f"folds must be between 0 and {n_folds - 1}, got {text!r}")
    return sorted(set(folds))


def add_prediction_arguments(
    parser: argparse.ArgumentParser, fill_undecodable: bool = False, amp: bool = False
) -> None:
    """--device, --batch-size, --no-progress (and --fill-undecodable, --amp) of the predicting
    scripts."""
    add_device(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="tiles per forward pass")
    if fill_undecodable:
        parser.add_argument(
            "--fill-undecodable",
            action="store_true",
            help="give test clips that cannot be decoded the mean prediction instead of failing",
        )
    if amp:
        add_amp(parser, PREDICTION_AMP)
    add_no_progress(parser)


def names_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the comma-separated experiment lists of the scripts."""
    return [name.strip() for name in text.split(",") if name.strip()]
