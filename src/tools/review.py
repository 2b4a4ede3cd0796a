"""Reviewing the curated clips of a review list by hand, in the terminal.

Two parts, kept apart so the logic can be tested with scripted answers:

* `ReviewSession`: the decisions. Every answer is saved at once (atomically) to two files:
  the review state (`review_state.json`: every decision, keep included, so a later session
  resumes where this one stopped) and the correction file (`corrections.json`: only the
  remove and relabel entries, in the original format). The correction file is the one found
  at the start, updated by the decisions: entries of clips that were not reviewed stay, and a
  "keep" deletes a clip's entry (its original labels are right).
* `run_review`: the terminal dialogue, with `ask` and `say` functions (input/print by
  default) and an optional audio player.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from src.config import ConfigError, Vocabulary
from src.data.corrections import REMOVE, Corrections, load_corrections, save_corrections
from src.tools.corrections import review_predictions
from src.utils import write_json_atomic

log = logging.getLogger(__name__)

KEEP, RELABEL = "keep", "relabel"
DECISIONS = (KEEP, RELABEL, REMOVE)
STATE_FILE = "review_state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class ReviewItem:
    """One row of the review list."""

    fname: str
    labels: str
    score: float
    predictions: list[tuple[str, float]] = field(default_factory=list)
    spectrogram: Path | None = None

    @classmethod
    def from_list(cls, table: pd.DataFrame, list_dir: Path) -> list[ReviewItem]:
        items = []
        for row in table.to_dict("records"):
            picture = str(row.get("spectrogram") or "")
            items.append(
                cls(
                    fname=str(row["fname"]),
                    labels=str(row["labels"]),
                    score=float(row["score"]),
                    predictions=review_predictions(row),
                    spectrogram=list_dir / picture if picture else None,
                )
            )
        return items


class ReviewSession:
    """The decisions on a review list, saved after every answer."""

    def __init__(
        self,
        items: Iterable[ReviewItem],
        vocabulary: Vocabulary,
        out_path: str | os.PathLike,
        state_path: str | os.PathLike,
        known_fnames: Iterable[str] | None = None,
    ) -> None:
        self.items = list(items)
        self.vocabulary = vocabulary
        self.out_path = Path(out_path)
        self.state_path = Path(state_path)
        self.known = None if known_fnames is None else set(known_fnames)
        strangers = [
            i.fname for i in self.items if self.known is not None and i.fname not in self.known
        ]
        if strangers:
            raise ConfigError(
                f"the review list names {len(strangers)} clips that are not in the dataset: "
                f"{strangers[:5]}"
            )
        self.base: Corrections = (
            load_corrections(self.out_path, vocabulary, self.known)
            if self.out_path.is_file()
            else {}
        )
        self.decisions = read_state(self.state_path, vocabulary)

    def pending(self) -> list[ReviewItem]:
        """The clips of the list without a decision yet (skipped ones come back)."""
        return [item for item in self.items if item.fname not in self.decisions]

    def existing(self, fname: str) -> str | None:
        """The clip's current entry in the correction file, if any."""
        return self.corrections().get(fname)

    def decide(self, fname: str, decision: str, labels: str | None = None) -> None:
        """Record one answer and save both files."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        if self.known is not None and fname not in self.known:
            raise ConfigError(f"{fname}: not a clip of the dataset")
        entry = {"decision": decision}
        if decision == RELABEL:
            unknown = self.vocabulary.unknown(labels or "")
            if not labels or not Vocabulary.split(labels) or unknown:
                raise ConfigError(f"{fname}: bad labels {labels!r} (unknown: {unknown})")
            entry["labels"] = ",".join(Vocabulary.split(labels))
        self.decisions[fname] = entry
        self.save()

    def corrections(self) -> Corrections:
        """The correction file's entries at the start, updated by every decision."""
        corrections = dict(self.base)
        for fname, entry in self.decisions.items():
            if entry["decision"] == KEEP:
                corrections.pop(fname, None)
            elif entry["decision"] == REMOVE:
                corrections[fname] = REMOVE
            else:
                corrections[fname] = entry["labels"]
        return corrections

    def save(self) -> None:
        # The state first: after a crash between the two writes, the next answer (or the end
        # of the next session) rewrites the correction file from it.
        write_json_atomic(
            {"version": STATE_VERSION, "decisions": dict(sorted(self.decisions.items()))},
            self.state_path,
        )
        save_corrections(self.corrections(), self.out_path)

    def counts(self) -> dict[str, int]:
        decided = [
            self.decisions[i.fname]["decision"] for i in self.items if i.fname in self.decisions
        ]
        return {d: decided.count(d) for d in DECISIONS} | {"pending": len(self.pending())}


