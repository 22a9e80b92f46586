"""The retrieval gallery: each shown query beside its top-k gallery candidates, correct ones framed green.

Composed directly with PIL (one paste per thumbnail) rather than a grid of matplotlib axes, which costs
seconds per report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import takewhile

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..retrieval import RetrievalResults
from .names import image_names, shorten

CORRECT, WRONG, QUERY = (26, 152, 80), (215, 48, 39), (69, 117, 180)
BACKGROUND, TEXT = (255, 255, 255), (0, 0, 0)


def pick_queries(results: RetrievalResults, *, worst: int, random: int, seed: int = 0) -> Tensor:
    """Positions of the ``worst`` queries (lowest AP among queries with a positive) followed by ``random``
    others drawn with ``seed``; ``(n,)`` long, no repeats."""
    if results.stats is None:
        raise ValueError("picking the worst queries needs the query identities; search with query_labels")
    ap = results.stats.ap.cpu().double()
    has_positive = results.stats.has_positive.cpu()
    ranked = torch.argsort(torch.where(has_positive, ap, float("inf")), stable=True)
    chosen = ranked[: min(worst, int(has_positive.sum()))]
    rest = torch.ones(results.num_queries, dtype=torch.bool)
    rest[chosen] = False
    others = rest.nonzero().flatten()
    generator = torch.Generator().manual_seed(seed)
    extra = others[torch.randperm(len(others), generator=generator)[:random]]
    return torch.cat([chosen, extra.sort().values])


def thumbnail(dataset, index: int, size: int) -> Image.Image:
    """Image ``index`` of ``dataset`` (its ``get_image``, i.e. untransformed) fitted into ``size x size``."""
    image = dataset.get_image(int(index)).convert("RGB")
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    return image


@dataclass(frozen=True)
class GalleryLayout:
    """Pixel geometry of a gallery: a header line, then one row of cells per query.

    Column 0 is the query; ranking ``r`` (0-based) fills columns ``1 + r * top_k ...``, preceded by a gap.
    Each cell is a three-line caption above a ``thumbnail_size`` square framed by ``border`` pixels.
    """

    rankings: int
    top_k: int
    thumbnail_size: int
    border: int = 4
    caption: int = 38
    gap: int = 12
    header: int = 16

    @property
    def cell_width(self) -> int:
        return self.thumbnail_size + 2 * self.border + 4

    @property
    def cell_height(self) -> int:
        return self.caption + self.thumbnail_size + 2 * self.border + 4

    def size(self, rows: int) -> tuple[int, int]:
        columns = 1 + self.rankings * self.top_k
        return columns * self.cell_width + self.rankings * self.gap, self.header + rows * self.cell_height

    def frame_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the coloured frame of a cell (inclusive)."""
        ranking_gaps = 0 if column == 0 else 1 + (column - 1) // self.top_k
        left = column * self.cell_width + ranking_gaps * self.gap + 2
        top = self.header + row * self.cell_height + self.caption
        side = self.thumbnail_size + 2 * self.border
        return left, top, left + side - 1, top + side - 1


def gallery_image(queries: Sequence[int], rankings: dict[str, RetrievalResults], *, query_dataset,
                  gallery_dataset, top_k: int = 5, thumbnail_size: int = 96) -> Image.Image:
    """One row per query: the query image, then the top-``top_k`` candidates of every ranking in ``rankings``
    (e.g. ``{"global": ..., "reranked": ...}``) side by side.

    Each candidate is captioned with its rank, score, identity and name (:func:`~.names.image_names`: image_id
    or file) and framed green (same individual as the query) or red; the query is framed blue and captioned
    with its name, identity and AP.
    """
    names = list(rankings)
    reference = rankings[names[0]]
    layout = GalleryLayout(rankings=len(names), top_k=top_k, thumbnail_size=thumbnail_size)
    canvas = Image.new("RGB", layout.size(len(queries)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=10)
    draw.text((layout.frame_box(0, 0)[0], 2), "query", fill=TEXT, font=font)
    for block, name in enumerate(names):
        draw.text((layout.frame_box(0, 1 + block * top_k)[0], 2), f"{name} ranking", fill=TEXT, font=font)
    query_names = reference.names(reference.query_labels.cpu()) if reference.query_labels is not None else None
    queries = [int(q) for q in queries]
    for row, (query, photo) in enumerate(zip(queries, image_names(query_dataset, queries), strict=True)):
        ap = "" if reference.stats is None else f"AP={float(reference.stats.ap[query]):.2f}"
        identity = query_names[query] if query_names is not None else "?"
        _cell(canvas, draw, font, layout.frame_box(row, 0), thumbnail(query_dataset, query, thumbnail_size),
              [photo, identity, ap], QUERY, layout, name_line=0)
        for block, name in enumerate(names):
            results = rankings[name]
            candidates = results.candidate_indices[query].cpu()
            scores = results.candidate_scores[query].cpu()
            identities = results.candidate_identities[query]
            hits = results.hits[query].cpu() if results.query_labels is not None else None
            shown = list(takewhile(lambda index: index >= 0, candidates[:top_k].tolist()))  # -1: no candidate
            for slot, (index, photo) in enumerate(zip(shown, image_names(gallery_dataset, shown), strict=True)):
                color = TEXT if hits is None else (CORRECT if hits[slot] else WRONG)
                _cell(canvas, draw, font, layout.frame_box(row, 1 + block * top_k + slot),
                      thumbnail(gallery_dataset, index, thumbnail_size),
                      [f"#{slot + 1}: {float(scores[slot]):.3f}", str(identities[slot]), photo], color, layout,
                      name_line=2)
    return canvas


def _cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, font, box: tuple[int, int, int, int],
          image: Image.Image, caption: list[str], color: tuple[int, int, int], layout: GalleryLayout, *,
          name_line: int) -> None:
    """One framed thumbnail under its caption lines. The image name (line ``name_line``) is cut at its start:
    names of one dataset share their beginning (folder, prefix) and differ at the end."""
    left, top = box[:2]
    draw.rectangle(box, fill=color)
    inner = layout.thumbnail_size
    draw.rectangle((left + layout.border, top + layout.border, left + layout.border + inner - 1,
                    top + layout.border + inner - 1), fill=BACKGROUND)
    offset = ((inner - image.width) // 2, (inner - image.height) // 2)
    canvas.paste(image, (left + layout.border + offset[0], top + layout.border + offset[1]))
    width = max(4, layout.cell_width // 6)  # characters of the default font that fit the cell
    lines = [shorten(line, width, keep_end=i == name_line) for i, line in enumerate(caption)]
    draw.multiline_text((left, top - layout.caption + 1), "\n".join(lines), fill=TEXT, font=font, spacing=1)
