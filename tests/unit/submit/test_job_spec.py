"""job.json and the inline form: every way a job file can be refused, and what is accepted."""

from __future__ import annotations

import base64
import json

import pytest
from vary_region.core.errors import ErrorStage, JobRejected
from vary_region.submit.job_spec import (
    InlineMask,
    JobSpec,
    Limits,
    parse_inline_job,
    parse_job_spec,
    parse_mask_data_url,
)

from tests.support.builders import job_json, mask_png

LIMITS = Limits()
MAX_MASK = 64 * 1024


def rejected_code(call, *args) -> str:
    with pytest.raises(JobRejected) as info:
        call(*args)
    assert info.value.error.stage is ErrorStage.INTAKE
    assert info.value.error.message  # users always get a human-readable reason
    return info.value.error.code


def doc(**fields) -> bytes:
    return json.dumps(fields).encode()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# --- accepted job files ---------------------------------------------------------------------------


def test_given_minimal_job_when_parsed_then_spec_has_parent_and_no_prompt_or_metadata():
    spec = parse_job_spec(doc(parent_task_id="29e983ca-7e86-4017-a9e3-ef6fe9cd5f2a"))

    assert spec == JobSpec(parent_task_id="29e983ca-7e86-4017-a9e3-ef6fe9cd5f2a", prompt=None, metadata={})


def test_given_full_job_when_parsed_then_prompt_and_metadata_are_kept():
    spec = parse_job_spec(job_json("parent_1", "a red balloon", metadata={"order": 42, "tags": ["a", "b"]}))

    assert spec.parent_task_id == "parent_1"
    assert spec.prompt == "a red balloon"
    assert spec.metadata == {"order": 42, "tags": ["a", "b"]}


def test_given_parent_id_with_surrounding_spaces_when_parsed_then_it_is_trimmed():
    assert parse_job_spec(doc(parent_task_id="  abc-123 \n")).parent_task_id == "abc-123"


def test_given_utf8_bom_when_parsed_then_job_is_accepted():
    spec = parse_job_spec(b"\xef\xbb\xbf" + job_json("bom-parent", "café"))

    assert (spec.parent_task_id, spec.prompt) == ("bom-parent", "café")


def test_given_every_documented_key_when_parsed_then_none_is_refused():
    regions = {"regions": [{"rect": [0.1, 0.1, 0.5, 0.5]}], "units": "fraction"}
    imagine = {"prompt": "a lighthouse", "index": "2", "aspect_ratio": "3:2"}
    inline = {"prompt": "hat", "metadata": {"any": {"keys": ["at", "all"]}}, "mask_fit": "resize"}

    assert parse_job_spec(doc(parent_task_id="g1", index="3", mask=regions, **inline)).index == "3"
    assert parse_job_spec(doc(imagine=imagine, mask=regions, **inline)).imagine is not None
    spec, _ = parse_inline_job(doc(parent_task_id="p1", mask=data_url(mask_png()), **inline), LIMITS, MAX_MASK)
    assert spec.metadata == {"any": {"keys": ["at", "all"]}}, "metadata stays free-form"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (doc(parent_task_id="p1", promt="a red balloon"), "key 'promt' (did you mean 'prompt'?) in the job file"),
        (doc(parentTaskId="p1"), "'parentTaskId' (did you mean 'parent_task_id'?)"),
        (doc(parent_task_id="p1", Prompt="x"), "'Prompt' (did you mean 'prompt'?)"),
        (doc(parent_task_id="p1", mask_fitt="resize"), "'mask_fitt' (did you mean 'mask_fit'?)"),
        (doc(parent_task_id="p1", colour="blue", n=None), "unknown keys 'colour', 'n' in the job file"),
        (doc(imagine={"prompt": "x", "aspect": "16:9"}), "'aspect' (did you mean 'aspect_ratio'?) in `imagine`"),
        (doc(parent_task_id="p1", callback_url="https://x"), "unknown key 'callback_url'"),
    ],
)
def test_given_an_unknown_key_when_parsed_then_spec_unknown_key_names_it_and_the_near_miss(raw, words):
    with pytest.raises(JobRejected) as info:
        parse_job_spec(raw)

    assert info.value.error.code == "SPEC_UNKNOWN_KEY"
    assert words in info.value.error.message
    assert "it takes only " in info.value.error.message, "and names the keys it takes"


