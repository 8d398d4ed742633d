"""Given trouble that passes (an image host's name not looked up just now, a parent image that
trickles, Fetch saying "not found" about a task the job itself paid for), when a job meets it, then
the job is held or its copy retried, never rejected or failed, and it completes once the trouble is
gone: a rejection would lose what the job paid for.

The lookups: the simulator's images are named `images.simulator.test` for the test (the local stack
names them by IP, which is never looked up), and the running submit and completion functions get a
resolver stub for that name, as the production code takes one, and an address rule that admits the
simulator's loopback address.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any

import pytest
from vary_region.image_hosts.url_policy import IPAddress, is_public_address
from vary_region.settings import ImageOrigin

from tests.support.builders import job_json, new_job_id, put_files, upload_job
from tests.support.waits import FINAL_STATUSES, get_job, job_item, settle_stack, wait_for_job, wait_until

NAME = "images.simulator.test"
STAGES = ("imagine", "upscale", "inpaint")
PARENT_READ_BOUND = 3.0  # the stack's IMAGE_TIMEOUT_SECONDS (tests/conftest.py): the parent read's own limit


@pytest.fixture()
def settled(stack, sim):
    settle_stack(stack, sim)
    return sim


class Lookups:
    """DNS for NAME: "try again" (EAI_AGAIN) while `failing` or for the first `fail_first` lookups,
    the simulator's address otherwise."""

    def __init__(self, fail_first: int = 0) -> None:
        self.failing = False
        self.fail_first = fail_first
        self.failed = 0
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        assert host == NAME, f"only {NAME} is looked up in these tests, not {host}"
        with self._lock:
            if self.failing or self.fail_first > 0:
                self.fail_first -= 1
                self.failed += 1
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return ["127.0.0.1"]


def loopback_admitted(ip: IPAddress) -> bool:
    return ip.is_loopback or is_public_address(ip)


def name_the_image_host(stack: Any, sim: Any, monkeypatch: Any, *, reads: Lookups, copies: Lookups) -> None:
    """Images made from now on are named NAME; the parent reads look it up with `reads`, the result
    copies with `copies`."""
    monkeypatch.setattr(sim, "base_url", f"http://{NAME}:{sim.port}")
    origin = ImageOrigin("http", NAME, sim.port)  # plain http for a name: built directly, as settings refuse it
    readers = [module.submitter._parents for module in stack.functions["submit"].modules]
    copiers = [module.completer._copier for module in stack.functions["completion"].modules]
    for users, lookups in ((readers, reads), (copiers, copies)):
        for user in users:
            monkeypatch.setattr(user, "_allowed", (*user._allowed, origin))
            monkeypatch.setattr(user, "_resolver", lookups)
            monkeypatch.setattr(user, "_address_allowed", loopback_admitted)


def grid_chain(s3: Any, bucket: str, job_id: str) -> str:
    """A chain from an imagine grid: upscale-1x (first stage), then inpaint (reads the job's own upscale)."""
    document = {
        "parent_task_id": f"grid-{uuid.uuid4().hex[:10]}",
        "index": 2,
        "mask": {"regions": [{"rect": [0.25, 0.25, 0.5, 0.5]}], "units": "fraction"},
    }
    key = f"inbox/{job_id}.json"
    put_files(s3, bucket, [(key, json.dumps(document).encode(), "application/json")])
    return key


def between_stages(stack: Any, s3: Any, bucket: str, table: Any, job_id: str) -> tuple[str, Any]:
    """Run a grid chain's first stage and stop it before its inpaint stage is handed on: returns the
    chain's inbox key and the real hand-on, which the test calls once its trouble is in place."""
    completer = stack.functions["completion"].module.completer
    handed: list[str] = []
    wake, completer._wake = completer._wake, handed.append
    try:
        grid_chain(s3, bucket, job_id)
        wait_until(lambda: handed, timeout=30, message="the upscale stage finished")
    finally:
        completer._wake = wake
    item = job_item(table, job_id)
    assert (item.get("stage"), bool(item.get("upscale_task_id"))) == ("inpaint", True), item
    return handed[0], wake


