"""The offline report: every figure as PNG, every table and curve as CSV, and one self-contained report.html."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ..rundir import write_new_file
from .panels import Caption, Report

HTML_TABLE_ROWS = 50
FAST_PNG = 1
COUNT_METRICS = frozenset({"queries_without_positives", "excluded_pairs"})
"""Metrics that count something besides the ``num_*`` ones; printed as integers."""
METRICS_CAPTION = Caption(
    "Metrics",
    "top-k: fraction of queries whose animal is among the first k matches; mAP: mean average precision (1 when "
    "every photo of the query's animal ranks above all other photos); maxF1: best balance of precision and recall.")


def figure_png(figure: Figure | Image.Image, dpi: int = 100) -> bytes:
    """A matplotlib figure (rendered at ``dpi``) or a PIL image as PNG bytes."""
    buffer = io.BytesIO()
    # fast zlib level: the default level triples the report's encoding time for ~20 % smaller files
    if isinstance(figure, Image.Image):
        figure.save(buffer, format="PNG", compress_level=FAST_PNG)
    else:
        figure.savefig(buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": FAST_PNG})
    return buffer.getvalue()


def file_stem(name: str) -> str:
    """A panel item name (``reliability/global``) as a safe file stem."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _image_data_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _has_vectors(frame: pd.DataFrame) -> bool:
    """Whether a column holds 1-D arrays (embeddings)."""
    return any(isinstance(frame[name].iloc[0], np.ndarray) and frame[name].iloc[0].ndim == 1
               for name in frame.columns) if len(frame) else False


def table_csv(frame: pd.DataFrame) -> bytes:
    """CSV of a table: image columns are left out, vector cells become space-separated numbers."""
    columns = {}
    for name in frame.columns:
        first = frame[name].iloc[0] if len(frame) else None
        if isinstance(first, np.ndarray) and first.ndim >= 2:
            continue
        if isinstance(first, np.ndarray):
            columns[name] = [" ".join(f"{value:.6g}" for value in vector) for vector in frame[name]]
        else:
            columns[name] = frame[name]
    return pd.DataFrame(columns).to_csv(index=False).encode()


def format_metric(name: str, value: float) -> str:
    """A metric's value as the report prints it: a count (``num_*``, :data:`COUNT_METRICS`) as an integer, any
    other value with 4 decimals."""
    leaf = name.rsplit("/", 1)[-1]
    is_count = leaf.startswith("num_") or leaf in COUNT_METRICS
    if is_count and math.isfinite(value) and value == round(value):
        return str(int(value))
    return f"{value:.4f}"


def _heading(name: str, caption: Caption | None) -> str:
    """Title and caption of an item (its name when its panel declared none)."""
    if caption is None:
        return f"<h2>{html.escape(name)}</h2>"
    return f'<h2>{html.escape(caption.title)}</h2><p class="caption">{html.escape(caption.text)}</p>'


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in frame.columns)
    rows = []
    # itertuples keeps each column's type; iterrows would turn the integers of an all-numeric row into floats
    for row in frame.head(HTML_TABLE_ROWS).itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, np.ndarray) and value.ndim >= 2:
                cells.append(f'<td><img src="{_image_data_uri(value)}"></td>')
            elif isinstance(value, float):
                cells.append(f"<td>{value:.3f}</td>")
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report_files(folder: Path, report: Report, *, title: str,
                       metrics: Mapping[str, float] | None = None) -> Path:
    """Write the report into ``folder`` (created; existing files are never overwritten) and return the path of
    its ``report.html``, which embeds every figure (no network or neighbouring file needed to view it) and
    links the PNG and CSV files written beside it. Embedding tables (W&B projector input) are not written."""
    folder.mkdir(parents=True, exist_ok=True)
    sections = [f"<h1>{html.escape(title)}</h1>"]
    if metrics:
        cells = "".join(f"<tr><td>{html.escape(name)}</td><td>{format_metric(name, value)}</td></tr>"
                        for name, value in metrics.items())
        sections.append(f"{_heading('metrics', METRICS_CAPTION)}<table>{cells}</table>")
    # a curve's data (``<figure>_data``) is linked under its figure; other curves get their own section
    curve_files = {name: write_new_file(folder / f"{file_stem(name)}.csv", table_csv(curve.frame))
                   for name, curve in report.curves.items()}
    for name, figure in report.figures.items():
        data = figure_png(figure)
        path = write_new_file(folder / f"{file_stem(name)}.png", data)
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        caption = report.caption(name)
        alt = html.escape(caption.title if caption else name)
        section = f'{_heading(name, caption)}<a href="{path.name}"><img src="{uri}" alt="{alt}"></a>'
        data_file = curve_files.pop(f"{name}_data", None)
        if data_file is not None:
            section += f'<p>Data: <a href="{data_file.name}">{data_file.name}</a></p>'
        sections.append(section)
    for name, path in curve_files.items():
        caption = report.caption(name) or Caption(report.curves[name].title or name, "")
        sections.append(f'{_heading(name, caption)}<p><a href="{path.name}">{path.name}</a></p>')
    for name, frame in report.tables.items():
        if _has_vectors(frame):
            continue  # embedding tables feed the W&B projector; offline they would only fill the disk
        path = write_new_file(folder / f"{file_stem(name)}.csv", table_csv(frame))
        sections.append(f'{_heading(name, report.caption(name))}<p><a href="{path.name}">{path.name}</a> '
                        f"({len(frame)} rows, the first {min(len(frame), HTML_TABLE_ROWS)} below)</p>"
                        f"{_html_table(frame)}")
    style = ("body{font-family:sans-serif;margin:2em}img{max-width:100%}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:small}p.caption{color:#444;max-width:60em}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")
    return write_new_file(folder / "report.html", page.encode())
