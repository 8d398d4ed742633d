"""The naive versions the project is measured against: what one writes without thinking about it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import requests


def naive_copy_all(s3: Any, bucket: str, sources: Mapping[str, str], key_for: Callable[[str], str]) -> None:
    """One image after the other, each read whole into memory, then one PutObject."""
    for name, url in sources.items():
        response = requests.get(url, timeout=120)
        response.raise_for_status()
        s3.put_object(Bucket=bucket, Key=key_for(name), Body=response.content, ContentType="image/png")


def naive_mask_step(data: bytes, parent: tuple[int, int], resize: bool) -> bytes:
    """The mask step as written before issue #23, for comparison (the same functions, object lifetimes
    included): the whole image decoded, converted to RGB(A), split into bands, and its black-and-white
    result kept as one byte a pixel; returns the PNG that would be sent."""
    pixels, size = _naive_validate(data)
    return _naive_fit(pixels, size, parent, resize)


_NAIVE_THRESHOLD = [0] * 128 + [255] * 128


def _naive_validate(data: bytes) -> tuple[bytes, tuple[int, int]]:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    binary = _naive_binarise(image)
    binary.getbbox()  # the blank check
    _already_binary = (  # computed as it was, for its copy of the image
        image.format == "PNG"
        and image.mode in ("L", "1")
        and "transparency" not in image.info
        and not any(image.convert("L").histogram()[1:255])
    )
    return binary.tobytes(), image.size


def _naive_binarise(image: Any) -> Any:
    from PIL import ImageChops

    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        value = image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    elif image.mode in ("L", "1") and not has_alpha:
        value = image.convert("L")
    else:
        colour = image.convert("RGBA" if has_alpha else "RGB")
        red, green, blue = colour.split()[:3]
        value = ImageChops.lighter(ImageChops.lighter(red, green), blue)
        if has_alpha:
            value = ImageChops.multiply(value, colour.getchannel("A"))
    return value.point(_NAIVE_THRESHOLD)


def _naive_fit(pixels: bytes, size: tuple[int, int], parent: tuple[int, int], resize: bool) -> bytes:
    import io

    from PIL import Image

    binary = Image.frombytes("L", size, pixels)
    if resize:
        binary = binary.resize(parent, Image.Resampling.BILINEAR).point(_NAIVE_THRESHOLD)
    out = io.BytesIO()
    binary.save(out, format="PNG", compress_level=1)
    return out.getvalue()