def test_given_an_unknown_key_beside_other_mistakes_when_parsed_then_the_unknown_key_is_named_first():
    # A misspelt key may be the reason another one seems missing: it is the mistake to tell.
    assert rejected_code(parse_job_spec, doc(parent_taskid="p1", prompt=7)) == "SPEC_UNKNOWN_KEY"


def test_given_an_inline_job_with_an_unknown_key_when_parsed_then_spec_unknown_key():
    raw = doc(parent_task_id="p1", promt="hat", mask=data_url(mask_png()))
    assert rejected_code(parse_inline_job, raw, LIMITS, MAX_MASK) == "SPEC_UNKNOWN_KEY"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("line one\nline two", "line one line two"),
        ("tab\tseparated", "tab separated"),
        ("windows\r\nline", "windows line"),
        ("many\n\n\t\r\nbreaks", "many breaks"),
        ("\n  padded prompt \t\n", "padded prompt"),
    ],
)
def test_given_tabs_and_newlines_in_prompt_when_parsed_then_they_are_folded_to_spaces(prompt, expected):
    assert parse_job_spec(job_json(prompt=prompt)).prompt == expected


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_given_blank_prompt_when_parsed_then_prompt_is_none(prompt):
    assert parse_job_spec(job_json(prompt=prompt)).prompt is None


def test_given_unicode_prompt_when_parsed_then_it_is_kept():
    assert parse_job_spec(job_json(prompt="un ballon rouge 🎈 日本")).prompt == "un ballon rouge 🎈 日本"


def test_given_prompt_at_the_length_limit_when_parsed_then_it_is_accepted():
    assert parse_job_spec(job_json(prompt="a" * LIMITS.max_prompt_chars)).prompt == "a" * LIMITS.max_prompt_chars


# --- rejected job files ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\r\n\t "])
def test_given_empty_file_when_parsed_then_spec_empty(raw):
    assert rejected_code(parse_job_spec, raw) == "SPEC_EMPTY"


def test_given_file_over_the_size_limit_when_parsed_then_spec_too_large():
    limits = Limits(max_spec_bytes=100)
    ok = doc(parent_task_id="p", prompt="x" * (100 - len(doc(parent_task_id="p", prompt=""))))
    assert len(ok) == 100
    assert parse_job_spec(ok, limits).parent_task_id == "p"

    assert rejected_code(parse_job_spec, ok + b" ", limits) == "SPEC_TOO_LARGE"


def test_given_default_limits_and_a_300k_file_when_parsed_then_spec_too_large():
    assert rejected_code(parse_job_spec, doc(parent_task_id="p", prompt="x" * 300_000)) == "SPEC_TOO_LARGE"


@pytest.mark.parametrize(
    "raw",
    [
        '{"parent_task_id": "p"}'.encode("utf-16"),  # UTF-16 with its BOM
        b'{"parent_task_id": "p", "prompt": "caf\xe9"}',  # Latin-1
        b"\xff\xfe\xfd",
    ],
)
def test_given_non_utf8_bytes_when_parsed_then_spec_not_utf8(raw):
    assert rejected_code(parse_job_spec, raw) == "SPEC_NOT_UTF8"


@pytest.mark.parametrize(
    "raw",
    [b"{parent_task_id: 'p'}", b'{"parent_task_id": "p",}', b'{"parent_task_id": "p"', b"not json", b"\xef\xbb\xbf{"],
)
def test_given_invalid_json_when_parsed_then_spec_invalid_json(raw):
    assert rejected_code(parse_job_spec, raw) == "SPEC_INVALID_JSON"


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        (b'{"parent_task_id": "p", "metadata": {"score": NaN}}', "NaN"),
        (b'{"parent_task_id": "p", "metadata": {"limit": Infinity}}', "Infinity"),
        (b'{"parent_task_id": "p", "metadata": {"floor": [1, -Infinity]}}', "-Infinity"),
        (b'{"parent_task_id": "p", "metadata": {"big": 1e999}}', "1e999"),
        (b'{"parent_task_id": "p", "index": NaN}', "NaN"),
    ],
)
def test_given_a_number_json_has_not_when_parsed_then_spec_invalid_json_names_it(raw, token):
    with pytest.raises(JobRejected) as info:
        parse_job_spec(raw)

    assert info.value.error.code == "SPEC_INVALID_JSON"
    assert token in info.value.error.message


