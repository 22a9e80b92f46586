"""Where a run writes its files, and writing them so that no reader sees half a file and no run overwrites another's."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def run_log_dir(trainer) -> Path:
    """The run's own log folder, created if needed: the first logger's ``log_dir`` (CSV, TensorBoard: e.g.
    ``logs/lightning_logs/version_3``), else ``<save_dir>/<name>/<version>`` (W&B: ``logs/<project>/<run id>``),
    else the trainer's ``default_root_dir``.

    A broadcast under DDP (rank 0's folder): call this on every process, never behind a rank check.
    """
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        folder = trainer.default_root_dir
    elif getattr(logger, "log_dir", None):
        folder = logger.log_dir
    else:
        if logger.version is None and trainer.is_global_zero:
            logger.experiment  # noqa: B018  (starts the run, e.g. W&B's, which names the version)
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        folder = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name), version)
    log_dir = Path(trainer.strategy.broadcast(str(folder))).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir


def new_temp_file(folder: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new, empty file ``<folder>/<prefix><random><suffix>`` and return its open descriptor and path.

    Unlike ``tempfile.mkstemp`` (always ``0600``) the file gets the mode ``open(path, "w")`` would give (``0666``
    less the umask, or the folder's default ACL), so a file later renamed or linked into place is as readable
    as any other file the user writes.
    """
    for _ in range(100):
        path = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def write_new_file(path: Path, data: bytes) -> Path:
    """Write ``data`` atomically to ``path``, or to ``<stem>-1<suffix>``, ``-2`` ... when ``path`` exists.

    The bytes go to a temporary file in the same folder first and are then linked to the first free name, so
    a reader never sees a partial file and an existing file, also one written concurrently, is never replaced.
    The file gets the usual mode of a new file (``0666`` less the umask; see :func:`new_temp_file`).

    Returns:
        The path written.
    """
    handle, temp = new_temp_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        for attempt in range(10_000):
            target = path if attempt == 0 else path.with_name(f"{path.stem}-{attempt}{path.suffix}")
            try:
                os.link(temp, target)  # fails if target exists: never overwrites
                return target
            except FileExistsError:
                continue
        raise FileExistsError(f"no free file name for {path} after 10000 tries")
    finally:
        os.unlink(temp)


def companion_path(predictions: Path, suffix: str) -> Path:
    """``predictions_<suffix>.csv`` beside ``predictions.csv`` (``predictions-1_<suffix>.csv`` beside
    ``predictions-1.csv``)."""
    return predictions.with_name(f"{predictions.stem}_{suffix}.csv")
