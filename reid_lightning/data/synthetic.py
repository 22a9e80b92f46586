"""Synthetic "individuals": animals told apart by their own coat pattern, for demos and tests.

Each individual has a fixed pattern of spots and/or stripes drawn in body coordinates; every photo renders it
under a new pose (rotation, shear, bend), scale, framing (the body may leave the frame), lighting (shading,
brightness, contrast, colour cast), blur, noise, background clutter and occluding grass. Colour and body
shape are shared by many individuals, so only the pattern identifies one.

Run ``python -m reid_lightning.data.synthetic --root DIR`` to write a set.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

GENERATOR_VERSION = 1  # bump whenever the rendering changes, so cached sets are regenerated
PARAMS_FILE = "synthetic.json"
METADATA_FILE = "metadata.csv"
SUPERSAMPLING = 2

# body colour morphs (RGB in [0, 1]) with the colour of their markings
MORPHS = np.array(
    [
        [[0.80, 0.62, 0.36], [0.16, 0.11, 0.07]],  # tawny, dark marks
        [[0.62, 0.62, 0.60], [0.12, 0.12, 0.13]],  # grey, black marks
        [[0.42, 0.30, 0.20], [0.90, 0.84, 0.70]],  # dark brown, cream marks
    ]
)


@dataclass(frozen=True)
class Coat:
    """One individual's appearance in body coordinates (the body is the unit disc)."""

    body_colour: np.ndarray  # (3,)
    mark_colour: np.ndarray  # (3,)
    aspect: float  # body height / length
    spot_centres: np.ndarray  # (K, 2)
    spot_radii: np.ndarray  # (K, 2) along and across the spot's own axis
    spot_angles: np.ndarray  # (K,)
    spot_rings: np.ndarray  # (K,) bool: rosette (ring) instead of a filled spot
    stripe_frequency: float  # 0: no stripes
    stripe_angle: float
    stripe_phase: float
    stripe_wobble: np.ndarray  # (3,) amplitude, frequency, phase of the stripes' waviness


def _random_coat(rng: np.random.Generator) -> Coat:
    morph = MORPHS[rng.integers(len(MORPHS))]
    kind = rng.choice(["spots", "stripes", "both"], p=[0.5, 0.25, 0.25])
    num_spots = 0
    if kind != "stripes":
        num_spots = int(rng.integers(10, 22) if kind == "spots" else rng.integers(5, 10))
    radius = np.sqrt(rng.uniform(0, 1, size=num_spots))  # uniform over the disc
    angle = rng.uniform(0, 2 * np.pi, size=num_spots)
    return Coat(
        body_colour=np.clip(morph[0] + rng.normal(0, 0.1, 3), 0, 1),
        mark_colour=np.clip(morph[1] + rng.normal(0, 0.08, 3), 0, 1),
        aspect=float(rng.uniform(0.45, 0.6)),
        spot_centres=np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1) * 0.9,
        spot_radii=rng.uniform(0.05, 0.16) * rng.uniform(0.7, 1.3, size=(num_spots, 1)) * np.stack(
            [np.ones(num_spots), rng.uniform(0.5, 1.0, num_spots)], axis=1
        ),
        spot_angles=rng.uniform(0, np.pi, size=num_spots),
        spot_rings=rng.random(num_spots) < 0.3,
        stripe_frequency=0.0 if kind == "spots" else float(rng.uniform(2.0, 4.5)),
        stripe_angle=float(rng.uniform(-0.5, 0.5) + np.pi / 2 * rng.integers(2)),
        stripe_phase=float(rng.uniform(0, 2 * np.pi)),
        stripe_wobble=np.array([rng.uniform(0.2, 0.9), rng.uniform(1, 3), rng.uniform(0, 2 * np.pi)]),
    )