def test_given_nan_in_an_inline_job_when_parsed_then_spec_invalid_json():
    raw = doc(parent_task_id="p1", mask=data_url(mask_png()))[:-1] + b', "metadata": {"x": NaN}}'
    assert rejected_code(parse_inline_job, raw, LIMITS, MAX_MASK) == "SPEC_INVALID_JSON"


@pytest.mark.parametrize("depth", [33, 5_000, 200_000])
def test_given_nesting_past_the_limit_when_parsed_then_spec_invalid_json_without_recursing(depth):
    raw = b'{"parent_task_id": "p", "metadata": {"deep": ' + b"[" * (depth - 2) + b"]" * (depth - 2) + b"}}"

    with pytest.raises(JobRejected) as info:
        parse_job_spec(raw, Limits(max_spec_bytes=1024 * 1024))

    assert info.value.error.code == "SPEC_INVALID_JSON"
    assert f"{depth} levels" in info.value.error.message


def test_given_nesting_at_the_limit_when_parsed_then_metadata_keeps_it():
    raw = b'{"parent_task_id": "p", "metadata": {"deep": ' + b"[" * 30 + b"]" * 30 + b"}}"  # 32 levels

    deep = parse_job_spec(raw).metadata["deep"]

    for _ in range(29):
        (deep,) = deep
    assert deep == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"parent_task_id": "p", "metadata": {"x": "\\ud800"}}',  # an unpaired surrogate: no UTF-8 for it
        b'{"parent_task_id": "p", "metadata": {"n": ' + b"9" * 5000 + b"}}",  # past Python's int digits
    ],
    ids=["lone-surrogate", "5000-digit-integer"],
)
def test_given_json_no_document_can_be_written_from_when_parsed_then_spec_invalid_json(raw):
    assert rejected_code(parse_job_spec, raw) == "SPEC_INVALID_JSON"


@pytest.mark.parametrize("raw", [b"[]", b'[{"parent_task_id": "p"}]', b'"p"', b"42", b"null", b"true"])
def test_given_json_that_is_not_an_object_when_parsed_then_spec_not_object(raw):
    assert rejected_code(parse_job_spec, raw) == "SPEC_NOT_OBJECT"


@pytest.mark.parametrize("raw", [b"{}", doc(prompt="x"), doc(parent_task_id=None)])
def test_given_no_parent_task_id_when_parsed_then_parent_task_id_missing(raw):
    assert rejected_code(parse_job_spec, raw) == "PARENT_TASK_ID_MISSING"


@pytest.mark.parametrize(
    "value",
    [
        123,
        12.5,
        True,
        ["p"],
        {"id": "p"},  # not a string
        "",
        "   ",  # empty
        "abc/def",
        "a b",
        "../etc/passwd",
        "id;rm -rf",
        "id\n2",
        "-leading-dash",
        "_leading_underscore",
        "p\u00e9",
        "a" * 129,  # bad characters or too long
    ],
)
def test_given_bad_parent_task_id_when_parsed_then_parent_task_id_invalid(value):
    assert rejected_code(parse_job_spec, job_json(parent_task_id=value)) == "PARENT_TASK_ID_INVALID"


def test_given_parent_task_id_of_128_chars_when_parsed_then_it_is_accepted():
    assert parse_job_spec(job_json(parent_task_id="a" * 128)).parent_task_id == "a" * 128


@pytest.mark.parametrize("prompt", [42, ["a"], {"text": "a"}, True])
def test_given_prompt_that_is_not_a_string_when_parsed_then_prompt_invalid(prompt):
    assert rejected_code(parse_job_spec, job_json(prompt=prompt)) == "PROMPT_INVALID"


