"""The demo's window: the live spectrogram and a bar chart of the top classes.

One image and one set of bars are created once and updated in place every second (`set_data`,
`set_width`): the original called `imshow` again for each update, adding an image per second
to the axes, so memory grew for as long as the demo ran (docs/original.md, quirk "Demo window").
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.config import AUDIO, AudioConfig, ConfigError
from src.tools.live import LiveUpdate

FIGURE_SIZE = (14, 7)  # inches, as the original
MIN_BARS = 10


def require_display() -> None:
    """Raise a ConfigError with a hint when matplotlib cannot open a window here."""
    hint = (
        "run with --headless to print the tags only (or --screenshot PATH to render the window "
        "to a file); in Docker, `make run-demo` passes the X11 display"
    )
    on_linux = sys.platform.startswith("linux")
    if on_linux and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError(f"no display to show the demo window (DISPLAY is not set): {hint}")
    import matplotlib
    from matplotlib.backends import BackendFilter, backend_registry

    backend = matplotlib.get_backend().lower()
    if backend in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
        raise ConfigError(
            f"matplotlib's backend {backend!r} cannot open a window (install a GUI toolkit, "
            f"e.g. python3-tk, or set MPLBACKEND=TkAgg): {hint}"
        )


class LiveView:
    """A 14 x 7 in figure: the window the model sees (left) and the top classes (right)."""

    def __init__(
        self,
        classes: Sequence[str],
        window_frames: int,
        bars: int = MIN_BARS,
        config: AudioConfig = AUDIO,
        title: str = "Mel-spectrogram",
    ) -> None:
        import matplotlib.pyplot as plt

        self.classes = list(classes)
        self.n_bars = min(len(self.classes), bars)
        self.figure, (self.spectrogram_axes, self.bar_axes) = plt.subplots(
            1, 2, figsize=FIGURE_SIZE, gridspec_kw={"width_ratios": [2.2, 1]}, layout="constrained"
        )
        self.figure.suptitle(title)
        seconds = window_frames * config.hop_length / config.sampling_rate
        self.image = self.spectrogram_axes.imshow(
            np.zeros((config.n_mels, window_frames), dtype=np.float32),
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(-seconds, 0.0, 0, config.n_mels),
            interpolation="nearest",
        )
        self.spectrogram_axes.set_xlabel("time (s, 0 = now)")
        self.spectrogram_axes.set_ylabel("mel band")
        self.figure.colorbar(self.image, ax=self.spectrogram_axes, label="dB")
        positions = np.arange(self.n_bars)
        self.bars = self.bar_axes.barh(positions, np.zeros(self.n_bars), color="tab:blue")
        self.bar_axes.set_xlim(0.0, 1.0)
        self.bar_axes.set_yticks(positions, [""] * self.n_bars)
        self.bar_axes.invert_yaxis()  # the most probable class on top
        self.bar_axes.set_xlabel("probability")
        self.bar_axes.set_title("top classes")
        self.closed = False
        self.figure.canvas.mpl_connect("close_event", self._on_close)

    def _on_close(self, event) -> None:
        self.closed = True

    def show(self, update: LiveUpdate) -> None:
        window = update.window
        self.image.set_data(window)
        low, high = float(window.min()), float(window.max())
        self.image.set_clim(low, max(high, low + 1.0))
        top = update.top(self.classes, self.n_bars)
        for bar, (_, probability) in zip(self.bars, top):
            bar.set_width(probability)
        self.bar_axes.set_yticks(range(self.n_bars), [name for name, _ in top])
        self.spectrogram_axes.set_title(
            f"{update.index} s (log-mel {update.mel_seconds * 1000:.0f} ms, "
            f"model {update.predict_seconds * 1000:.0f} ms)"
        )
        self.figure.canvas.draw_idle()

    def open(self) -> None:
        import matplotlib.pyplot as plt

        plt.show(block=False)

    def pump(self, seconds: float) -> None:
        """Run the GUI's event loop for `seconds` (instead of sleeping), so the window redraws
        and answers clicks while the demo waits for audio."""
        if self.closed:  # the demo stops at its next update
            time.sleep(seconds)
            return
        self.figure.canvas.flush_events()
        self.figure.canvas.start_event_loop(seconds)

    def wait_closed(self) -> None:
        import matplotlib.pyplot as plt

        if not self.closed:
            plt.show(block=True)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure.savefig(path, dpi=100)
        return path
