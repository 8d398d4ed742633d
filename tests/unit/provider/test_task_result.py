"""Reading what APIFRAME says about a task: loose on shape, strict on meaning."""

from __future__ import annotations

import pytest
from vary_region.provider.task_result import MalformedTaskPayload, TaskState, parse_task_result

GRID = "https://cdn.apiframe.pro/images/29e9-grid.png"
IMAGES = [f"https://cdn.apiframe.pro/images/29e9-{i}.png" for i in range(1, 5)]


def finished(**extra):
    return {"task_id": "29e9", "task_type": "inpaint", "original_image_url": GRID, "image_urls": IMAGES, **extra}


def test_given_documented_finished_shape_without_status_when_parsed_then_task_is_finished_with_five_urls():
    result = parse_task_result(finished())

    assert result.task_id == "29e9"
    assert result.state is TaskState.FINISHED
    assert result.provider_status is None
    assert result.grid_url == GRID
    assert result.image_urls == tuple(IMAGES)
    assert result.error_message is None


def test_given_finished_result_when_urls_are_listed_then_order_is_grid_then_1_to_4():
    urls = parse_task_result(finished()).result_urls

    assert list(urls) == ["grid", "1", "2", "3", "4"]
    assert list(urls.values()) == [GRID, *IMAGES]


def test_given_finished_result_without_grid_when_urls_are_listed_then_only_numbered_images_appear():
    payload = finished()
    del payload["original_image_url"]

    assert list(parse_task_result(payload).result_urls) == ["1", "2", "3", "4"]


@pytest.mark.parametrize("status", ["finished", "FINISHED", " Finished "])
def test_given_status_finished_and_no_image_urls_when_parsed_then_task_is_finished_with_no_urls(status):
    result = parse_task_result({"task_id": "t1", "status": status})

    assert result.state is TaskState.FINISHED
    assert result.provider_status == "finished"
    assert result.image_urls == ()
    assert result.result_urls == {}


def test_given_image_urls_with_non_string_entries_when_parsed_then_they_count_and_make_it_incomplete():
    result = parse_task_result(finished(image_urls=[IMAGES[0], None, 7, IMAGES[1]]))

    # Kept in place (as ""), so four entries with two non-URLs are not mistaken for a whole result.
    assert result.image_urls == (IMAGES[0], "", "", IMAGES[1])
    assert result.incomplete_reason() == "image entries that are not URLs"


@pytest.mark.parametrize("image_urls", [[], None, "https://cdn.apiframe.pro/1.png", {"1": "x"}])
def test_given_no_usable_image_list_and_no_status_when_parsed_then_task_is_still_running(image_urls):
    result = parse_task_result({"task_id": "t1", "image_urls": image_urls})

    assert result.state is TaskState.RUNNING
    assert result.image_urls == ()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"message": "Midjourney refused the prompt"}, "Midjourney refused the prompt"),
        ({"error": "  banned word  "}, "banned word"),
        ({"errors": [{"msg": "Invalid parent task"}]}, "Invalid parent task"),
        ({"message": "", "error": "fallback error"}, "fallback error"),
    ],
)
def test_given_failed_task_with_a_message_when_parsed_then_the_message_is_kept(payload, message):
    result = parse_task_result({"task_id": "t1", "status": "failed", **payload})

    assert result.state is TaskState.FAILED
    assert result.error_message == message


@pytest.mark.parametrize("extra", [{}, {"errors": []}, {"errors": [{}]}, {"error": {"code": 1}}, {"message": "  "}])
def test_given_failed_task_without_a_usable_message_when_parsed_then_a_generic_message_is_given(extra):
    result = parse_task_result({"task_id": "t1", "status": "failed", **extra})

    assert result.state is TaskState.FAILED
    assert result.error_message
    assert "failed" in result.error_message


def test_given_failed_task_with_a_huge_message_when_parsed_then_the_message_is_bounded():
    result = parse_task_result({"task_id": "t1", "status": "FAILED", "message": "x" * 50_000})

    assert result.state is TaskState.FAILED
    assert result.error_message is not None
    assert len(result.error_message) <= 1000


def test_given_status_failed_and_image_urls_when_parsed_then_failed_wins():
    result = parse_task_result(finished(status="failed", message="nope"))

    assert result.state is TaskState.FAILED
    assert result.error_message == "nope"


@pytest.mark.parametrize("status", ["pending", "staged", "starting", "processing", "retry", "retrying", None, "", 5])
def test_given_any_other_status_without_images_when_parsed_then_task_is_running(status):
    result = parse_task_result({"task_id": "t1", "status": status})

    assert result.state is TaskState.RUNNING
    assert result.error_message is None


@pytest.mark.parametrize(
    ("percentage", "expected"),
    [
        ("80", 80),
        ("80%", 80),
        (" 80 % ", 80),
        (80, 80),
        (80.5, 80),
        ("80.5", 80),
        ("0", 0),
        ("100", 100),
        (150, 100),
        ("-5", 0),
        ("garbage", None),
        ("", None),
        (None, None),
        (True, None),
        ([80], None),
        ({"value": 80}, None),
        ("nan", None),
    ],
)
def test_given_percentage_in_any_form_when_parsed_then_it_is_a_bounded_int_or_none(percentage, expected):
    result = parse_task_result({"task_id": "t1", "status": "processing", "percentage": percentage})

    assert result.state is TaskState.RUNNING
    assert result.percentage == expected


