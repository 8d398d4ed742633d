"""Given a chained job (imagine -> upscale -> inpaint) on a table of the test's own, when its stages
are claimed, advanced, released and reported on in every order AWS can produce, then each stage is
claimed at most once, a stage is claimed only once the stage before it finished, and a report about
a stage the job has left changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from vary_region.core.stages import JobStage
from vary_region.store.job_table import JobTable, JudgedStage

from tests.support.builders import new_job_id
from tests.support.waits import job_item

pytestmark = pytest.mark.generation_blind

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _claim(store: JobTable, job_id: str, token: str, stage: JobStage, *, first: bool) -> bool:
    return store.claim_submission(
        job_id, token, f"hash-{token}", None, "p", {}, NOW, stage=stage, first=first, inbox_key=f"inbox/{job_id}.json"
    )


def _imagine_done(store: JobTable) -> str:
    """A job whose imagine task finished and was confirmed: its upscale stage is open, unclaimed."""
    job_id = new_job_id("chain")
    assert store.record_received(job_id, NOW)
    assert _claim(store, job_id, "t-imagine", JobStage.IMAGINE, first=True)
    assert store.mark_submitted(job_id, "t-imagine", "task-imagine", NOW, JobStage.IMAGINE)
    assert store.advance_stage(job_id, JobStage.IMAGINE, "task-imagine", JobStage.UPSCALE, NOW)
    return job_id


def test_a_later_stage_is_claimed_once_whatever_the_number_of_deliveries(store, own_table):
    job_id = _imagine_done(store)
    slots = store.slots_in_use()

    assert _claim(store, job_id, "t-up-1", JobStage.UPSCALE, first=False)
    assert not _claim(store, job_id, "t-up-2", JobStage.UPSCALE, first=False), "a second delivery loses"
    assert not _claim(store, job_id, "t-any", JobStage.IMAGINE, first=True), "nor is the first stage claimed again"

    item = job_item(own_table, job_id)
    assert (item["submit_claim"], item["claim_stage"], item["stage"]) == ("t-up-1", "upscale", "upscale")
    assert item["webhook_secret_hash_upscale"] == "hash-t-up-1"
    assert item["webhook_secret_hash_imagine"] == "hash-t-imagine", "each stage keeps its own secret"
    assert item["imagine_task_id"] == "task-imagine"
    assert store.slots_in_use() == slots + 1


def test_no_stage_is_claimed_before_the_stage_before_it_finished(store):
    job_id = new_job_id("chain")
    assert store.record_received(job_id, NOW)
    assert _claim(store, job_id, "t-imagine", JobStage.IMAGINE, first=True)
    assert store.mark_submitted(job_id, "t-imagine", "task-imagine", NOW, JobStage.IMAGINE)

    assert not _claim(store, job_id, "t-up", JobStage.UPSCALE, first=False), "the imagine is still running"
    assert not _claim(store, job_id, "t-in", JobStage.INPAINT, first=False)


def test_a_stage_moves_on_only_from_itself_and_with_its_own_task(store, own_table):
    job_id = _imagine_done(store)
    assert _claim(store, job_id, "t-up", JobStage.UPSCALE, first=False)
    assert store.mark_submitted(job_id, "t-up", "task-up", NOW, JobStage.UPSCALE)

    assert not store.advance_stage(job_id, JobStage.UPSCALE, "task-other", JobStage.INPAINT, NOW)
    assert not store.advance_stage(job_id, JobStage.IMAGINE, "task-imagine", JobStage.UPSCALE, NOW), "no going back"
    assert store.advance_stage(job_id, JobStage.UPSCALE, "task-up", JobStage.INPAINT, NOW)
    assert not store.advance_stage(job_id, JobStage.UPSCALE, "task-up", JobStage.INPAINT, NOW), "a repeat loses"

    item = job_item(own_table, job_id)
    assert item["stage"] == "inpaint" and "task_id" not in item and item["upscale_task_id"] == "task-up"


def test_a_report_about_a_stage_the_job_has_left_changes_nothing(store, own_table):
    job_id = _imagine_done(store)
    # The imagine's late progress and final reports, after the job moved on to its upscale.
    assert not store.record_progress(job_id, "task-imagine", 90, NOW, stage=JobStage.IMAGINE)
    assert not store.record_final_signal(job_id, "task-imagine", NOW, JobStage.IMAGINE)
    # The reconciler's form (no stage): only the task the job has now.
    assert not store.record_progress(job_id, "task-imagine", 90, NOW)

    assert "task_id" not in job_item(own_table, job_id)
    assert _claim(store, job_id, "t-up", JobStage.UPSCALE, first=False), "the next stage can still be claimed"


def test_a_later_stage_given_back_keeps_the_job_claimed_and_can_be_won_again(store, own_table):
    job_id = _imagine_done(store)
    slots = store.slots_in_use()
    assert _claim(store, job_id, "t-up-1", JobStage.UPSCALE, first=False)

    assert store.release_claim(job_id, "t-up-1", NOW, first=False)

    item = job_item(own_table, job_id)
    assert item["submit_claim"] == "t-up-1", "the paid imagine stays on record: the job is never a new one"
    job = store.get(job_id)
    assert job is not None and job.was_submitted and not job.stage_claimed, "the next delivery may claim it"
    assert store.slots_in_use() == slots
    assert not _claim(store, job_id, "t-again", JobStage.IMAGINE, first=True)
    assert _claim(store, job_id, "t-up-2", JobStage.UPSCALE, first=False)


def test_a_later_stage_whose_task_is_known_is_never_given_back(store):
    job_id = _imagine_done(store)
    assert _claim(store, job_id, "t-up", JobStage.UPSCALE, first=False)
    assert store.mark_submitted(job_id, "t-up", "task-up", NOW, JobStage.UPSCALE)

    assert not store.release_claim(job_id, "t-up", NOW, first=False)
    assert not _claim(store, job_id, "t-up-2", JobStage.UPSCALE, first=False)


def test_a_late_submission_write_of_a_stage_that_already_finished_gives_the_next_stage_nothing(store, own_table):
    job_id = new_job_id("chain")
    assert store.record_received(job_id, NOW)
    assert _claim(store, job_id, "t-imagine", JobStage.IMAGINE, first=True)
    # The imagine's final webhook outran the submitter's own write; the stage finished and moved on.
    assert store.record_final_signal(job_id, "task-imagine", NOW, JobStage.IMAGINE)
    assert store.advance_stage(job_id, JobStage.IMAGINE, "task-imagine", JobStage.UPSCALE, NOW)

    assert not store.mark_submitted(job_id, "t-imagine", "task-imagine", NOW, JobStage.IMAGINE)

    item = job_item(own_table, job_id)
    assert "task_id" not in item and item["status"] == "PROCESSING" and item["stage"] == "upscale"
    assert _claim(store, job_id, "t-up", JobStage.UPSCALE, first=False)


def test_a_chain_is_failed_between_stages_only_while_its_next_stage_is_unclaimed(store):
    from vary_region.core.errors import ErrorStage, JobError

    job_id = _imagine_done(store)
    assert _claim(store, job_id, "t-up", JobStage.UPSCALE, first=False)
    error = JobError("JOB_FILES_MISSING", "gone", ErrorStage.INTAKE)

    assert not store.mark_failed(job_id, error, NOW, JudgedStage(JobStage.UPSCALE)), "another delivery paid it"
    assert store.release_claim(job_id, "t-up", NOW, first=False)
    assert store.mark_failed(job_id, error, NOW, JudgedStage(JobStage.UPSCALE))
