"""The offline report: every figure as PNG, every table and curve as CSV, and one self-contained report.html."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ..rundir import write_new_file
from .panels import Report

HTML_TABLE_ROWS = 50
FAST_PNG = 1


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


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in frame.columns)
    rows = []
    for _, row in frame.head(HTML_TABLE_ROWS).iterrows():
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
        cells = "".join(f"<tr><td>{html.escape(name)}</td><td>{value:.4f}</td></tr>" for name, value in metrics.items())
        sections.append(f"<h2>metrics</h2><table>{cells}</table>")
    for name, figure in report.figures.items():
        data = figure_png(figure)
        path = write_new_file(folder / f"{file_stem(name)}.png", data)
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        sections.append(f'<h2>{html.escape(name)}</h2><a href="{path.name}"><img src="{uri}" '
                        f'alt="{html.escape(name)}"></a>')
    for name, curve in report.curves.items():
        path = write_new_file(folder / f"{file_stem(name)}.csv", table_csv(curve.frame))
        sections.append(f'<p>{html.escape(curve.title)}: <a href="{path.name}">{path.name}</a></p>')
    for name, frame in report.tables.items():
        if _has_vectors(frame):
            continue  # embedding tables feed the W&B projector; offline they would only fill the disk
        path = write_new_file(folder / f"{file_stem(name)}.csv", table_csv(frame))
        sections.append(f'<h2>{html.escape(name)}</h2><p><a href="{path.name}">{path.name}</a> '
                        f"({len(frame)} rows, the first {min(len(frame), HTML_TABLE_ROWS)} below)</p>"
                        f"{_html_table(frame)}")
    style = ("body{font-family:sans-serif;margin:2em}img{max-width:100%}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:small}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")
    return write_new_file(folder / "report.html", page.encode())
