"""Which S3 keys start a job, and where a job's outputs land."""

from __future__ import annotations

import pytest
from vary_region.core.keys import InboxObjectKind, ResultKeys, parse_inbox_key


@pytest.mark.parametrize(
    ("key", "kind", "declared"),
    [
        ("inbox/job-1/job.json", InboxObjectKind.SPEC, None),
        ("inbox/job-1/mask.png", InboxObjectKind.MASK, "image/png"),
        ("inbox/job-1/mask.jpg", InboxObjectKind.MASK, "image/jpeg"),
        ("inbox/job-1/mask.jpeg", InboxObjectKind.MASK, "image/jpeg"),
        ("inbox/job-1/mask.webp", InboxObjectKind.MASK, "image/webp"),
        ("inbox/job-1/mask.PNG", InboxObjectKind.MASK, "image/png"),
        ("inbox/job-1/mask.JpEg", InboxObjectKind.MASK, "image/jpeg"),
        ("inbox/job-1/mask.WEBP", InboxObjectKind.MASK, "image/webp"),
    ],
)
def test_given_folder_form_key_when_parsed_then_job_id_kind_and_mask_type_are_known(key, kind, declared):
    parsed = parse_inbox_key(key)

    assert parsed is not None
    assert parsed.job_id == "job-1"
    assert parsed.kind is kind
    assert parsed.key == key
    assert parsed.declared_mask_type == declared


@pytest.mark.parametrize("key", ["inbox/job-7.json", "inbox/job-7.JSON"])
def test_given_inline_form_key_when_parsed_then_it_is_an_inline_job(key):
    parsed = parse_inbox_key(key)

    assert parsed is not None
    assert parsed.job_id == "job-7"
    assert parsed.kind is InboxObjectKind.INLINE
    assert parsed.declared_mask_type is None


@pytest.mark.parametrize(
    "key",
    [
        "results/job-1/job.json",  # outputs never start a job
        "results/job-1/grid.png",
        "other/job-1/job.json",
        "job-1/job.json",
        "inbox/",
        "inbox/.json",  # empty job id
        "inbox//job.json",  # empty job id
        "inbox//mask.png",
        "inbox/job-1/",  # the "folder" placeholder the console creates
        "inbox/job-1",  # neither a folder nor a .json file
        "inbox/job-1.png",
        "inbox/job-1/sub/job.json",  # nested deeper
        "inbox/a/b/mask.png",
        "inbox/job-1/notes.txt",
        "inbox/job-1/Job.json",
        "inbox/job-1/job.json.bak",
        "inbox/job-1/mask.gif",
        "inbox/job-1/mask.png.tmp",
        "inbox/job-1/mask",
        "inbox/job-1/Mask.png",
        "inbox/job-1/my-mask.png",
        "inbox/./job.json",
        "inbox/../job.json",
        "inbox/job\x00one/job.json",  # control characters in the id
        "inbox/job\none/mask.png",
        "inbox/job\tone.json",
        "inbox/job\x7fone/job.json",
        "Inbox/job-1/job.json",  # the prefix is case-sensitive, like S3 keys
    ],
)
def test_given_key_outside_the_job_layout_when_parsed_then_it_is_ignored(key):
    assert parse_inbox_key(key) is None


def test_given_job_id_longer_than_the_limit_when_parsed_then_it_is_ignored():
    assert parse_inbox_key(f"inbox/{'a' * 200}/job.json") is not None
    assert parse_inbox_key(f"inbox/{'a' * 201}/job.json") is None


@pytest.mark.parametrize(
    "job_id",
    ["my job 1", "café-crème", "日本語のジョブ", "emoji 🎈 job", " leading and trailing ", "a+b%20c", "x.y.z"],
)
def test_given_unicode_or_spaces_in_job_id_when_parsed_then_the_id_is_kept_verbatim(job_id):
    for key, kind in [
        (f"inbox/{job_id}/job.json", InboxObjectKind.SPEC),
        (f"inbox/{job_id}/mask.png", InboxObjectKind.MASK),
        (f"inbox/{job_id}.json", InboxObjectKind.INLINE),
    ]:
        parsed = parse_inbox_key(key)
        assert parsed is not None, key
        assert (parsed.job_id, parsed.kind) == (job_id, kind)


def test_given_spec_and_mask_of_same_job_when_parsed_then_they_share_the_job_id():
    spec = parse_inbox_key("inbox/same job/job.json")
    mask = parse_inbox_key("inbox/same job/mask.webp")

    assert spec is not None and mask is not None
    assert spec.job_id == mask.job_id == "same job"


def test_given_custom_inbox_prefix_when_parsed_then_only_that_prefix_counts():
    assert parse_inbox_key("incoming/j/job.json", inbox_prefix="incoming/") is not None
    assert parse_inbox_key("inbox/j/job.json", inbox_prefix="incoming/") is None


@pytest.mark.parametrize("job_id", ["job-1", "inbox", "my job", "日本"])
def test_given_any_job_id_when_result_keys_are_built_then_none_is_under_inbox(job_id):
    keys = ResultKeys(job_id)
    all_keys = [keys.result_json, keys.error_json, *(keys.image(n) for n in ("grid", "1", "2", "3", "4"))]

    assert all(k.startswith(f"results/{job_id}/") for k in all_keys)
    assert not any(k.startswith("inbox/") for k in all_keys)
    assert all(parse_inbox_key(k) is None for k in all_keys)
    assert keys.image("grid") == f"results/{job_id}/grid.png"
    assert keys.image("3") == f"results/{job_id}/3.png"
    assert keys.result_json == f"results/{job_id}/result.json"
    assert keys.error_json == f"results/{job_id}/error.json"
