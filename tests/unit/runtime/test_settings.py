"""Settings from the environment: a deployment mistake fails loudly at start, never a job."""

from __future__ import annotations

import pytest
from vary_region.settings import ImageOrigin, Settings, SettingsError

BASE_ENV = {"JOBS_BUCKET": "vary-region-jobs-123", "JOBS_TABLE": "vary-region-jobs"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE_ENV, **env})


# --- required values and defaults -----------------------------------------------------------------


def test_given_only_required_variables_when_loaded_then_documented_defaults_apply():
    s = settings()

    assert (s.jobs_bucket, s.jobs_table) == ("vary-region-jobs-123", "vary-region-jobs")
    assert s.apiframe_base_url == "https://api.apiframe.pro"
    assert [(o.scheme, o.host, o.port) for o in s.allowed_image_origins] == [
        ("https", "cdn.apiframe.pro", None),
        ("https", "cdn.apiframe.ai", None),
        ("https", "cdn2.apiframe.ai", None),
    ]
    assert s.inbox_prefix == "inbox/"
    assert s.results_prefix == "results/"
    assert not s.results_prefix.startswith(s.inbox_prefix)
    assert s.max_mask_bytes == 8 * 1024 * 1024
    assert s.max_image_bytes == 50 * 1024 * 1024
    assert s.submit_retry_budget_seconds > 0
    assert s.image_timeout_seconds > 0


@pytest.mark.parametrize("missing", ["JOBS_BUCKET", "JOBS_TABLE"])
def test_given_a_required_variable_missing_when_loaded_then_the_error_names_it(missing):
    env = {k: v for k, v in BASE_ENV.items() if k != missing}

    with pytest.raises(SettingsError, match=missing):
        Settings.from_env(env)


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_given_a_required_variable_that_is_blank_when_loaded_then_it_counts_as_missing(blank):
    with pytest.raises(SettingsError, match="JOBS_TABLE"):
        settings(JOBS_TABLE=blank)


def test_given_explicit_env_mapping_when_loaded_then_process_environment_is_not_read(monkeypatch):
    monkeypatch.setenv("JOBS_BUCKET", "from-process")
    monkeypatch.setenv("JOBS_TABLE", "from-process")

    assert settings().jobs_bucket == "vary-region-jobs-123"
    with pytest.raises(SettingsError):
        Settings.from_env({})


def test_given_process_environment_when_loaded_without_a_mapping_then_it_is_used(monkeypatch):
    monkeypatch.setenv("JOBS_BUCKET", "env-bucket")
    monkeypatch.setenv("JOBS_TABLE", "env-table")

    s = Settings.from_env()

    assert (s.jobs_bucket, s.jobs_table) == ("env-bucket", "env-table")


def test_given_base_url_with_trailing_slash_and_spaces_when_loaded_then_it_is_normalised():
    s = settings(APIFRAME_BASE_URL="  http://127.0.0.1:9000/  ", WEBHOOK_BASE_URL="https://abc.execute-api.aws/")

    assert s.apiframe_base_url == "http://127.0.0.1:9000"
    assert s.webhook_base_url == "https://abc.execute-api.aws"


def test_given_api_key_locations_when_loaded_then_they_are_kept_and_not_the_key_itself():
    s = settings(
        APIFRAME_API_KEY_SECRET_ID=" arn:aws:secretsmanager:eu-west-1:1:secret:k ", APIFRAME_API_KEY_PARAMETER=""
    )

    assert s.api_key_secret_id == "arn:aws:secretsmanager:eu-west-1:1:secret:k"
    assert s.api_key_parameter == ""


# --- the image-host allowlist ----------------------------------------------------------------------


def test_given_allowed_hosts_list_when_loaded_then_each_entry_becomes_an_origin_and_blanks_are_skipped():
    s = settings(ALLOWED_IMAGE_HOSTS=" Images.Example.COM , ,http://127.0.0.1:8123,https://cdn.example.net:8443,")

    assert [(o.scheme, o.host, o.port) for o in s.allowed_image_origins] == [
        ("https", "images.example.com", None),
        ("http", "127.0.0.1", 8123),
        ("https", "cdn.example.net", 8443),
    ]


def test_given_blank_allowed_hosts_when_loaded_then_the_provider_cdns_are_used():
    assert [o.host for o in settings(ALLOWED_IMAGE_HOSTS="  ").allowed_image_origins] == [
        "cdn.apiframe.pro",
        "cdn.apiframe.ai",
        "cdn2.apiframe.ai",
    ]


@pytest.mark.parametrize(
    "entry",
    ["http://cdn.apiframe.pro", "http://10.0.0.1:80", "http://127.0.0.1.evil.example:80", "http://169.254.169.254"],
)
def test_given_plain_http_entry_for_a_non_loopback_host_when_loaded_then_it_is_refused(entry):
    with pytest.raises(SettingsError, match="loopback"):
        settings(ALLOWED_IMAGE_HOSTS=f"cdn.apiframe.pro,{entry}")


