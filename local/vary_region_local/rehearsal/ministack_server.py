"""MiniStack's server, run by the emulator's own interpreter, with every IAM denial it answers logged.

Run as a script (`.venv-rehearse/bin/python ministack_server.py <hypercorn arguments>`): the
emulator's virtualenv has MiniStack and hypercorn, not this project, so this file imports neither.
On AWS a denied call is found in CloudTrail; MiniStack records only calls that reached their service,
and a function may log a refused call by its code alone ("AccessDenied"), so each denial the emulator
answers is also written to its log, in AWS's words, where the rehearsal reads it
(rehearsal/denials.py). The answer itself is unchanged.
"""

from __future__ import annotations

import sys
from typing import Any


def log_denials() -> None:
    from ministack.core import iam_evaluator

    decide = iam_evaluator.enforce

    def logged(access_key_id: str, iam_action: str, service: str, region: str, *args: Any, **kwargs: Any) -> Any:
        denied = decide(access_key_id, iam_action, service, region, *args, **kwargs)
        if denied is not None and getattr(denied, "decision", "Allow") != "Allow":
            resource = kwargs.get("resource_arn", args[0] if args else "*")
            print(
                f"rehearsal: denied: User: {denied.principal_arn} is not authorized to perform: {iam_action} "
                f"on resource: {resource} ({denied.decision})",
                file=sys.stderr,
                flush=True,
            )
        return denied

    # Every caller imports it from the module when it decides, so this one assignment covers them all.
    iam_evaluator.enforce = logged


if __name__ == "__main__":
    log_denials()
    from hypercorn.__main__ import main

    sys.exit(main(sys.argv[1:]))
