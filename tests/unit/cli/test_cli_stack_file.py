"""How the CLI finds the local stack: the nearest .local/stack.json in the current folder or a
parent (as git finds .git), and what it says when there is none or the file is not a stack file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vary_region_cli.config import CliError, CliSettings, find_stack_file, load_stack_file, resolve
from vary_region_cli.main import main

STACK = {
    "aws_endpoint_url": "http://127.0.0.1:4566",
    "region": "us-east-1",
    "bucket": "vary-region-local",
    "table": "vary-region-jobs",
}


def write_stack(folder: Path, info: dict[str, object] | None = None) -> Path:
    path = folder / ".local" / "stack.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(info or STACK))
    return path


def test_the_stack_file_of_a_parent_folder_is_found_from_a_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack_file = write_stack(tmp_path / "repo")
    deep = tmp_path / "repo" / "cli" / "vary_region_cli"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_stack_file(Path.cwd()) == stack_file.resolve()
    for settings in (CliSettings(), CliSettings(local=True)):  # implicitly and with --local
        target = resolve(settings)
        assert target.local and target.stack_file == stack_file.resolve()
        assert (target.bucket, target.table, target.endpoint_url) == (
            "vary-region-local",
            "vary-region-jobs",
            STACK["aws_endpoint_url"],
        )


def test_the_nearest_stack_file_wins(tmp_path: Path) -> None:
    write_stack(tmp_path)
    inner = write_stack(tmp_path / "inner", dict(STACK, bucket="inner-bucket"))
    assert resolve(CliSettings(), cwd=tmp_path / "inner").bucket == "inner-bucket"
    assert find_stack_file(tmp_path / "inner") == inner


def test_aws_options_do_not_look_for_a_stack_file(tmp_path: Path) -> None:
    write_stack(tmp_path)
    target = resolve(CliSettings(bucket="my-bucket", table="my-table"), cwd=tmp_path)
    assert not target.local and target.bucket == "my-bucket" and target.searched_from is None


def test_local_without_a_stack_file_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CliError) as raised:
        resolve(CliSettings(local=True))
    message = str(raised.value)
    assert f"no .local/stack.json in {tmp_path.resolve()} or any folder above it" in message
    assert "--stack-file" in message and "make local" in message


def test_no_configuration_at_all_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("VARY_REGION_BUCKET", "VARY_REGION_TABLE", "VARY_REGION_STACK_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert main(["list"]) == 3
    error = capsys.readouterr().err
    assert "no table configured" in error
    assert f"no .local/stack.json in {tmp_path.resolve()} or any folder above it" in error and "--stack-file" in error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not a local stack file: it is empty"),
        (b"  \n", "is not a local stack file: it is empty"),
        (b"{", "is not a local stack file: not valid JSON (Expecting property name"),
        (b"[1, 2]", "is not a local stack file: it holds a JSON list, not an object"),
        (b"\xff\xfe", "is not a local stack file: it is not UTF-8 text"),
        (json.dumps({"region": "us-east-1"}).encode(), "lacks aws_endpoint_url, bucket, table"),
    ],
    ids=["empty", "blank", "bad-json", "list", "binary", "missing-keys"],
)
def test_a_file_that_is_not_a_stack_file_says_what_is_wrong(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "stack.json"
    path.write_bytes(content)
    with pytest.raises(CliError) as raised:
        load_stack_file(path)
    assert message in str(raised.value)
    assert "does not exist" not in str(raised.value)


def test_dev_null_and_folders_are_not_reported_as_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack-file", "/dev/null", "list"]) == 3
    error = capsys.readouterr().err
    assert "/dev/null is not a local stack file: it is empty" in error and "does not exist" not in error

    assert main(["--stack-file", str(tmp_path), "list"]) == 3
    assert f"{tmp_path} is a folder, not a local stack file" in capsys.readouterr().err


def test_a_missing_stack_file_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="does not exist"):
        load_stack_file(tmp_path / "nowhere.json")


def test_an_unreadable_stack_file_says_why(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(STACK))
    path.chmod(0)
    with pytest.raises(CliError, match=r"cannot read the local stack file .*Permission denied"):
        load_stack_file(path)


def test_aws_region_names_the_region_of_an_aws_target_but_not_of_the_local_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # boto3 itself reads only AWS_DEFAULT_REGION; the docs tell users AWS_REGION.
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    aws = resolve(CliSettings(stack_name="vary-region"), cwd=tmp_path)
    assert aws.region == "eu-west-3"
    assert aws.session.region_name == "eu-west-3"
    assert resolve(CliSettings(stack_name="vary-region", region="us-east-2"), cwd=tmp_path).region == "us-east-2"
    stack_file = tmp_path / "stack.json"
    info = {"aws_endpoint_url": "http://127.0.0.1:1", "region": "us-east-1", "bucket": "b", "table": "t"}
    stack_file.write_text(json.dumps(info))
    assert resolve(CliSettings(stack_file=stack_file), cwd=tmp_path).region == "us-east-1"
