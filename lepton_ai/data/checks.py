"""What a dataset's records must be. Each record is checked as it is read (an image that decodes whole and is
what its name says, a text in UTF-8, table cells of their column's type); a schema inferred from the first
version (column types and ranges, the label set, image modes and sizes) is kept with the dataset, and later
versions are checked against it, tables through pandera. A record that fails is quarantined, with why."""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lepton_ai.data.sources import BadRow
from lepton_ai.errors import InvalidInputError

# what Pillow calls each format, by the suffixes that claim it
_IMAGE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".webp": "WEBP",
}
# the lowest 8 rows of the 32-point DCT-II (scipy's unnormalised one): a pHash in two small products
_DCT8 = 2 * np.cos(np.pi * (2 * np.arange(32)[None, :] + 1) * np.arange(8)[:, None] / 64)
# the share of a column's cells that must read as a type for the column to have it
_MOSTLY = 0.95
_PANDAS_TYPES = {"integer": "int64", "number": "float64", "boolean": "bool", "string": "str"}


class BadRecord(Exception):
    """A record that cannot be part of the dataset: the message says why."""


@dataclass(frozen=True)
class ImageFacts:
    """What an image is, as the schema sees it."""

    mode: str
    width: int
    height: int
    # a perceptual hash: equal for the same picture re-encoded, resized or slightly recoloured
    phash: str = ""


def check_image(path: str, raw: bytes) -> ImageFacts:
    """Return the facts of the image in `raw`; raise BadRecord if it does not decode whole or is not the
    format its name says."""
    from PIL import Image, UnidentifiedImageError

    expected = _IMAGE_FORMATS.get(posixpath.splitext(path)[1].lower())
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.format != expected:
                raise BadRecord(f"a {image.format or 'unknown'} file named as {expected}")
            # decodes every pixel: a truncated file fails here
            image.load()
            return ImageFacts(image.mode, image.width, image.height, perceptual_hash(image))
    except UnidentifiedImageError:
        raise BadRecord("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadRecord(f"does not decode whole ({e})") from None


def perceptual_hash(image: Any) -> str:
    """Return the image's pHash (64 bits, hex): the signs of the lowest 8×8 DCT frequencies of its 32×32
    grey version against their median, as imagehash computes it (there several times slower)."""
    from PIL import Image

    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT8 @ pixels @ _DCT8.T).ravel()
    # the median of the 64, as np.median finds it, without its overhead
    return np.packbits(low > np.partition(low, (31, 32))[31:33].mean()).tobytes().hex()


