"""Logging a :class:`Report` to a W&B run: figures as images, tables as ``wandb.Table``, curves as line plots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .files import figure_png
from .panels import Report


def _cell(value: Any) -> Any:
    import wandb

    if isinstance(value, np.ndarray):
        return wandb.Image(value) if value.ndim >= 2 else value.astype(float).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def wandb_table(frame: pd.DataFrame):
    """A ``wandb.Table`` of a frame: image arrays become ``wandb.Image``, vectors lists (projector input)."""
    import wandb

    return wandb.Table(columns=[str(name) for name in frame.columns],
                       data=[[_cell(value) for value in row] for row in frame.itertuples(index=False)])


def image_caption(report: Report, name: str) -> str:
    """The W&B caption of picture ``name``: its panel's title and caption, or the name when it has none."""
    caption = report.caption(name)
    return f"{caption.title}. {caption.text}" if caption is not None else name


def log_report_to_wandb(run, report: Report, *, prefix: str, extra: Mapping[str, Any] | None = None) -> None:
    """Log every item of ``report`` under ``<prefix>/<name>`` in one ``run.log`` call (plus ``extra`` keys,
    e.g. the trainer step); pictures carry their caption, line plots their title."""
    import io

    import wandb

    data: dict[str, Any] = dict(extra or {})
    for name, figure in report.figures.items():
        image = figure if isinstance(figure, Image.Image) else Image.open(io.BytesIO(figure_png(figure)))
        data[f"{prefix}/{name}"] = wandb.Image(image, caption=image_caption(report, name))
    for name, frame in report.tables.items():
        data[f"{prefix}/{name}"] = wandb_table(frame)
    for name, curve in report.curves.items():
        table = wandb_table(curve.frame)
        caption = report.caption(name)
        data[f"{prefix}/{name}"] = wandb.plot.line(table, curve.x, curve.y,
                                                   title=caption.title if caption is not None else curve.title)
    run.log(data)
