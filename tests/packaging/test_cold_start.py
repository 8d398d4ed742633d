"""What a handler's cold start loads, with X-Ray tracing on as the template deploys it.

Each check imports a handler in a fresh interpreter with the function's Lambda environment from
template.yaml (the same one `make bench` uses), because sys.modules is what is being observed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.import_bench import LAYER, LambdaFunction, runtime_environment, template_functions

FUNCTIONS = {function.name: function for function in template_functions()}

_PROBE = """
import json, sys
import app
import botocore.client
loaded = {name: name in sys.modules for name in (
    "requests", "sqlite3", "aws_lambda_powertools.utilities.parameters", "vary_region.completion.image_copier",
    "aws_lambda_powertools.event_handler", "aws_lambda_powertools.utilities.data_classes",
    "aws_lambda_powertools.utilities.batch", "PIL", "vary_region.provider.account_limit",
)}
botocore_traced = hasattr(botocore.client.BaseClient._make_api_call, "__wrapped__")
from vary_region.observability import traced_http_session
traced_http_session()
import requests
print(json.dumps({
    "loaded_at_import": loaded,
    "botocore_traced": botocore_traced,
    "requests_traced_after_first_session": hasattr(requests.Session.request, "__wrapped__"),
}))
"""


def _probe(function: LambdaFunction, **environment: str) -> dict:
    env = runtime_environment(function, LAYER) | environment  # tracing on, as `Tracing: Active` deploys it
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=function.source,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_given_tracing_on_when_a_handler_is_imported_then_only_botocore_is_patched_and_requests_waits(name):
    probe = _probe(FUNCTIONS[name])

    loaded = probe["loaded_at_import"]
    # X-Ray's patch_all would import requests, sqlite3 and more during every cold start.
    assert (loaded["requests"], loaded["sqlite3"]) == (False, False)
    # Powertools Parameters waits for the first read of the API key (progress webhooks never read it).
    assert loaded["aws_lambda_powertools.utilities.parameters"] is False
    assert probe["botocore_traced"] is True
    # The first HTTP session brings requests in, traced like botocore.
    assert probe["requests_traced_after_first_session"] is True


@pytest.mark.parametrize(
    "name, loads_copier", [("submit", False), ("webhook", False), ("reconciler", False), ("completion", True)]
)
def test_given_a_function_when_imported_then_only_the_completion_worker_loads_the_image_copier(name, loads_copier):
    # Only the completion worker copies images; the webhook and the reconciler hand tasks to it.
    assert _probe(FUNCTIONS[name])["loaded_at_import"]["vary_region.completion.image_copier"] is loads_copier


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_given_any_handler_when_imported_then_no_powertools_event_parsing_package_is_loaded(name):
    # Each of these imports every resolver or event class Powertools has: a sixth of boto3's import.
    loaded = _probe(FUNCTIONS[name])["loaded_at_import"]
    assert loaded["aws_lambda_powertools.event_handler"] is False
    assert loaded["aws_lambda_powertools.utilities.data_classes"] is False
    assert loaded["aws_lambda_powertools.utilities.batch"] is False


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_given_any_handler_when_imported_then_pillow_is_not_loaded(name):
    # Pillow is for masks only, imported when one is decoded or drawn, never by a handler's import.
    assert _probe(FUNCTIONS[name])["loaded_at_import"]["PIL"] is False


@pytest.mark.parametrize(
    "name, reads_the_account", [("submit", True), ("webhook", False), ("reconciler", False), ("completion", False)]
)
def test_given_v2_and_no_slot_limit_set_when_imported_then_only_the_submit_function_prepares_the_account_read(
    name, reads_the_account
):
    # Only the submit function claims provider slots, so only it needs the account's maxConcurrentJobs.
    probe = _probe(FUNCTIONS[name], APIFRAME_API_VERSION="v2", MAX_ACTIVE_TASKS="")
    assert probe["loaded_at_import"]["vary_region.provider.account_limit"] is reads_the_account
