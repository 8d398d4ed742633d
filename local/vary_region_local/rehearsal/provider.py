"""The APIFRAME simulator as the deployed stack's provider: over TLS, posting webhooks to the emulator.

A deployed stack only speaks https to APIFRAME (the template's ApiframeBaseUrl and AllowedImageHosts
admit https alone), so the simulator serves the rehearsal's certificate. The submit function tells
APIFRAME to post webhooks to its `WEBHOOK_BASE_URL`, the API's AWS host
(`https://<api-id>.execute-api.<region>.amazonaws.com/webhook/...`): here that host is the emulator,
which serves the same API at `/_aws/execute-api/<api-id>/<stage>/...`, so the simulator sends each
webhook there. That is the local endpoint replacing AWS's, not an emulator gap.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from vary_region_local.rehearsal.emulator import Certificate
from vary_region_local.simulator import ApiframeSimulator

_AWS_EXECUTE_API = re.compile(r"(?P<api>[a-z0-9]+)\.execute-api\.[a-z0-9-]+\.amazonaws\.com")
API_KEY = "rehearsal-key"
STEP_DELAY = 0.3  # as make local: progress at 25, 50, 75 %, a step apart
WEBHOOK_RESEND_SECONDS = 120.0  # an unanswered webhook is resent for this long (1, 2, 4, 8, 8... s apart)
# One attempt waits this long (the simulator's default: 5 s). The emulator starts a worker per
# concurrent invocation, and on a loaded 2-core machine a worker's cold start (importing the layer)
# took over 5 s: each attempt given up on left its worker busy, so the resend started another cold
# worker, and so on (seen: eight webhook workers spawned in 6 s, one webhook unanswered for 60 s).
# Waiting out one cold start is what ends it; a webhook function's own time-out is 10 s.
WEBHOOK_ATTEMPT_SECONDS = 30.0


def answered(answer: Any) -> bool:
    """Did the API answer for itself? A status below 500 does (2xx taken, 4xx refused); a 5xx, a
    time-out or a connection error (the exception's name) is no answer."""
    return isinstance(answer, int) and answer < 500


class RehearsalProvider(ApiframeSimulator):
    webhook_timeout = WEBHOOK_ATTEMPT_SECONDS

    def __init__(self, certificate: Certificate, emulator_endpoint: str, **options: Any) -> None:
        super().__init__(api_key=API_KEY, step_delay=STEP_DELAY, **options)
        self.certificate, self.emulator_endpoint = certificate, emulator_endpoint
        self.webhook_targets: list[str] = []  # where each webhook went, as the gateway rewrote it

    def start(self) -> str:
        super().start()
        assert self._server is not None
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(str(self.certificate.cert), str(self.certificate.key))
        # The listening socket, wrapped: each connection's handshake happens in its handler thread.
        self._server.socket = server_context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.base_url = self.base_url.replace("http://", "https://", 1)
        # Webhooks go to the emulator over TLS, signed by the same certificate.
        os.environ["REQUESTS_CA_BUNDLE"] = str(self.certificate.cert)
        return self.base_url

    def _post_webhook(
        self, url: str, secret: str | None, body: bytes, signed: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Each webhook, resent while it has no answer (a time-out, a dropped connection, a 5xx) for
        up to WEBHOOK_RESEND_SECONDS, as webhook senders do: the emulator's Lambda cold start (a local
        worker importing the layer, seconds on this machine) can outlast one attempt. A 4xx is an
        answer (401: refused) and is never resent. Every attempt stays in `webhook_log`, with its number;
        the last of a webhook never answered is marked `gave_up`."""
        target = self.gateway(url)
        self.webhook_targets.append(target)
        deadline, attempt, pause = time.monotonic() + WEBHOOK_RESEND_SECONDS, 1, 1.0
        while True:
            entry = super()._post_webhook(target, secret, body, signed)
            entry["attempt"] = attempt
            if answered(entry.get("answer")):
                return entry
            if time.monotonic() + pause > deadline or self._stopping.wait(pause):
                entry["gave_up"] = not self._stopping.is_set()  # the rehearsal ending is not giving up
                return entry
            attempt, pause = attempt + 1, min(pause * 2, 8.0)

    def gateway(self, url: str) -> str:
        """The emulator's address of a deployed API's URL; any other URL unchanged."""
        parts = urlsplit(url)
        match = _AWS_EXECUTE_API.fullmatch(parts.hostname or "")
        if match is None:
            return url
        return f"{self.emulator_endpoint}/_aws/execute-api/{match['api']}/$default{parts.path}"