@pytest.mark.parametrize("entry", ["ftp://files.example.com", "file:///etc", "https://", "gopher://x"])
def test_given_entry_that_is_not_a_host_or_origin_when_parsed_then_it_is_refused(entry):
    with pytest.raises(SettingsError):
        ImageOrigin.parse(entry)


@pytest.mark.parametrize(
    ("entry", "host", "port"),
    [
        ("http://127.0.0.1:8123", "127.0.0.1", 8123),
        ("http://localhost:9000", "localhost", 9000),
        ("http://[::1]:8123", "::1", 8123),
        ("HTTP://LOCALHOST:80", "localhost", 80),
    ],
)
def test_given_plain_http_loopback_entry_when_parsed_then_it_is_an_explicit_loopback_origin(entry, host, port):
    origin = ImageOrigin.parse(entry)

    assert (origin.scheme, origin.host, origin.port) == ("http", host, port)
    assert origin.is_loopback


def test_given_bare_host_entry_when_parsed_then_it_means_https_on_the_default_port():
    origin = ImageOrigin.parse("  CDN.Example.com ")

    assert (origin.scheme, origin.host, origin.port) == ("https", "cdn.example.com", None)
    assert not origin.is_loopback


# --- numbers -----------------------------------------------------------------------------------------


def test_given_numeric_overrides_when_loaded_then_they_are_used():
    s = settings(
        MAX_IMAGE_BYTES="1048576",
        RECONCILE_QUIET_SECONDS="60",
        JOB_TTL_DAYS="7",
        MAX_ACTIVE_TASKS=" 3 ",
        SUBMIT_RETRY_BUDGET_SECONDS="2.5",
        IMAGE_TIMEOUT_SECONDS="4",
    )

    assert s.max_image_bytes == 1048576
    assert s.reconcile_quiet_seconds == 60
    assert s.job_ttl_days == 7
    assert s.max_active_tasks == 3
    assert s.submit_retry_budget_seconds == 2.5
    assert s.image_timeout_seconds == 4.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_IMAGE_BYTES", "fifty megabytes"),
        ("MAX_IMAGE_BYTES", "1.5"),  # a whole number is expected
        ("MAX_IMAGE_BYTES", "0"),
        ("RECONCILE_QUIET_SECONDS", "-60"),
        ("JOB_TTL_DAYS", "7d"),
        ("MAX_ACTIVE_TASKS", "0"),
        ("SUBMIT_RETRY_BUDGET_SECONDS", "-1"),
        ("SUBMIT_RETRY_BUDGET_SECONDS", "0"),
        ("SUBMIT_RETRY_BUDGET_SECONDS", "20s"),
        ("IMAGE_TIMEOUT_SECONDS", "abc"),
    ],
)
def test_given_a_number_that_is_not_a_positive_number_when_loaded_then_the_error_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        settings(**{name: value})


@pytest.mark.parametrize("name", ["SUBMIT_RETRY_BUDGET_SECONDS", "IMAGE_TIMEOUT_SECONDS"])
def test_given_nan_for_a_float_setting_when_loaded_then_it_is_refused(name):
    with pytest.raises(SettingsError, match=name):
        settings(**{name: "nan"})


def test_caller_state_machines_default_to_none_and_read_as_a_list() -> None:
    assert settings().caller_state_machine_arns == ()
    arns = "arn:aws:states:eu-west-1:123456789012:stateMachine:a,arn:aws:states:eu-west-1:123456789012:stateMachine:b"
    assert settings(CALLER_STATE_MACHINE_ARNS=arns).caller_state_machine_arns == tuple(arns.split(","))


def test_masks_come_from_the_inbox_and_the_mask_sources_only() -> None:
    plain = settings()
    assert [str(place) for place in plain.mask_locations] == ["s3://vary-region-jobs-123/inbox/"]
    wider = settings(MASK_SOURCES="masks, shared/approved/")
    assert [str(place) for place in wider.mask_locations] == [
        "s3://vary-region-jobs-123/inbox/",
        "s3://masks/",
        "s3://shared/approved/",
    ]
    assert wider.mask_locations[2].holds("shared", "approved/m.png")
    assert not wider.mask_locations[2].holds("shared", "approved/../other/m.png")
    assert not wider.mask_locations[2].holds("shared", "other/m.png")
    assert not plain.mask_locations[0].holds("another-bucket", "inbox/m.png")
    assert not plain.mask_locations[0].holds("vary-region-jobs-123", "results/m.png")


@pytest.mark.parametrize(
    "entry", ["masks/*", "/prefix-only", "masks/../other"], ids=["wildcard", "no-bucket", "dot-dot"]
)
def test_a_mask_source_that_is_no_bucket_or_prefix_is_a_settings_error(entry: str) -> None:
    with pytest.raises(SettingsError, match="MASK_SOURCES"):
        settings(MASK_SOURCES=entry)
