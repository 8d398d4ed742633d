"""A body ended only by the host closing the connection cannot be told from a cut-off one: never stored."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError
from vary_region.completion.image_copier import ImageCopier
from vary_region.core.errors import ImageCopyError
from vary_region.settings import ImageOrigin

from tests.support.builders import mask_png, new_job_id

pytestmark = pytest.mark.generation_blind


class _CloseDelimitedHost(BaseHTTPRequestHandler):
    """HTTP/1.0 without Content-Length: the body ends when the connection closes."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(mask_png(size=(64, 64))[:100])  # a cut-off image, then the host hangs up

    def log_message(self, *args: Any) -> None:
        return


def test_given_a_body_without_length_or_chunked_framing_then_the_copy_fails_and_nothing_is_stored(stack, s3, bucket):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CloseDelimitedHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    key = f"results/{new_job_id('unframed')}/1.png"
    try:
        copier = ImageCopier(s3, bucket, [ImageOrigin.parse(origin)], max_bytes=1024 * 1024)
        with pytest.raises(ImageCopyError, match="neither Content-Length nor chunked") as raised:
            copier.copy_all({"1": f"{origin}/1.png"}, lambda _: key)
    finally:
        server.shutdown()
        server.server_close()

    assert raised.value.permanent
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)
