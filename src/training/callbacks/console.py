"""What argus prints to the console during a fold."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from src.library_internals import console_handlers


@contextmanager
def epoch_lines_to_log_only(model, verbose: bool) -> Iterator[None]:
    """argus prints every epoch's metrics and checkpoint moves to stdout; unless `verbose`,
    they go to the fold's log.txt only (LoggingToFile adds its own handler to that logger)."""
    consoles = console_handlers(model.logger)
    levels = [h.level for h in consoles]
    for handler in consoles:
        handler.addFilter(_not_an_interrupt)
        if not verbose:
            handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in zip(consoles, levels):
            handler.setLevel(level)
            handler.removeFilter(_not_an_interrupt)


def _not_an_interrupt(record: logging.LogRecord) -> bool:
    """argus logs the exception that stops a run with its traceback; for Ctrl-C the script's
    one line `interrupted` says it all on the console (log.txt keeps the record)."""
    return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))
