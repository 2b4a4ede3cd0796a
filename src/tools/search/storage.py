"""Where a study lives: an Optuna storage (a database) and the study in it.

By default a SQLite file per study under `<data>/search/`; any database URL Optuna takes
otherwise (`--storage`, or the FREESOUND_SEARCH_STORAGE environment variable), e.g.
`postgresql://user@host/db` for a team: every process and machine on one storage draws its own
trials from the same study (Optuna numbers them in the database, so none is run twice). A
password in a URL is shown masked (`***`) wherever this project prints or records the URL;
libpq reads a PostgreSQL password from PGPASSWORD, which keeps it out of the URL altogether.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from src.config import ConfigError, Paths
from src.experiments import settings_that_shape_the_run
from src.utils import writer_lock

STORAGE_ENV = "FREESOUND_SEARCH_STORAGE"
# A process that dies without a word (SIGKILL, a lost machine) leaves its trial RUNNING; the
# next process to start a trial marks it FAIL once its heartbeat is this many seconds old.
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 180
SQLITE_TIMEOUT = 60  # seconds a process waits for another's write on one SQLite file

log = logging.getLogger(__name__)


def default_storage(paths: Paths, study: str) -> str:
    return f"sqlite:///{search_dir(paths) / f'{study}.db'}"


def search_dir(paths: Paths) -> Path:
    return paths.save_dir / "search"


def masked(url: str) -> str:
    """The URL with its password (if any) as ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<a storage URL that does not parse>"


def scrub(text: str, url: str) -> str:
    """`text` (e.g. a database error) with the URL's password masked wherever it appears."""
    try:
        password = make_url(url).password
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return text.replace(url, masked(url))
    return text.replace(str(password), "***") if password else text


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The storage at `url` (its tables created when new); one ConfigError with the masked URL
    when it cannot be opened."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ConfigError(
            "--storage: not a database URL (e.g. sqlite:///path/study.db, "
            "postgresql://user@host/db)"
        ) from None
    engine_kwargs: dict[str, Any] = {}
    creating = nullcontext()
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            database = Path(parsed.database)
            database.parent.mkdir(parents=True, exist_ok=True)
            # Optuna creates the tables of a new file without a transaction around them: two
            # processes opening one new file at once would both create them ("table studies
            # already exists"). One at a time; a file lock is what SQLite's users share.
            lock = database.with_name(f"{database.name}.lock")
            creating = writer_lock(lock, f"the study database {database}", wait=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    try:
        with creating:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        reason = scrub(str(error).splitlines()[0] if str(error) else type(error).__name__, url)
        raise ConfigError(f"--storage {masked(url)}: cannot open it ({reason})") from None


def _comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe without its base's settings that act on nothing in a trial
    (src.experiments.settings_that_shape_the_run): a study continues across a change of their
    defaults, as a run resumes across it."""
    base = recipe.get("base")
    if not isinstance(base, dict):
        return recipe
    return {**recipe, "base": settings_that_shape_the_run(base)}


def open_study(
    storage: optuna.storages.RDBStorage,
    name: str,
    recipe: dict[str, Any],
    shown: str,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """The study `name` in `storage`, created when new. A study records what it searches
    (`recipe`: the experiment, the space, the scale, the folds, the seed); a rerun or another
    process must search the same, or its trials would not be comparable."""
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        # constant_liar: processes sharing a study draw away from each other's running trials
        sampler=optuna.samplers.TPESampler(constant_liar=True),
        pruner=pruner,
    )
    recorded = study.user_attrs.get("recipe")
    wanted = _comparable(_plain(recipe))
    if recorded is None:
        study.set_user_attr("recipe", wanted)
    elif (recorded := _comparable(recorded)) != wanted:
        changed = sorted(
            k for k in wanted.keys() | recorded.keys() if recorded.get(k) != wanted.get(k)
        )
        raise ConfigError(
            f"study {name!r} ({shown}) searches another {', '.join(changed)} than this command "
            f"asks for ({', '.join(f'{k} {recorded.get(k)!r}' for k in changed)}); give the "
            "same settings to continue it, or another --study"
        )
    return study


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))