def held_or_ended(table: Any, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The item once the open stage is held for its parent, or once the job ended (which fails the test)."""

    def seen() -> dict[str, Any] | None:
        item = get_job(table, job_id)
        if item and (item.get("held_reason") == "PARENT_UNAVAILABLE" or item.get("status") in FINAL_STATUSES):
            return item
        return None

    return wait_until(seen, timeout, message=f"job {job_id} held or ended")


# ---- an image host's name not looked up just now ----------------------------------------------------
def test_given_the_image_hosts_lookup_failing_for_a_moment_at_completion_then_the_copy_is_retried_and_completes(
    stack, settled, s3, bucket, table, provider, monkeypatch
):
    copies = Lookups(fail_first=1)  # the first result URL checked: its name gets no answer
    name_the_image_host(stack, settled, monkeypatch, reads=Lookups(), copies=copies)
    job_id = new_job_id("dns-copy")
    upload_job(s3, bucket, job_id, spec=job_json(parent_task_id=f"dns-{uuid.uuid4().hex[:10]}"))

    item = wait_for_job(table, job_id, timeout=40)

    assert item["status"] == "COMPLETED", item.get("error")
    assert copies.failed == 1, "the copy met the failed lookup, and was tried again"
    assert provider.inpaint_calls(job_id, 200) == 1


def test_given_the_image_hosts_lookup_failing_for_a_moment_at_a_chains_later_stage_then_it_is_held_not_failed(
    stack, settled, s3, bucket, table, provider, monkeypatch
):
    reads = Lookups()
    name_the_image_host(stack, settled, monkeypatch, reads=reads, copies=Lookups())
    job_id = new_job_id("dns-chain")
    key, hand_on = between_stages(stack, s3, bucket, table, job_id)
    reads.failing = True  # the upscale's image: its host's name gets no answer

    hand_on(key)
    item = held_or_ended(table, job_id)

    assert item["status"] not in FINAL_STATUSES, item.get("error")
    assert (item["held_reason"], item["stage"]) == ("PARENT_UNAVAILABLE", "inpaint")
    assert reads.failed >= 1 and provider.stage_calls(job_id, "inpaint") == 0
    reads.failing = False
    item = wait_for_job(table, job_id, timeout=40)
    assert item["status"] == "COMPLETED", item.get("error")
    assert [provider.stage_calls(job_id, stage, 200) for stage in STAGES] == [0, 1, 1]


# ---- a parent image that trickles --------------------------------------------------------------------
def test_given_a_parent_image_that_trickles_then_its_read_ends_within_its_bound_and_the_job_is_held(
    stack, settled, s3, bucket, table, provider, monkeypatch
):
    # Two bytes a second: the 24 bytes that hold a PNG's size take 12 s, a 4 KiB read half an hour.
    settled.set_faults(parent_image_bytes_per_second=2)
    reader = stack.functions["submit"].module.submitter._parents
    began: list[float] = []
    took: list[float] = []
    read = reader.read

    def timed_read(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        began.append(started)
        try:
            return read(*args, **kwargs)
        finally:
            took.append(time.monotonic() - started)

    monkeypatch.setattr(reader, "read", timed_read)
    job_id = new_job_id("trickle")
    upload_job(s3, bucket, job_id, spec=job_json(parent_task_id=f"slow-{uuid.uuid4().hex[:10]}"))

    wait_until(lambda: began, timeout=20, message="the parent read began")
    # Fetch and a loaded machine add a little; an unbounded read would take half an hour. Judged the
    # moment the read is over or past its bound: a read still running then is the failure itself.
    limit = PARENT_READ_BOUND + 5
    wait_until(lambda: took or time.monotonic() - began[0] > limit, timeout=limit + 5, interval=0.1)
    assert took, f"the parent read still ran {time.monotonic() - began[0]:.1f}s after it began"
    assert took[0] < limit, f"the parent read took {took[0]:.1f}s"
    item = held_or_ended(table, job_id)
    assert item["status"] not in FINAL_STATUSES, item.get("error")
    assert item["held_reason"] == "PARENT_UNAVAILABLE"
    assert provider.inpaint_calls(job_id) == 0
    settled.set_faults(parent_image_bytes_per_second=None)
    item = wait_for_job(table, job_id, timeout=40)
    assert item["status"] == "COMPLETED", item.get("error")
    assert provider.inpaint_calls(job_id, 200) == 1


# ---- Fetch "not found" about the job's own task -----------------------------------------------------
@pytest.mark.parametrize("status", [400, 422])
def test_given_fetch_answering_not_found_about_the_chains_own_upscale_then_it_is_held_and_completes_after(
    stack, settled, s3, bucket, table, provider, monkeypatch, status
):
    from vary_region_local.simulator import _error

    job_id = new_job_id(f"own-{status}")
    key, hand_on = between_stages(stack, s3, bucket, table, job_id)
    own = job_item(table, job_id)["upscale_task_id"]
    fetch = settled._routes[("POST", "/fetch")]

    def fetch_not_knowing_own(body: bytes) -> Any:
        if json.loads(body).get("task_id") == own:
            return _error(status, "invalid task id")
        return fetch(body)

    monkeypatch.setitem(settled._routes, ("POST", "/fetch"), fetch_not_knowing_own)

    hand_on(key)
    item = held_or_ended(table, job_id)

    assert item["status"] not in FINAL_STATUSES, item.get("error")
    assert (item["held_reason"], item["stage"]) == ("PARENT_UNAVAILABLE", "inpaint")
    assert provider.fetches(own) >= 1 and provider.stage_calls(job_id, "inpaint") == 0
    monkeypatch.setitem(settled._routes, ("POST", "/fetch"), fetch)  # the provider knows its task again
    item = wait_for_job(table, job_id, timeout=40)
    assert item["status"] == "COMPLETED", item.get("error")
    assert [provider.stage_calls(job_id, stage, 200) for stage in STAGES] == [0, 1, 1]