def read_state(path: Path, vocabulary: Vocabulary) -> dict[str, dict[str, str]]:
    """The decisions of earlier sessions ({} when there is no state file yet)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    decisions = data.get("decisions") if isinstance(data, Mapping) else None
    if not isinstance(decisions, Mapping):
        raise ConfigError(f"{path}: not a review state (no 'decisions' object)")
    problems = [
        fname
        for fname, entry in decisions.items()
        if not isinstance(entry, Mapping)
        or entry.get("decision") not in DECISIONS
        or (
            entry["decision"] == RELABEL
            and (not isinstance(entry.get("labels"), str) or vocabulary.unknown(entry["labels"]))
        )
    ]
    if problems:
        raise ConfigError(f"{path}: bad decisions for {len(problems)} clips: {problems[:5]}")
    return {str(fname): dict(entry) for fname, entry in decisions.items()}


# --------------------------------------------------------------------------------------
# The terminal dialogue
# --------------------------------------------------------------------------------------

PROMPT = "[k]eep / [r]eplace labels / [d]elete (remove) / [s]kip / [q]uit"
LABEL_HELP = (
    "class names separated by commas, or numbers of the predictions above (e.g. 1,3); "
    "'?' lists the classes, an empty line goes back"
)

Ask = Callable[[str], str]
Say = Callable[[str], None]
Player = Callable[[str], None]


def parse_labels(
    text: str, vocabulary: Vocabulary, predictions: list[tuple[str, float]]
) -> tuple[str | None, str | None]:
    """(labels, None) for a valid answer, else (None, a message explaining what is wrong).

    Accepts class names (case-insensitive) and numbers of the shown predictions."""
    lower = {c.lower(): c for c in vocabulary.classes}
    chosen, problems = [], []
    for token in Vocabulary.split(text):
        if token.isdigit() and 1 <= int(token) <= len(predictions):
            name = predictions[int(token) - 1][0]
        else:
            name = lower.get(token.lower())
        if name is None:
            close = difflib.get_close_matches(token, vocabulary.classes, n=3, cutoff=0.5)
            close += [c for c in vocabulary.classes if token.lower() in c.lower()][:3]
            hint = f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
            problems.append(f"unknown label {token!r}{hint}")
        elif name not in chosen:
            chosen.append(name)
    if problems:
        return None, "; ".join(problems)
    if not chosen:
        return None, "no labels given"
    return ",".join(chosen), None


def describe(item: ReviewItem, position: str, existing: str | None) -> list[str]:
    lines = [f"{position} {item.fname}   score {item.score:.3f}", f"  labels:      {item.labels}"]
    if existing is not None:
        lines.append(f"  in the file: {existing}")
    ranked = "  ".join(f"{i}. {c} {p:.2f}" for i, (c, p) in enumerate(item.predictions, 1))
    lines.append(f"  predicted:   {ranked}")
    if item.spectrogram is not None:
        lines.append(f"  spectrogram: {item.spectrogram}")
    return lines


def run_review(
    session: ReviewSession,
    ask: Ask = input,
    say: Say = print,
    play: Player | None = None,
    audio_dir: Path | None = None,
) -> bool:
    """Walk the pending clips; True when the list is finished, False when the user quit
    (or the input ended). Every answer is saved before the next question."""
    pending = session.pending()
    total = len(session.items)
    done = total - len(pending)
    say(f"{len(pending)} of {total} clips to review; answers go to {session.out_path}")
    prompt = PROMPT + (" / [p]lay again" if play else "") + ": "
    try:
        for number, item in enumerate(pending, done + 1):
            say("")
            for line in describe(item, f"[{number}/{total}]", session.existing(item.fname)):
                say(line)
            if play and audio_dir is not None:
                play(str(audio_dir / item.fname))
            if not _ask_decision(session, item, ask, say, prompt, play, audio_dir):
                return False
        return True
    except EOFError:
        say("\ninput ended: stopping; answers so far are saved")
        return False
    finally:
        session.save()


def _ask_decision(session, item, ask, say, prompt, play, audio_dir) -> bool:
    """Ask until one answer is given for `item`; False when the user quits."""
    while True:
        answer = ask(prompt).strip().lower()
        if answer in ("k", "keep"):
            session.decide(item.fname, KEEP)
            return True
        if answer in ("d", "delete", "remove"):
            session.decide(item.fname, REMOVE)
            return True
        if answer in ("s", "skip"):
            return True
        if answer in ("q", "quit"):
            say("stopped; answers so far are saved (run the same command again to resume)")
            return False
        if answer in ("p", "play") and play and audio_dir is not None:
            play(str(audio_dir / item.fname))
            continue
        if answer in ("r", "replace"):
            labels = _ask_labels(session.vocabulary, item, ask, say)
            if labels is not None:
                session.decide(item.fname, RELABEL, labels)
                return True
            continue
        say(f"please answer one of: {prompt.strip()}")


def _ask_labels(vocabulary, item, ask, say) -> str | None:
    say(f"  new labels: {LABEL_HELP}")
    while True:
        text = ask("  labels> ").strip()
        if not text:
            return None
        if text == "?":
            say("  " + ", ".join(vocabulary.classes))
            continue
        labels, problem = parse_labels(text, vocabulary, item.predictions)
        if labels is not None:
            return labels
        say(f"  {problem}; try again")


def make_player(say: Say = print) -> Player | None:
    """A function that plays an audio file with sounddevice, or None (after a hint) when
    sounddevice or its PortAudio library is missing."""
    try:
        import sounddevice
        import soundfile
    except (ImportError, OSError) as error:  # OSError: PortAudio library not found
        say(
            f"--play: audio playback is not available ({error}); install the PortAudio "
            "library and `pip install sounddevice` to listen. Continuing without sound."
        )
        return None

    def play(path: str) -> None:
        try:
            audio, rate = soundfile.read(path, dtype="float32")
            sounddevice.stop()
            sounddevice.play(audio, rate)  # returns at once; the next clip stops it
        except Exception as error:  # a broken device must not end the review
            say(f"  (cannot play {path}: {error})")

    return play