def test_given_prompt_over_the_limit_when_parsed_then_prompt_too_long():
    assert rejected_code(parse_job_spec, job_json(prompt="a" * (LIMITS.max_prompt_chars + 1))) == "PROMPT_TOO_LONG"


@pytest.mark.parametrize(
    "prompt", ["bell\x07", "nul\x00char", "esc \x1b[31m red", "del\x7f", "form\x0cfeed", "next\x85line"]
)
def test_given_control_characters_in_prompt_when_parsed_then_prompt_control_characters(prompt):
    assert rejected_code(parse_job_spec, job_json(prompt=prompt)) == "PROMPT_CONTROL_CHARACTERS"


@pytest.mark.parametrize("metadata", [[1, 2], "order-42", 42, True])
def test_given_metadata_that_is_not_an_object_when_parsed_then_metadata_invalid(metadata):
    assert rejected_code(parse_job_spec, job_json(metadata=metadata)) == "METADATA_INVALID"


def test_given_metadata_over_the_byte_limit_when_parsed_then_metadata_too_large():
    # 2100 characters, but 4200 UTF-8 bytes: the limit is on bytes.
    assert rejected_code(parse_job_spec, job_json(metadata={"k": "é" * 2100})) == "METADATA_TOO_LARGE"


def test_given_metadata_just_under_the_limit_when_parsed_then_it_is_echoed():
    metadata = {"k": "x" * 4000}
    assert parse_job_spec(job_json(metadata=metadata)).metadata == metadata


# --- the inline form -------------------------------------------------------------------------------


def test_given_inline_job_when_parsed_then_spec_and_mask_bytes_are_returned():
    mask = mask_png((64, 64), (8, 8, 40, 40))
    raw = doc(parent_task_id="p1", prompt="hat", metadata={"n": 1}, mask=data_url(mask))

    spec, inline = parse_inline_job(raw, LIMITS, MAX_MASK)

    assert spec == JobSpec(parent_task_id="p1", prompt="hat", metadata={"n": 1})
    assert isinstance(inline, InlineMask)
    assert inline.data == mask
    assert inline.declared_type == "image/png"


def test_given_inline_mask_bigger_than_the_spec_limit_when_parsed_then_it_is_accepted_within_the_mask_limit():
    mask = bytes(range(256)) * 1024  # 256 KiB: more than a job.json may weigh, less than a mask may
    raw = doc(parent_task_id="p1", mask=data_url(mask))
    assert len(raw) > LIMITS.max_spec_bytes

    _, inline = parse_inline_job(raw, LIMITS, max_mask_bytes=512 * 1024)

    assert isinstance(inline, InlineMask)
    assert inline.data == mask


def test_given_inline_job_without_mask_when_parsed_then_mask_missing():
    assert rejected_code(parse_inline_job, doc(parent_task_id="p1"), LIMITS, MAX_MASK) == "MASK_MISSING"


def test_given_inline_job_with_bad_spec_when_parsed_then_the_spec_error_wins():
    raw = doc(prompt="x", mask=data_url(b"\x89PNG"))
    assert rejected_code(parse_inline_job, raw, LIMITS, MAX_MASK) == "PARENT_TASK_ID_MISSING"


@pytest.mark.parametrize(
    "mask",
    [
        42,
        ["data:image/png;base64,AAAA"],
        "",
        "iVBORw0KGgo=",  # bare base64, no data URL
        "data:image/png,rawbytes",  # not base64
        "data:;base64,AAAA",  # no media type
        "http://example.com/mask.png",
        "data:image/png;base64,@@@@",  # not base64 characters
        "data:image/png;base64,AAA",  # bad padding
    ],
)
def test_given_inline_mask_that_is_not_a_base64_data_url_when_parsed_then_mask_data_url_invalid(mask):
    raw = doc(parent_task_id="p1", mask=mask)
    assert rejected_code(parse_inline_job, raw, LIMITS, MAX_MASK) == "MASK_DATA_URL_INVALID"


def test_given_inline_mask_over_the_mask_limit_when_parsed_then_mask_too_large():
    raw = doc(parent_task_id="p1", mask=data_url(b"\0" * 3000))
    assert rejected_code(parse_inline_job, raw, LIMITS, 1000) == "MASK_TOO_LARGE"


