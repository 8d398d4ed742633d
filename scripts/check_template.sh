#!/usr/bin/env bash
# Checks the deployable stack: cfn-lint, `sam validate --lint`, `sam build`, then that the built
# layer ships bytecode Lambda can use (scripts/check_layer_bytecode.py).
#
# Usage (from anywhere; it runs from the repository root):
#   scripts/check_template.sh
#   CFN_LINT=/path/to/cfn-lint SAM=/path/to/sam scripts/check_template.sh
#
# Environment:
#   CFN_LINT            cfn-lint executable (default: cfn-lint)
#   SAM                 sam executable (default: sam). aws-sam-cli pins exact versions of boto3,
#                       click and more: install it in a virtualenv of its own.
#   SAM_BUILD_DIR       build directory (default: .aws-sam/build, SAM's own default)
#   AWS_DEFAULT_REGION  defaults to us-east-1. No AWS credentials are needed: cfn-lint and
#                       `sam validate --lint` work offline (plain `sam validate` does not).
#
# `sam build` needs the runtime's interpreter, python3.13, on PATH. Under pyenv the plain
# `python3.13` shim may not resolve (no pyenv version selected), so when `python3.13` does not
# run and pyenv exists, the newest $(pyenv root)/versions/3.13.*/bin is put first on PATH
# (PYENV_VERSION=3.13.x would do the same). The layer is built for arm64: sam fetches arm64
# wheels from the package index itself, so no Docker is needed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CFN_LINT="${CFN_LINT:-cfn-lint}"
SAM="${SAM:-sam}"
SAM_BUILD_DIR="${SAM_BUILD_DIR:-.aws-sam/build}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0

if ! python3.13 --version >/dev/null 2>&1; then
    if command -v pyenv >/dev/null 2>&1; then
        py313_bin="$(find "$(pyenv root)/versions" -mindepth 1 -maxdepth 1 -name '3.13.*' 2>/dev/null |
            sort -V | tail -n 1)/bin"
        if [[ -x "${py313_bin}/python3.13" ]]; then
            export PATH="${py313_bin}:${PATH}"
        fi
    fi
fi
if ! python3.13 --version >/dev/null 2>&1; then
    echo "error: python3.13 is not on PATH (sam build needs it for the python3.13 runtime)" >&2
    exit 1
fi

echo "==> cfn-lint template.yaml"
"${CFN_LINT}" template.yaml

echo "==> sam validate --lint"
"${SAM}" validate --lint --template-file template.yaml

echo "==> sam build (python $(python3.13 -c 'import platform; print(platform.python_version())'))"
"${SAM}" build --template-file template.yaml --build-dir "${SAM_BUILD_DIR}"

echo "==> the built layer ships bytecode"
python3.13 scripts/check_layer_bytecode.py "${SAM_BUILD_DIR}/SharedLayer/python"

echo "==> all template checks passed"
