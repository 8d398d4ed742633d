"""The mask editor's server without AWS: the token on every request, loopback only, and the mask it
writes (natural size, strictly black and white, never blank), over real HTTP on a free port."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from vary_region_cli.editor.server import EditorServer
from vary_region_cli.editor.session import EditorSession
from vary_region_cli.editor.sources import ParentImage, from_file

SIZE = (640, 480)


def picture_png(size: tuple[int, int] = SIZE) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(out, "PNG")
    return out.getvalue()


def data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def painted(size: tuple[int, int] = SIZE, box: tuple[int, int, int, int] = (100, 100, 300, 200)) -> Image.Image:
    """What a canvas exports: RGBA, black, a white shape."""
    image = Image.new("RGBA", size, (0, 0, 0, 255))
    ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255, 255))
    return image


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[EditorServer]:
    parent = ParentImage(picture_png(), "image/png", *SIZE, label="file test.png", parent_task_id="task-1")
    editor = EditorServer(EditorSession(parent, None, tmp_path / "out"))
    editor.serve_in_background()
    yield editor
    editor.shutdown()
    editor.server_close()


def request(server: EditorServer, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=10)
    payload = None if body is None else json.dumps(body).encode()
    connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.status, response.read()
    connection.close()
    return answer


def save(server: EditorServer, mask: str, **fields: str) -> tuple[int, dict[str, Any]]:
    status, body = request(server, "POST", f"/{server.token}/api/save", {"mask": mask, **fields})
    return status, json.loads(body)


# --- the token ------------------------------------------------------------------------------------


def test_the_page_and_its_api_answer_under_the_token(server: EditorServer) -> None:
    assert server.url.endswith(f"/{server.token}/") and len(server.token) >= 32
    status, page = request(server, "GET", f"/{server.token}/")
    assert status == 200 and b"editor.js" in page
    status, body = request(server, "GET", f"/{server.token}/api/session")
    assert status == 200
    assert json.loads(body) == {
        "label": "file test.png",
        "width": 640,
        "height": 480,
        "parent_task_id": "task-1",
        "index": None,
        "can_submit": False,
        "can_save": True,
    }
    assert request(server, "GET", f"/{server.token}/api/parent") == (200, picture_png())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/api/parent"),
        ("GET", "/editor.js"),
        ("GET", "/{wrong}/api/parent"),
        ("GET", "/{token}x/api/parent"),
        ("GET", "/{short}/api/session"),
        ("GET", "/api/session?token={token}x"),
        ("POST", "/{wrong}/api/done"),
        ("POST", "/{wrong}/api/save"),
    ],
    ids=["root", "parent", "script", "wrong", "longer", "prefix", "query", "done", "save"],
)
def test_without_the_token_every_request_is_forbidden(server: EditorServer, method: str, path: str) -> None:
    wrong = "A" * len(server.token)
    shown = path.format(token=server.token, wrong=wrong, short=server.token[:-1])
    status, _ = request(server, method, shown, {"mask": data_url(painted())} if method == "POST" else None)
    assert status == 403
    assert not server.done.is_set()
    assert not (Path(server.session.out_dir or ".") / "mask.png").exists()


def test_done_under_the_token_stops_the_editor(server: EditorServer) -> None:
    assert request(server, "POST", f"/{server.token}/api/done", {})[0] == 200
    assert server.done.is_set()


# --- loopback only ---------------------------------------------------------------------------------


def _outward_address() -> str | None:
    """This machine's address on its network (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_server_listens_on_loopback_only(server: EditorServer) -> None:
    assert server.server_address[0] == "127.0.0.1"
    outward = _outward_address()
    if outward is None:
        return
    with socket.socket() as client:
        client.settimeout(2)
        reached = client.connect_ex((outward, server.server_address[1])) == 0
    assert not reached, f"the editor answered on {outward}, not only on 127.0.0.1"


# --- the mask it writes ----------------------------------------------------------------------------


def saved_mask(server: EditorServer) -> Image.Image:
    return Image.open(Path(server.session.out_dir or ".") / "mask.png")


def test_save_writes_the_job_and_a_black_and_white_mask(server: EditorServer) -> None:
    status, answer = save(server, data_url(painted()), prompt="a kite", metadata='{"customer": "acme"}')
    assert status == 200, answer
    out = Path(server.session.out_dir or ".")
    assert answer["files"] == [str(out / "job.json"), str(out / "mask.png")]
    job = json.loads((out / "job.json").read_text())
    assert job == {"parent_task_id": "task-1", "prompt": "a kite", "metadata": {"customer": "acme"}}
    mask = saved_mask(server)
    assert (mask.format, mask.mode, mask.size) == ("PNG", "L", SIZE)
    assert mask.getpixel((200, 150)) == 255 and mask.getpixel((50, 50)) == 0


