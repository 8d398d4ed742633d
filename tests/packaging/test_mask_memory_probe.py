"""The largest mask the rules allow, measured in a subprocess that does what the submit function does
(its task root, layer and environment), stays under 60% of template.yaml's MemorySize (issue #23,
finding 9). A probe of the packaged function, so it runs in `make test`, not `make unit`; the header
checks that keep larger masks out are in tests/unit/submit/test_mask_memory.py."""

from __future__ import annotations

import pytest

from bench import mask_memory

# --- measured: the largest RGBA PNG the rules allow -------------------------------------------------


@pytest.mark.timeout(60)
def test_given_the_largest_rgba_png_allowed_when_checked_fitted_and_sent_then_the_peak_rss_stays_under_60_percent(
    tmp_path,
):
    form = next(form for form in mask_memory.FORMS if form.key == "rgba_png")
    side = mask_memory.largest_side(form)
    mask, warmup = tmp_path / "mask.png", tmp_path / "warmup.png"
    mask.write_bytes(form.encode(mask_memory.drawing((side, side))))
    warmup.write_bytes(form.encode(mask_memory.drawing((64, 64))))
    limit = mask_memory.TARGET_SHARE * mask_memory.memory_size_mib(mask_memory.submit_function())

    (result,) = mask_memory.probe([{"mask": str(mask), "warmup": str(warmup), "parent": [side, side]}])

    assert result["rejected"] is None
    assert result["hwm_reset"], "the RSS high-water mark could not be reset: the figure would be meaningless"
    assert result["peak_rss_mb"] <= limit, (
        f"checking, fitting and sending a {side}x{side} RGBA PNG peaked at {result['peak_rss_mb']:.0f} MiB RSS, "
        f"over {limit:.0f} MiB ({mask_memory.TARGET_SHARE:.0%} of the submit function's MemorySize)"
    )