def check_text(raw: bytes) -> None:
    """Raise BadRecord unless `raw` is non-empty UTF-8 text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise BadRecord("an empty text")


def file_schema(fmt: str, labels: list[str], facts: list[ImageFacts]) -> dict[str, Any]:
    """Return the schema of a folder dataset's first version: its label set, and its images' modes and size
    range."""
    schema: dict[str, Any] = {"format": fmt, "classes": sorted(set(labels))}
    if facts:
        schema["image"] = {
            "modes": sorted({f.mode for f in facts}),
            "width": [min(f.width for f in facts), max(f.width for f in facts)],
            "height": [min(f.height for f in facts), max(f.height for f in facts)],
        }
    return schema


def file_problem(schema: dict[str, Any], label: str, facts: ImageFacts | None) -> str | None:
    """Return what is wrong with a record of a later version against `schema`, or None."""
    if label not in schema["classes"]:
        return f"label {label!r} is not one of the dataset's {len(schema['classes'])} classes"
    image = schema.get("image")
    if image is None or facts is None:
        return None
    if facts.mode not in image["modes"]:
        return f"image mode {facts.mode}, expected {' or '.join(image['modes'])}"
    (w0, w1), (h0, h1) = image["width"], image["height"]
    if not (w0 <= facts.width <= w1 and h0 <= facts.height <= h1):
        return f"a {facts.width}×{facts.height} image, expected {w0}–{w1} × {h0}–{h1}"
    return None


def column_types(frame: pd.DataFrame, label: str, text: str | None) -> dict[str, str]:
    """Return each column's type as the first rows of a table show it: the label and text columns are
    strings; another is an integer, number or boolean column if all its cells read as one."""
    types = {}
    for name in frame.columns:
        if name in (label, text):
            types[name] = "string"
            continue
        as_text = frame[name].dropna().astype(str).str.strip().str.lower()
        as_text = as_text[as_text != ""]
        numbers = pd.to_numeric(as_text, errors="coerce").dropna()
        # a stray bad cell does not make a column of numbers a column of text: it is quarantined
        if len(as_text) and as_text.isin(["true", "false"]).mean() >= _MOSTLY:
            types[name] = "boolean"
        elif len(as_text) and len(numbers) >= _MOSTLY * len(as_text):
            whole = bool((numbers == np.floor(numbers)).all()) and not as_text.str.contains(r"[.e]").any()
            types[name] = "integer" if whole else "number"
        else:
            types[name] = "string"
    return types


def typed(frame: pd.DataFrame, types: dict[str, str]) -> tuple[pd.DataFrame, list[BadRow]]:
    """Return the rows whose every cell reads as its column's type, converted, and the others named."""
    missing = [name for name in types if name not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"the table has no column {missing[0]!r} (columns: {', '.join(frame.columns)})"
        )
    bad: dict[int, str] = {}
    out = {}
    for name, kind in types.items():
        cells = frame[name]
        if kind == "string":
            text = cells.astype("str").str.strip()
            converted = text.where(cells.notna() & (text != ""), None)
        elif kind == "boolean":
            converted = cells.astype(str).str.strip().str.lower().map({"true": True, "false": False})
        else:
            converted = pd.to_numeric(cells, errors="coerce")
        for row in frame.index[converted.isna().to_numpy()]:
            bad.setdefault(int(row), f"column {name!r}: {cells[row]!r} is not {_a(kind)}")
        out[name] = converted
    good = pd.DataFrame(out, index=frame.index).drop(index=list(bad))
    good = good.astype({name: _PANDAS_TYPES[kind] for name, kind in types.items()})
    return good, [BadRow(row, reason) for row, reason in bad.items()]


def table_schema(
    types: dict[str, str], ranges: dict[str, list[float]], classes: list[str], label: str, text: str | None
) -> dict[str, Any]:
    """Return the schema of a table dataset's first version: column types, numeric ranges, the label set."""
    columns = {
        name: {"type": kind, **({"range": ranges[name]} if name in ranges else {})}
        for name, kind in types.items()
    }
    return {"format": "table", "columns": columns, "label": label, "text": text, "classes": classes}


def table_problems(frame: pd.DataFrame, schema: dict[str, Any]) -> list[BadRow]:
    """Return the rows of `frame` (typed) that break `schema`'s ranges or label set, checked by pandera, each
    named with its column, the check and the value."""
    import pandera.errors
    import pandera.pandas as pa

    columns = {}
    for name, spec in schema["columns"].items():
        checks = [pa.Check.in_range(*spec["range"])] if "range" in spec else []
        if name == schema["label"]:
            checks.append(pa.Check.isin(schema["classes"]))
        columns[name] = pa.Column(_PANDAS_TYPES[spec["type"]], checks, nullable=False, coerce=True)
    try:
        pa.DataFrameSchema(columns).validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as e:
        cases = e.failure_cases.dropna(subset=["index"])
        found: dict[int, str] = {}
        for row, column, check, value in cases[["index", "column", "check", "failure_case"]].itertuples(
            index=False
        ):
            found.setdefault(int(row), f"column {column!r}: {value!r} fails {check}")
        return [BadRow(row, reason) for row, reason in found.items()]
    return []


def widen(ranges: dict[str, list[float]], frame: pd.DataFrame, types: dict[str, str]) -> None:
    """Widen each numeric column's [min, max] in `ranges` to take in `frame`'s values."""
    for name, kind in types.items():
        if kind in ("integer", "number") and len(frame):
            low, high = float(frame[name].min()), float(frame[name].max())
            old = ranges.setdefault(name, [low, high])
            ranges[name] = [min(old[0], low), max(old[1], high)]


def _a(kind: str) -> str:
    return {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a text"}[
        kind
    ]
