"""The naive copy the project's copier is measured against: what one writes without thinking about it."""

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