def test_a_blank_mask_is_refused_and_nothing_is_written(server: EditorServer) -> None:
    status, answer = save(server, data_url(Image.new("RGBA", SIZE, (0, 0, 0, 255))))
    assert status == 400
    assert answer["error"]["code"] == "MASK_BLANK" and answer["error"]["field"] == "mask"
    assert "paint the region" in answer["error"]["message"]
    assert not Path(server.session.out_dir or ".").exists()


def test_a_mask_painted_only_faintly_is_blank_too(server: EditorServer) -> None:
    faint = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    ImageDraw.Draw(faint).rectangle((10, 10, 200, 200), fill=(90, 90, 90, 255))  # under half strength
    status, answer = save(server, data_url(faint))
    assert status == 400 and answer["error"]["code"] == "MASK_BLANK"


def test_anti_aliased_edges_become_strictly_black_or_white(server: EditorServer) -> None:
    soft = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    draw = ImageDraw.Draw(soft)
    for step, grey in enumerate((40, 127, 128, 200, 255)):  # a canvas's soft edge, band by band
        draw.rectangle((100 + step * 40, 100, 139 + step * 40, 300), fill=(grey, grey, grey, 255))
    status, answer = save(server, data_url(soft))
    assert status == 200, answer
    mask = saved_mask(server)
    assert sorted(set(mask.getdata())) == [0, 255]
    assert [mask.getpixel((120 + step * 40, 200)) for step in range(5)] == [0, 0, 255, 255, 255]


def test_a_transparent_canvas_counts_as_unpainted(server: EditorServer) -> None:
    layer = Image.new("RGBA", SIZE, (255, 255, 255, 0))  # white, but not painted
    ImageDraw.Draw(layer).rectangle((0, 0, 99, 99), fill=(255, 255, 255, 255))
    assert save(server, data_url(layer))[0] == 200
    mask = saved_mask(server)
    assert mask.getpixel((50, 50)) == 255 and mask.getpixel((300, 300)) == 0


@pytest.mark.parametrize("sent", [(320, 240), (1280, 960), (641, 479)], ids=["half", "double", "off-by-one"])
def test_the_mask_is_written_at_the_parents_natural_size(server: EditorServer, sent: tuple[int, int]) -> None:
    box = (sent[0] // 4, sent[1] // 4, sent[0] // 2, sent[1] // 2)
    assert save(server, data_url(painted(sent, box)))[0] == 200
    mask = saved_mask(server)
    assert mask.size == SIZE
    assert mask.getpixel((240, 180)) == 255 and mask.getpixel((400, 400)) == 0


# --- the job's fields, checked as the CLI and the pipeline check them ------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"metadata": "{"}, "metadata", "METADATA_INVALID"),
        ({"metadata": "[1]"}, "metadata", "METADATA_INVALID"),
        ({"job_id": "a/b"}, "job_id", "JOB_ID_INVALID"),
        ({"prompt": "a\x07kite"}, "prompt", "PROMPT_CONTROL_CHARACTERS"),
        ({"prompt": "x" * 4001}, "prompt", "PROMPT_TOO_LONG"),
        ({"mask_fit": "stretch"}, "mask_fit", "MASK_FIT_INVALID"),
        ({"prompt": 7}, "prompt", "FIELD_INVALID"),
    ],
    ids=["metadata-json", "metadata-object", "job-id", "prompt-control", "prompt-long", "mask-fit", "prompt-type"],
)
def test_bad_fields_are_answered_by_field_and_code(
    server: EditorServer, fields: dict[str, Any], field: str, code: str
) -> None:
    status, body = request(server, "POST", f"/{server.token}/api/check", fields)
    assert status == 400
    assert json.loads(body)["error"] | {"message": ""} == {"field": field, "code": code, "message": ""}


def test_check_answers_the_job_file_submit_would_write(server: EditorServer) -> None:
    fields = {"prompt": "a kite", "job_id": "job-editor-1", "mask_fit": "resize"}
    status, body = request(server, "POST", f"/{server.token}/api/check", fields)
    assert status == 200
    assert json.loads(body) == {
        "job_id": "job-editor-1",
        "job": {"parent_task_id": "task-1", "prompt": "a kite", "mask_fit": "resize"},
    }


def test_submit_without_a_stack_says_so(server: EditorServer) -> None:
    status, body = request(server, "POST", f"/{server.token}/api/submit", {"mask": data_url(painted())})
    assert status == 400 and json.loads(body)["error"]["code"] == "STACK_UNAVAILABLE"


def test_the_page_reads_only_the_jobs_it_submitted(server: EditorServer) -> None:
    assert request(server, "GET", f"/{server.token}/api/jobs/job-somebody-else")[0] == 404
    assert request(server, "GET", f"/{server.token}/api/jobs/job-somebody-else/1.png")[0] == 404


def test_a_local_file_is_read_by_its_content(tmp_path: Path) -> None:
    named = tmp_path / "picture.jpg"  # a PNG under another name
    named.write_bytes(picture_png((300, 200)))
    parent = from_file(named)
    assert (parent.media_type, parent.width, parent.height, parent.parent_task_id) == ("image/png", 300, 200, None)
