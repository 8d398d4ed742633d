"""The contact sheet of a finished job: one PNG a person can look at.

The parent with the mask's outline drawn on it, then the four variants, side by side at one height.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

SHEET_HEIGHT = 384  # each picture's height on the sheet
_GAP = 8
_OUTLINE = (255, 48, 48)


class SheetError(ValueError):
    """A file the sheet needs is missing or not an image."""


def contact_sheet(folder: Path, out: Path | None = None) -> Path:
    """Write folder/sheet.png from parent.png, mask.png and 1.png..4.png; returns its path."""
    from PIL import Image, ImageChops, ImageFilter, UnidentifiedImageError

    names = ["parent.png", "mask.png", "1.png", "2.png", "3.png", "4.png"]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise SheetError(f"no contact sheet: {', '.join(missing)} missing in {folder}")
    try:
        opened = [Image.open(folder / name) for name in names]
        parent = opened[0].convert("RGB")
        mask = opened[1].convert("L").resize(parent.size, Image.Resampling.NEAREST)
        variants = [variant.convert("RGB") for variant in opened[2:]]
    except (OSError, UnidentifiedImageError) as exc:
        raise SheetError(f"no contact sheet: {exc}") from None
    # The outline: the mask's edge (its dilation minus itself), widened to stay visible when scaled down.
    width = max(2, parent.width // 200)
    edge = ImageChops.subtract(mask.filter(ImageFilter.MaxFilter(2 * width + 1)), mask)
    outlined = parent.copy()
    outlined.paste(_OUTLINE, mask=edge)
    tiles = [_scaled(outlined), *(_scaled(variant) for variant in variants)]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + _GAP * (len(tiles) + 1), SHEET_HEIGHT + 2 * _GAP), "white")
    x = _GAP
    for tile in tiles:
        sheet.paste(tile, (x, _GAP))
        x += tile.width + _GAP
    target = out or folder / "sheet.png"
    sheet.save(target, format="PNG")
    return target


def _scaled(image: Image) -> Image:
    from PIL import Image as PILImage

    width = max(1, round(image.width * SHEET_HEIGHT / image.height))
    return image.resize((width, SHEET_HEIGHT), PILImage.Resampling.LANCZOS)