def test_given_data_url_with_parameters_and_line_breaks_when_parsed_then_it_decodes():
    mask = mask_png((32, 32), (0, 0, 8, 8))
    encoded = base64.encodebytes(mask).decode()  # wrapped at 76 characters, like many tools do
    assert "\n" in encoded

    inline = parse_mask_data_url(f"  data:IMAGE/PNG;name=mask.png;base64,{encoded}  ", MAX_MASK)

    assert inline.data == mask
    assert inline.declared_type == "image/png"


def test_given_mask_exactly_at_the_limit_when_parsed_then_it_is_accepted():
    assert parse_mask_data_url(data_url(b"\1" * 1000), 1000).data == b"\1" * 1000


def test_given_mask_data_url_with_jpeg_type_when_parsed_then_declared_type_is_kept():
    assert parse_mask_data_url(data_url(b"\xff\xd8\xff", "image/jpeg"), MAX_MASK).declared_type == "image/jpeg"


# ---- chained jobs: `index` beside an imagine parent, or `imagine` instead of a parent ----------------
def chain(**fields) -> bytes:
    return json.dumps({"imagine": {"prompt": "a lighthouse"}} | fields).encode()


@pytest.mark.parametrize("index", ["2", 2, " 2 "])
def test_given_an_index_beside_the_parent_when_parsed_then_the_job_starts_with_the_upscale(index):
    spec = parse_job_spec(doc(parent_task_id="grid-1", index=index))

    assert (spec.index, spec.first_stage.value, spec.is_chain) == ("2", "upscale", True)


def test_given_imagine_when_parsed_then_the_job_starts_from_the_prompt_with_its_defaults():
    spec = parse_job_spec(chain(prompt="a red balloon"))

    assert spec.parent_task_id is None and spec.first_stage.value == "imagine"
    assert spec.imagine is not None and (spec.imagine.prompt, spec.imagine.aspect_ratio) == ("a lighthouse", "1:1")
    assert spec.index == "1", "the first image of the grid unless told"
    assert spec.prompt == "a red balloon", "the top-level prompt is the inpaint's"


def test_given_a_plain_job_when_parsed_then_it_is_one_inpaint_stage():
    spec = parse_job_spec(doc(parent_task_id="up-1"))

    assert (spec.first_stage.value, spec.is_chain, spec.index) == ("inpaint", False, None)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (doc(parent_task_id="g", index="5"), "INDEX_INVALID"),
        (doc(parent_task_id="g", index=True), "INDEX_INVALID"),
        (doc(parent_task_id="g", index=1.5), "INDEX_INVALID"),
        (chain(index="1", imagine={"prompt": "x", "index": "2"}), "INDEX_INVALID"),
        (chain(imagine="a lighthouse"), "IMAGINE_INVALID"),
        (chain(imagine={"index": "1"}), "IMAGINE_INVALID"),
        (chain(imagine={"prompt": "  "}), "IMAGINE_INVALID"),
        (chain(imagine={"prompt": "x", "aspect_ratio": "16x9"}), "ASPECT_RATIO_INVALID"),
        (chain(imagine={"prompt": "x", "aspect_ratio": "0:1"}), "ASPECT_RATIO_INVALID"),
        (chain(imagine={"prompt": "x", "aspect_ratio": 1.5}), "ASPECT_RATIO_INVALID"),
        (chain(parent_task_id="up-1"), "PARENT_AMBIGUOUS"),
        (chain(mask={"regions": [{"rect": [0, 0, 10, 10]}]}), "MASK_REGIONS_INVALID"),
    ],
)
def test_given_an_unusable_chain_when_parsed_then_it_is_rejected_with_its_code(raw, code):
    assert rejected_code(parse_job_spec, raw) == code


def test_given_fraction_regions_in_a_chain_from_a_prompt_then_they_are_accepted():
    spec = parse_job_spec(chain(mask={"regions": [{"rect": [0.1, 0.1, 0.5, 0.5]}], "units": "fraction"}))

    assert spec.mask_regions is not None and spec.imagine is not None and spec.imagine.ratio == 1.0