def _coat_marks(coat: Coat, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(P,) bool: where body points ``(u, v)`` are covered by the coat's markings."""
    marks = np.zeros(u.shape, dtype=bool)
    if coat.stripe_frequency > 0:
        along = u * np.cos(coat.stripe_angle) + v * np.sin(coat.stripe_angle)
        amplitude, frequency, phase = coat.stripe_wobble
        wave = np.sin(2 * np.pi * coat.stripe_frequency * along + coat.stripe_phase
                      + amplitude * np.sin(frequency * np.pi * (u + v) + phase))
        marks |= wave > 0.45
    if len(coat.spot_centres):
        du = u[None, :] - coat.spot_centres[:, :1]
        dv = v[None, :] - coat.spot_centres[:, 1:]
        cos, sin = np.cos(coat.spot_angles)[:, None], np.sin(coat.spot_angles)[:, None]
        distance = ((du * cos + dv * sin) / coat.spot_radii[:, :1]) ** 2 + (
            (dv * cos - du * sin) / coat.spot_radii[:, 1:]
        ) ** 2
        inner = np.where(coat.spot_rings[:, None], 0.35, -1.0)
        marks |= ((distance < 1.0) & (distance > inner)).any(axis=0)
    return marks


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) smooth random field in [0, 1]."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255


def _ellipse_polygon(centre: np.ndarray, radii: np.ndarray, angle: float, vertices: int = 18) -> list:
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    x, y = radii[0] * np.cos(t), radii[1] * np.sin(t)
    cos, sin = np.cos(angle), np.sin(angle)
    return list(zip(centre[0] + x * cos - y * sin, centre[1] + x * sin + y * cos, strict=True))


def _draw_clutter(image: Image.Image, rng: np.random.Generator, base: np.ndarray) -> None:
    """Leaves, pebbles and dark debris behind the animal, drawn in place."""
    size = image.size[0]
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 10))):
        if rng.random() < 0.25:  # dark, spot-like debris that a pattern matcher must ignore
            colour = base * rng.uniform(0.1, 0.4)
        else:
            colour = np.clip(base * rng.uniform(0.6, 1.5) + rng.normal(0, 0.06, 3), 0, 1)
        radii = rng.uniform(0.02, 0.12, size=2) * size
        polygon = _ellipse_polygon(rng.uniform(-0.1, 1.1, size=2) * size, radii, rng.uniform(0, np.pi))
        draw.polygon(polygon, fill=tuple(int(c) for c in colour * 255))


def _draw_grass(image: Image.Image, rng: np.random.Generator, base: np.ndarray) -> None:
    """A few grass blades in front of the animal, drawn in place."""
    size = image.size[0]
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 7))):
        colour = np.clip(base * rng.uniform(0.7, 1.4) + rng.normal(0, 0.05, 3), 0, 1)
        bottom = np.array([rng.uniform(0, 1) * size, size * 1.05])
        top = bottom + np.array([rng.uniform(-0.3, 0.3), -rng.uniform(0.3, 0.9)]) * size
        draw.line([tuple(bottom), tuple(top)], fill=tuple(int(c) for c in colour * 255),
                  width=max(1, int(rng.uniform(0.01, 0.03) * size)))


def _render(coat: Coat, rng: np.random.Generator, image_size: int) -> Image.Image:
    size = image_size * SUPERSAMPLING
    base = rng.uniform([0.3, 0.35, 0.2], [0.5, 0.55, 0.4])
    shade = 0.75 + 0.5 * _smooth_noise(rng, size, 5)
    background = Image.fromarray((np.clip(shade[..., None] * base, 0, 1) * 255).astype(np.uint8))
    _draw_clutter(background, rng, base)
    canvas = np.asarray(background, dtype=np.float32) / 255

    length = rng.uniform(0.42, 0.54) * size
    angle = rng.uniform(-np.pi / 8, np.pi / 8)
    shear, bend = rng.uniform(-0.15, 0.15), rng.uniform(-0.25, 0.25)
    squash = coat.aspect * rng.uniform(0.88, 1.12)
    centre = (0.5 + rng.uniform(-0.1, 0.1, size=2)) * size
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    px, py = x - centre[0], y - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (px * cos + py * sin) / length
    v = (py * cos - px * sin) / (length * squash)
    u = u - shear * v
    v = v - bend * (u**2 - 0.5)
    radius2 = u**2 + v**2
    body = radius2 < 1
    head = ((u - 1.05) ** 2 / 0.12 + (v + 0.15) ** 2 / 0.2 < 1) & ~body

    light = rng.uniform(-1, 1, size=2)
    shading = np.clip(1.05 - 0.45 * radius2**2 + 0.2 * (u * light[0] + v * light[1]), 0.3, 1.2)
    marks = _coat_marks(coat, u[body], v[body])
    canvas[body] = np.where(marks[:, None], coat.mark_colour, coat.body_colour) * shading[body, None]
    canvas[head] = coat.body_colour * 0.85 * shading[head, None]

    animal = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    if rng.random() < 0.5:
        _draw_grass(animal, rng, base)
    small = np.asarray(animal.resize((image_size, image_size), Image.BOX), dtype=np.float32) / 255

    contrast, brightness = rng.uniform(0.8, 1.15), rng.uniform(0.75, 1.2)
    cast = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    small = ((small - 0.5) * contrast + 0.5) * brightness * cast
    small = small + rng.normal(0, rng.uniform(0, 0.04), size=small.shape).astype(np.float32)
    pixels = (np.clip(small, 0, 1) ** rng.uniform(0.8, 1.25) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    return image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0, 1.0) * image_size / 96))


