"""`sam build` and `sam deploy` of the template as docs/deploy.md tells users, into the emulator.

The build is the template's own (`BuildMethod: makefile` for the layer), for this machine's wheels:
`LAYER_PLATFORMS=` (layers/vary_region/Makefile) because the emulator runs the functions here. The
deploy takes samconfig.toml's defaults (stack name, capabilities, SAM's artifact bucket) and
overrides only what a local endpoint replaces: APIFRAME's base URL and the image hosts it serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vary_region_local.rehearsal import workarounds


class DeployError(Exception):
    pass


def stack_name(repo: Path) -> str:
    config = tomllib.loads((repo / "samconfig.toml").read_text())
    return str(config["default"]["global"]["parameters"]["stack_name"])


@dataclass(frozen=True)
class Sam:
    executable: Path
    repo: Path
    folder: Path  # build output, caches and logs of this rehearsal
    environment: dict[str, str]  # the emulator's endpoint and credentials
    runtime_python: Path  # python3.13: sam build runs the layer's Makefile with it

    def _run(self, name: str, command: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = self.folder / f"{name}.log"
        path = f"{self.runtime_python.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**os.environ, **self.environment, "SAM_CLI_TELEMETRY": "0", "PATH": path, **(extra_env or {})}
        with log.open("w") as out:
            done = subprocess.run(  # noqa: S603 - the pinned SAM CLI
                command, cwd=self.repo, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        if done.returncode != 0:
            raise DeployError(f"`sam {name}` failed (exit {done.returncode}):\n{_failure_lines(log)}")

    def build(self, template: Path) -> Path:
        build_dir = self.folder / "build"
        command = [str(self.executable), "build", "--template-file", str(template)]
        command += ["--build-dir", str(build_dir), "--cache-dir", str(self.folder / "cache")]
        command += ["--base-dir", str(self.repo)]
        # Empty: pip installs this machine's wheels (the functions run here, not on arm64 Lambda).
        self._run("build", command, {"LAYER_PLATFORMS": ""})
        return build_dir / "template.yaml"

    def deploy(self, built: Path, overrides: dict[str, str]) -> None:
        template = yaml.safe_load(built.read_text())  # sam build writes plain YAML (no short tags)
        # Beside the built one, so its CodeUri and ContentUri paths still resolve.
        patched = built.with_name("template.rehearsal.json")
        patched.write_text(json.dumps(workarounds.patch_template(template, overrides), indent=1))
        command = [str(self.executable), "deploy", "--config-file", str(self.repo / "samconfig.toml")]
        command += ["--template-file", str(patched), "--no-confirm-changeset", "--no-progressbar"]
        command += ["--parameter-overrides", *(f"{name}={value}" for name, value in overrides.items())]
        self._run("deploy", command)


def _failure_lines(log: Path, limit: int = 40) -> str:
    """The lines that say why: failed resources and errors, else the log's end."""
    lines = log.read_text(errors="replace").splitlines()
    telling = [line for line in lines if "FAILED" in line or "Error" in line or "error" in line]
    return "\n".join((telling or lines)[-limit:]) + f"\n(whole log: {log})"


@dataclass(frozen=True)
class DeployedStack:
    name: str
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id
    processed_template: dict[str, Any]

    @classmethod
    def read(cls, name: str, cloudformation: Any) -> DeployedStack:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            raise DeployError(f"stack {name} is {stack['StackStatus']}")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        listed = cloudformation.describe_stack_resources(StackName=name)["StackResources"]
        resources = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in listed}
        body = cloudformation.get_template(StackName=name, TemplateStage="Processed")["TemplateBody"]
        processed = json.loads(body) if isinstance(body, str) else body
        return cls(name, outputs, resources, processed)

    def function_name(self, logical: str) -> str:
        return self.resources[logical]
