"""Experiments from a file and from the command line, on top of the registry.

    train_folds.py --experiment my_exp.json --set max_epochs=30 --set model.params.base_size=32

An experiment file is JSON naming a registered experiment as its `base` and overriding any of
its settings (nested objects are merged key by key); its `name` defaults to the file's stem and
names the experiment's folder:

    {"base": "corr_noisy_007", "name": "my_exp", "max_epochs": 30,
     "model": {"params": {"base_size": 32}},
     "datasets": {"noisy": 0.0, "corrected": 0.0, "curated": 1.0}}

`--set KEY.SUB=VALUE` overrides one setting after the file; VALUE is read as JSON when it
parses (30, 0.5, true, null, [1, 2], "text") and as text otherwise; for a list setting,
`a,b,c` is the list ["a", "b", "c"] (stacking inputs). Every key must exist in the base and
every value must have the type of the value it replaces (an integer may replace a float; any
value may replace null, and null any value): errors name the key.

The resolved configuration records `base` and `overrides` and lands in params.json, from which
prediction, tagging and the kernels read a trained experiment.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.config import ConfigError
from src.experiments import (
    DEFAULT_SCALE,
    EXPERIMENTS,
    Config,
    check_datasets,
    check_resize_ratio,
    merge,
    resolve,
)

FILE_KEYS = ("base", "name")  # keys of an experiment file that are not settings
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Settings that describe an experiment rather than tune it: never overridden.
FIXED = ("kind", "name", "scale", "base", "overrides")


def is_experiment_file(spec: str) -> bool:
    return spec.endswith(".json") or Path(spec).is_file()


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_value(key: str, old: Any, new: Any, source: str) -> Any:
    """`new` when it may replace `old`, else a ConfigError naming the key."""
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        ok = isinstance(old, bool) and isinstance(new, bool)
    elif isinstance(old, float) and isinstance(new, int):
        return float(new)
    else:
        ok = isinstance(new, type(old)) or (isinstance(old, int) and isinstance(new, int))
    if not ok:
        raise ConfigError(
            f"{source}: setting {key!r} takes {_type_name(old)} (like {json.dumps(old)}), "
            f"got {_type_name(new)} {json.dumps(new)}"
        )
    return new


def apply_overrides(config: Config, overrides: dict, source: str, prefix: str = "") -> Config:
    """A copy of `config` with `overrides` merged in: nested dicts key by key, every key known,
    every value of the replaced value's type."""
    merged = copy.deepcopy(config)
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if not prefix and key in FIXED:
            raise ConfigError(f"{source}: setting {path!r} cannot be overridden")
        if key not in merged:
            known = ", ".join(sorted(merged))
            raise ConfigError(f"{source}: unknown setting {path!r} (known here: {known})")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = apply_overrides(merged[key], value, source, f"{path}.")
        else:
            merged[key] = copy.deepcopy(check_value(path, merged[key], value, source))
    return merged


def parse_set(text: str, config: Config) -> dict:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}} with the value read as described above."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set takes KEY.SUB=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    # The current value's type decides how plain text is read.
    current: Any = config
    for part in key.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if isinstance(current, list) and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(current, str) and not isinstance(value, str):
        value = raw  # e.g. --set model.name=123 stays text
    return nest_setting(key, value)


def nest_setting(key: str, value: Any) -> dict:
    """`a.b.c`, value -> {"a": {"b": {"c": value}}}: a dotted setting as overrides."""
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def read_experiment_file(path: Path) -> tuple[str, str, dict]:
    """(name, base, overrides) of an experiment file."""
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file holds a JSON object")
    base = data.get("base")
    if base not in EXPERIMENTS:
        raise ConfigError(
            f"{path}: 'base' must name a registered experiment ({', '.join(EXPERIMENTS)}), "
            f"got {base!r}"
        )
    name = data.get("name", path.stem)
    overrides = {k: v for k, v in data.items() if k not in FILE_KEYS}
    return str(name), base, overrides


def load_experiment(
    spec: str,
    scale: str = DEFAULT_SCALE,
    sets: Sequence[str] = (),
    changes: Config | None = None,
    name: str | None = None,
    changes_from: str = "changes",
) -> Config:
    """The resolved configuration of a registered name or an experiment file at a scale
    (`src.experiments.SCALES`: full, cpu or smoke), then the file's overrides, then each
    `--set`, then `changes` (nested overrides, as a search trial's settings; errors name
    `changes_from`), named `name` when given."""
    if is_experiment_file(spec):
        path = Path(spec)
        file_name, base, overrides = read_experiment_file(path)
        source = str(path)
    else:
        file_name, base, overrides, source = spec, spec, {}, "--experiment"
    config = resolve(base, scale)
    config = apply_overrides(config, overrides, source)
    all_overrides = copy.deepcopy(overrides)
    for text in sets:
        change = parse_set(text, config)
        config = apply_overrides(config, change, f"--set {text}")
        all_overrides = merge(all_overrides, change)
    if changes:
        config = apply_overrides(config, changes, changes_from)
        all_overrides = merge(all_overrides, changes)
    name = name or file_name
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"{source}: experiment name {name!r} must be letters, digits, '_', '-' or '.'"
        )
    check_resize_ratio(config)
    check_datasets(config)
    config["name"] = name
    if name != base or all_overrides:
        config["base"] = base
        config["overrides"] = all_overrides
    return config


def experiment_name(spec: str) -> str:
    """The name a registered experiment or an experiment file trains under: what its folder
    in experiments/ is called (stacking_predict.py --experiments takes either)."""
    if is_experiment_file(spec):
        return read_experiment_file(Path(spec))[0]
    return spec


def blend_members(specs: Sequence[str]) -> list[str]:
    """First-level experiment names from names and experiment files (blend_predict.py
    --experiments, select_ensemble.py --experiments): a stacking experiment's file stands for
    its first-level inputs (as select_ensemble.py --write makes one), any other file for the
    experiment it trains. Duplicates are dropped, the first kept."""
    names: list[str] = []
    for spec in specs:
        if not is_experiment_file(spec):
            names.append(spec)
            continue
        config = load_experiment(spec)
        names.extend(config["inputs"] if config["kind"] == "stacking" else [config["name"]])
    return list(dict.fromkeys(names))