@dataclass(frozen=True)
class _Params:
    num_individuals: int
    images_per_individual: int
    image_size: int
    seed: int
    generator_version: int = GENERATOR_VERSION


def _is_complete(root: Path, params: _Params) -> bool:
    params_file, metadata_file = root / PARAMS_FILE, root / METADATA_FILE
    if not (params_file.is_file() and metadata_file.is_file()):
        return False
    try:
        if json.loads(params_file.read_text()) != asdict(params):
            return False
    except json.JSONDecodeError:
        return False
    paths = pd.read_csv(metadata_file)["path"]
    expected = params.num_individuals * params.images_per_individual
    return len(paths) == expected and all((root / p).is_file() for p in paths)


def make_synthetic_individuals(
    root: str | Path,
    *,
    num_individuals: int = 40,
    images_per_individual: int = 12,
    image_size: int = 96,
    seed: int = 0,
) -> Path:
    """Write a synthetic re-identification set under ``root`` and return its ``metadata.csv`` path.

    A folder that already holds a complete set made with the same arguments is reused as it is. The images
    of individual ``i`` depend only on ``(seed, i)``, so adding individuals or images keeps the others.

    Args:
        root: output folder (``images/`` and ``metadata.csv`` with columns image_id, identity, path, date).
        num_individuals: number of distinct animals.
        images_per_individual: photos of every animal.
        image_size: side of the square images in pixels.
        seed: seed of every random choice.
    """
    if num_individuals < 1 or images_per_individual < 1 or image_size < 16:
        raise ValueError(
            f"need num_individuals >= 1, images_per_individual >= 1, image_size >= 16; got "
            f"{num_individuals}, {images_per_individual}, {image_size}"
        )
    root = Path(root)
    params = _Params(num_individuals, images_per_individual, image_size, seed)
    if _is_complete(root, params):
        return root / METADATA_FILE
    if (root / PARAMS_FILE).is_file():  # our own earlier set with other parameters
        shutil.rmtree(root / "images", ignore_errors=True)
        (root / PARAMS_FILE).unlink()
    rows = []
    for individual in range(num_individuals):
        coat = _random_coat(np.random.default_rng([seed, 0, individual]))
        identity = f"ind_{individual:03d}"
        folder = root / "images" / identity
        folder.mkdir(parents=True, exist_ok=True)
        first_day = np.random.default_rng([seed, 1, individual]).integers(0, 365)
        for photo in range(images_per_individual):
            rng = np.random.default_rng([seed, 2, individual, photo])
            path = folder / f"{photo:03d}.jpg"
            _render(coat, rng, image_size).save(path, quality=92)
            days, seconds = int(first_day + rng.integers(0, 730)), int(rng.integers(6 * 3600, 20 * 3600))
            taken = pd.Timestamp("2020-01-01") + pd.Timedelta(days=days, seconds=seconds)
            rows.append((f"{identity}_{photo:03d}", identity, path.relative_to(root).as_posix(), taken))
    metadata = pd.DataFrame(rows, columns=["image_id", "identity", "path", "date"])
    metadata.to_csv(root / METADATA_FILE, index=False)
    (root / PARAMS_FILE).write_text(json.dumps(asdict(params), indent=1))
    return root / METADATA_FILE


def main(argv: list[str] | None = None) -> None:
    """Command line entry: write a synthetic set and print where its metadata is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="output folder")
    parser.add_argument("--num-individuals", type=int, default=40)
    parser.add_argument("--images-per-individual", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_synthetic_individuals(
        args.root, num_individuals=args.num_individuals, images_per_individual=args.images_per_individual,
        image_size=args.image_size, seed=args.seed,
    ))


if __name__ == "__main__":
    main()