@pytest.mark.parametrize("percentage", ["inf", "Infinity", "-inf", float("inf")])
def test_given_infinite_percentage_when_parsed_then_it_is_tolerated(percentage):
    result = parse_task_result({"task_id": "t1", "status": "processing", "percentage": percentage})

    assert result.state is TaskState.RUNNING
    assert result.percentage in (None, 0, 100)


def test_given_unknown_extra_fields_when_parsed_then_they_are_tolerated():
    result = parse_task_result(
        finished(actions=["upscale1"], seed=123, nested={"a": [1, {"b": None}]}, percentage="100", eta=None)
    )

    assert result.state is TaskState.FINISHED
    assert result.percentage == 100
    assert list(result.result_urls) == ["grid", "1", "2", "3", "4"]


def test_given_task_id_with_spaces_when_parsed_then_it_is_trimmed():
    assert parse_task_result({"task_id": "  t1 \n"}).task_id == "t1"


@pytest.mark.parametrize("payload", [None, [], [finished()], "29e9", 42, b"{}"])
def test_given_payload_that_is_not_an_object_when_parsed_then_malformed(payload):
    with pytest.raises(MalformedTaskPayload):
        parse_task_result(payload)


@pytest.mark.parametrize("task_id", [None, "", "   ", 42, ["t1"]])
def test_given_payload_without_a_usable_task_id_when_parsed_then_malformed(task_id):
    payload = finished()
    payload["task_id"] = task_id

    with pytest.raises(MalformedTaskPayload):
        parse_task_result(payload)


def test_given_payload_missing_task_id_when_parsed_then_malformed():
    payload = finished()
    del payload["task_id"]

    with pytest.raises(MalformedTaskPayload):
        parse_task_result(payload)


def test_given_empty_grid_url_when_parsed_then_grid_is_absent():
    assert parse_task_result(finished(original_image_url="")).grid_url is None


@pytest.mark.parametrize("status", ["pending", "staged", "starting", "processing", "retry", "retrying", "PROCESSING"])
def test_given_a_running_status_and_image_urls_when_parsed_then_the_task_is_still_running(status):
    # A task at work may already list images: it is not finished until the provider says so.
    assert parse_task_result(finished(status=status)).state is TaskState.RUNNING


GRID = "https://cdn.apiframe.pro/g.png"
FOUR = [f"https://cdn.apiframe.pro/{i}.png" for i in range(1, 5)]


@pytest.mark.parametrize(
    "grid, images, reason",
    [
        (GRID, FOUR[:1], "1 images instead of 4"),
        (None, FOUR, "no grid"),
        (GRID, [*FOUR, FOUR[0] + "?again"], "5 images instead of 4"),
        (GRID, [*FOUR[:3], FOUR[0]], "repeated image URLs"),
        (GRID, [*FOUR[:3], GRID], "repeated image URLs"),
        (GRID, [], "0 images instead of 4"),
        (GRID, [*FOUR[:3], None], "image entries that are not URLs"),
        (GRID, [*FOUR[:3], ""], "image entries that are not URLs"),
        (GRID, [*FOUR, None], "5 images instead of 4"),
    ],
)
def test_given_a_finished_result_that_is_not_a_grid_and_four_images_then_it_is_incomplete(grid, images, reason):
    payload = {"task_id": "t1", "status": "finished", "image_urls": images} | (
        {"original_image_url": grid} if grid else {}
    )
    assert reason in (parse_task_result(payload).incomplete_reason() or "")


def test_given_a_grid_and_four_distinct_images_then_the_result_is_whole():
    payload = {"task_id": "t1", "original_image_url": GRID, "image_urls": FOUR}
    assert parse_task_result(payload).incomplete_reason() is None


# ---- an upscale's result: one image_url (task type "upscale#1".."upscale#4") -----------------------
def test_given_a_finished_upscale_when_parsed_then_its_one_image_is_the_whole_result():
    result = parse_task_result(
        {"task_id": "u1", "task_type": "upscale#2", "image_url": " https://cdn.apiframe.pro/u.png "}
    )

    assert result.state is TaskState.FINISHED
    assert result.image_url == "https://cdn.apiframe.pro/u.png"
    assert result.incomplete_reason(single_image=True) is None


@pytest.mark.parametrize("image_url", [None, "", "  ", 7])
def test_given_an_upscale_finished_without_an_image_then_it_is_not_a_result(image_url):
    result = parse_task_result(
        {"task_id": "u1", "task_type": "upscale#1", "status": "finished", "image_url": image_url}
    )

    assert result.state is TaskState.FINISHED
    assert result.incomplete_reason(single_image=True) == "no image_url"


def test_given_an_image_url_on_a_task_that_is_no_upscale_then_it_does_not_make_it_finished():
    result = parse_task_result({"task_id": "i1", "task_type": "inpaint", "image_url": "https://cdn.apiframe.pro/x.png"})

    assert result.state is TaskState.RUNNING


def test_given_a_running_upscale_with_a_string_percentage_then_it_runs():
    result = parse_task_result({"task_id": "u1", "task_type": "upscale#1", "status": "processing", "percentage": "40"})

    assert (result.state, result.percentage) == (TaskState.RUNNING, 40)
