"""Where a run writes its files, and writing them so that no reader sees half a file and no run overwrites another's."""

from __future__ import annotations

import os
import tempfile
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


def write_new_file(path: Path, data: bytes) -> Path:
    """Write ``data`` atomically to ``path``, or to ``<stem>-1<suffix>``, ``-2`` ... when ``path`` exists.

    The bytes go to a temporary file in the same folder first and are then linked to the first free name, so
    a reader never sees a partial file and an existing file, also one written concurrently, is never replaced.

    Returns:
        The path written.
    """
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
