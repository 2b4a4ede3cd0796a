"""A search space: which settings a search draws, and from what.

A space file is a JSON object whose keys name settings as `--set` names them (dotted, e.g.
`optimizer.params.lr`) and whose values say how a trial draws them:

    {"log": [lo, hi]}       a float, log-uniform between lo and hi
    {"uniform": [lo, hi]}   a float, uniform between lo and hi
    {"int": [lo, hi]}       an integer from lo to hi, both included
    [a, b, c]               one of these choices (numbers, text, true/false or null)
    {"one_minus": [k, ...]} not drawn: 1 minus the drawn values of the settings named (shares
                            that must sum to 1, as the sampling shares of the training sets)

A space is checked against the experiment it searches before any trial: every key must be one
of its settings and every value must be of the type that setting takes (the registry's own
checks, `src.experiment_files.apply_overrides`, on the lowest and highest values and on every
choice); errors name the file and the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import ConfigError
from src.experiment_files import load_experiment, nest_setting
from src.experiments import Config, merge

RANGES = ("log", "uniform", "int")
DERIVED = "one_minus"
SHAPES = (
    '{"log": [lo, hi]}, {"uniform": [lo, hi]}, {"int": [lo, hi]}, a list of choices, or '
    '{"one_minus": [key, ...]}'
)


@dataclass(frozen=True)
class Dimension:
    """One setting of a space: a range (`kind` log, uniform or int, `low` to `high`), a list
    of `choices` (kind 'choice'), or 1 minus other settings (kind 'one_minus', `of`)."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()
    of: tuple[str, ...] = ()

    @property
    def drawn(self) -> bool:
        return self.kind != DERIVED

    def as_json(self) -> Any:
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == DERIVED:
            return {DERIVED: list(self.of)}
        return {self.kind: [self.low, self.high]}


Space = tuple[Dimension, ...]


def read_space(path: Path) -> Space:
    """The dimensions of a space file, in the file's order; one ConfigError naming the file
    (and the key) for anything malformed."""
    if not path.is_file():
        raise ConfigError(f"{path}: search space file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    return parse_space(data, str(path))


def parse_space(data: Any, source: str) -> Space:
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"{source}: a search space is a JSON object of settings, e.g. "
            '{"optimizer.params.lr": {"log": [1e-4, 3e-3]}}'
        )
    space = tuple(_dimension(key, value, source) for key, value in data.items())
    drawn = {d.key: d for d in space if d.drawn}
    for dimension in space:
        if dimension.drawn:
            continue
        for key in dimension.of:
            if key not in drawn or drawn[key].kind == "choice":
                raise ConfigError(
                    f"{source}: {dimension.key!r}: one_minus names {key!r}, which is not a "
                    "range of this space"
                )
        lowest = 1 - sum(drawn[k].high for k in dimension.of)
        if lowest < 0:
            raise ConfigError(
                f"{source}: {dimension.key!r} = 1 - ({' + '.join(dimension.of)}) falls to "
                f"{lowest:g} at their highest values; lower their bounds"
            )
    return space


def _dimension(key: str, value: Any, source: str) -> Dimension:
    where = f"{source}: {key!r}"
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{where}: name a setting as --set does, e.g. model.params.dropout")
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: an empty list of choices")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
            raise ConfigError(f"{where}: choices are numbers, text, true/false or null")
        if len({json.dumps(v) for v in value}) < len(value):
            raise ConfigError(f"{where}: a choice is listed twice")
        return Dimension(key, "choice", choices=tuple(value))
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"{where}: takes one of {SHAPES}; got {json.dumps(value)}")
    ((kind, bounds),) = value.items()
    if kind == DERIVED:
        keys = [bounds] if isinstance(bounds, str) else bounds
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ConfigError(
                f"{where}: one_minus takes the keys of the shares, e.g. "
                '{"one_minus": ["datasets.noisy", "datasets.corrected"]}'
            )
        return Dimension(key, DERIVED, of=tuple(keys))
    if kind not in RANGES:
        raise ConfigError(f"{where}: unknown kind {kind!r}; takes one of {SHAPES}")
    numbers = (int,) if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, numbers) and not isinstance(b, bool) for b in bounds)
    ):
        what = "two integers" if kind == "int" else "two numbers"
        raise ConfigError(f"{where}: {kind} takes [lo, hi], {what}; got {json.dumps(bounds)}")
    low, high = bounds
    if not low < high:
        raise ConfigError(f"{where}: the low bound must be below the high one, got {bounds}")
    if kind == "log" and low <= 0:
        raise ConfigError(f"{where}: a log range takes bounds above 0, got {bounds}")
    if kind != "int":
        low, high = float(low), float(high)
    return Dimension(key, kind, low=low, high=high)


def settings(space: Space, drawn: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of a trial, dotted key -> value: the drawn ones and those derived."""
    values = {d.key: drawn[d.key] for d in space if d.drawn}
    for dimension in space:
        if not dimension.drawn:
            values[dimension.key] = round(1.0 - sum(values[k] for k in dimension.of), 12)
    return values


def as_overrides(values: Mapping[str, Any]) -> Config:
    """Dotted settings as the nested overrides an experiment file holds."""
    overrides: Config = {}
    for key, value in values.items():
        overrides = merge(overrides, nest_setting(key, value))
    return overrides


def draw(space: Space, suggest: Callable[[Dimension], Any]) -> dict[str, Any]:
    """A trial's settings, each drawn dimension by `suggest` (the search library's draw)."""
    return settings(space, {d.key: suggest(d) for d in space if d.drawn})


def check_space(space: Space, spec: str, scale: str, source: str) -> None:
    """The experiment `spec` at `scale` with the space's lowest values, its highest values and
    each choice in turn, through the registry's checks: a ConfigError names the key."""
    lowest = {d.key: d.low if d.kind != "choice" else d.choices[0] for d in space if d.drawn}
    highest = {d.key: d.high if d.kind != "choice" else d.choices[0] for d in space if d.drawn}
    trials = [lowest, highest]
    for dimension in space:
        for choice in dimension.choices[1:]:
            trials.append({**lowest, dimension.key: choice})
    for values in trials:
        overrides = as_overrides(settings(space, values))
        load_experiment(spec, scale, changes=overrides, changes_from=source)


def space_json(space: Space) -> dict[str, Any]:
    """The space as its file writes it (what a study records, to compare on a rerun)."""
    return {d.key: d.as_json() for d in space}
