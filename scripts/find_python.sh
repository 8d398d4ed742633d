#!/usr/bin/env bash
# Prints the interpreter for the project's virtualenv: Python 3.13 (the Lambda runtime) when it can
# be found, else the newest python3 on PATH. Under pyenv the plain `python3.13` shim may not resolve,
# so pyenv's own versions folder is searched too.
set -euo pipefail
want="${1:-3.13}"
if command -v "python${want}" >/dev/null 2>&1 && "python${want}" --version >/dev/null 2>&1; then
    command -v "python${want}"; exit 0
fi
if command -v pyenv >/dev/null 2>&1; then
    dir="$(find "$(pyenv root)/versions" -mindepth 1 -maxdepth 1 -name "${want}.*" 2>/dev/null | sort -V | tail -n 1)"
    if [[ -n "${dir}" && -x "${dir}/bin/python${want}" ]]; then echo "${dir}/bin/python${want}"; exit 0; fi
fi
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "${candidate}" >/dev/null 2>&1 && "${candidate}" --version >/dev/null 2>&1; then
        command -v "${candidate}"; exit 0
    fi
done
echo "no python3 found" >&2; exit 1
