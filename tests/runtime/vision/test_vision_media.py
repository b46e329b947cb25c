"""Media loading: data: URLs, http(s) through httpx.MockTransport, local files inside the allowed directory."""
import base64
import io
import os
import time

import httpx
import pytest
from PIL import Image
from vision_hf_reference import encode_video, synthetic_frames

from qwen35.planner.errors import InputError
from qwen35.runtime.vision import MediaPolicy, VideoProcessorConfig, collect_media, fetch_bytes, load_image, load_video
from qwen35.runtime.vision import media_ref

PUBLIC = lambda host, port: ["93.184.216.34"]  # noqa: E731  a resolver answering one public address


def _png(width=24, height=16, mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, (width, height), "red").save(buffer, "PNG")
    return buffer.getvalue()


def _data_url(data, mime="image/png"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _server(routes):
    """A MockTransport answering GET path -> (status, body bytes or an iterator of chunks, headers)."""
    def handler(request):
        status, body, headers = routes.get(request.url.path, (404, b"missing", {}))
        if callable(body):
            return httpx.Response(status, stream=body(), headers=headers)
        return httpx.Response(status, content=body, headers=headers)
    return httpx.MockTransport(handler)


class _Chunks(httpx.SyncByteStream):
    """A body sent in chunks with no content-length, `pause` seconds before each."""

    def __init__(self, chunks, pause=0.0):
        self.chunks, self.pause = chunks, pause

    def __iter__(self):
        for chunk in self.chunks:
            time.sleep(self.pause)
            yield chunk


def test_data_urls():
    policy = MediaPolicy()
    image = load_image(_data_url(_png()), policy)
    assert image.size == (24, 16)
    assert fetch_bytes("data:text/plain,hello%20world", policy, max_bytes=100) == b"hello world"
    with pytest.raises(InputError, match="base64"):
        load_image("data:image/png;base64,***not base64***", policy)
    with pytest.raises(InputError, match="could not be decoded"):
        load_image(_data_url(b"plain text, not an image", "text/plain"), policy)
    with pytest.raises(InputError, match="comma"):
        load_image("data:image/png;base64", policy)
    with pytest.raises(InputError, match="byte"):
        load_image(_data_url(_png()), MediaPolicy(max_image_bytes=50))
    with pytest.raises(InputError, match="pixel limit"):
        load_image(_data_url(_png(300, 200)), MediaPolicy(max_image_pixels=300 * 200 - 1))
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_image(_data_url(_png(300, 200)[:120]), policy)


def test_other_image_formats_and_refused_ones():
    policy = MediaPolicy()
    for fmt in ("JPEG", "WEBP", "GIF", "BMP"):
        buffer = io.BytesIO()
        Image.new("RGB", (10, 6), "blue").save(buffer, fmt)
        assert load_image(_data_url(buffer.getvalue()), policy).size == (10, 6)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display upright
    buffer = io.BytesIO()
    Image.new("RGB", (10, 6), "blue").save(buffer, "JPEG", exif=exif)
    assert load_image(_data_url(buffer.getvalue()), policy).size == (6, 10)
    buffer = io.BytesIO()
    Image.new("RGB", (10, 6)).save(buffer, "PPM")  # decodable by Pillow, but not on the allow list
    with pytest.raises(InputError, match="could not be decoded"):
        load_image(_data_url(buffer.getvalue()), policy)


def test_http_fetches():
    png = _png()
    transport = _server({
        "/cat.png": (200, png, {"content-type": "image/png"}),
        "/big.png": (200, b"x" * 5000, {}),
        "/moved": (302, b"", {"location": "https://media.test/cat.png"}),
        "/away": (302, b"", {"location": "https://evil.test/cat.png"}),
        "/chunked": (200, lambda: _Chunks([b"x" * 1000] * 10), {}),
        "/slow": (200, lambda: _Chunks([b"x"] * 100, pause=0.05), {}),
    })
    policy = MediaPolicy(max_image_bytes=4096, timeout_s=0.5)
    fetch = dict(transport=transport, resolve=PUBLIC)
    assert load_image("https://media.test/cat.png", policy, **fetch).size == (24, 16)
    assert load_image("https://media.test/moved", policy, **fetch).size == (24, 16)
    # Every failure of a fetch reads the same (test_media_fetch_guard.py); the log has the reason.
    for path in ("big.png", "chunked", "nothing.png"):
        with pytest.raises(InputError, match="could not fetch"):
            load_image(f"https://media.test/{path}", policy, **fetch)
    started = time.monotonic()
    with pytest.raises(InputError, match="could not fetch"):
        load_image("https://media.test/slow", MediaPolicy(timeout_s=0.3), **fetch)
    assert time.monotonic() - started < 2
    allow_list = MediaPolicy(allowed_domains=("media.test",))
    assert load_image("https://media.test/cat.png", allow_list, **fetch).size == (24, 16)
    assert load_image("https://cdn.media.test/cat.png", allow_list, **fetch).size == (24, 16)
    with pytest.raises(InputError, match="allowed list"):
        load_image("https://evil.test/cat.png", allow_list, **fetch)
    with pytest.raises(InputError, match="could not fetch"):  # a redirect is checked too
        load_image("https://media.test/away", allow_list, **fetch)
    with pytest.raises(InputError, match="disabled"):
        load_image("https://media.test/cat.png", MediaPolicy(allow_http=False), **fetch)


def test_http_timeout_and_connection_errors():
    def raise_timeout(request):
        raise httpx.ConnectTimeout("connect timed out", request=request)

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    for handler in (raise_timeout, refuse):
        with pytest.raises(InputError, match="could not fetch"):
            load_image("https://media.test/a.png", MediaPolicy(), transport=httpx.MockTransport(handler),
                       resolve=PUBLIC)


def test_disallowed_schemes():
    for url in ("ftp://host/a.png", "javascript:alert(1)", "gopher://x/"):
        with pytest.raises(InputError, match="scheme"):
            load_image(url, MediaPolicy())


def test_local_files(tmp_path):
    allowed = tmp_path / "media"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "cat.png").write_bytes(_png())
    (tmp_path / "secret.png").write_bytes(_png())
    os.symlink(tmp_path / "secret.png", allowed / "link.png")
    policy = MediaPolicy(local_media_dir=allowed)
    assert load_image(str(allowed / "sub" / "cat.png"), policy).size == (24, 16)
    assert load_image("sub/cat.png", policy).size == (24, 16)
    assert load_image(f"file://{allowed}/sub/cat.png", policy).size == (24, 16)
    assert load_image((allowed / "sub" / "cat.png").as_uri(), policy).size == (24, 16)
    with pytest.raises(InputError, match="not allowed"):
        load_image(str(allowed / "sub" / "cat.png"), MediaPolicy())
    for escape in ("../secret.png", "sub/../../secret.png", str(tmp_path / "secret.png"), "link.png",
                   f"file://{allowed}/../secret.png", "/etc/passwd"):
        with pytest.raises(InputError, match="outside the allowed"):
            load_image(escape, policy)
    with pytest.raises(InputError, match="remote host"):
        load_image("file://otherhost/etc/passwd", policy)
    with pytest.raises(InputError, match="not a file"):
        load_image("sub", policy)
    with pytest.raises(InputError, match="byte"):
        load_image("sub/cat.png", MediaPolicy(local_media_dir=allowed, max_image_bytes=10))


def test_videos_load_from_data_urls_and_files(tmp_path):
    data = encode_video(synthetic_frames(8, 32, 48, seed=1), fps=4)
    (tmp_path / "clip.mp4").write_bytes(data)
    config = VideoProcessorConfig()
    video = load_video(_data_url(data, "video/mp4"), MediaPolicy(), config)
    assert video.frame_indices == [0, 2, 5, 7] and video.fps == 4.0
    same = load_video("clip.mp4", MediaPolicy(local_media_dir=tmp_path), config)
    assert (same.frames == video.frames).all()
    with pytest.raises(InputError, match="byte"):
        load_video(_data_url(data, "video/mp4"), MediaPolicy(max_video_bytes=100), config)
    with pytest.raises(InputError, match="container"):
        load_video(_data_url(_png(), "video/mp4"), MediaPolicy(), config)


def test_content_parts_in_prompt_order():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "compare"},
            {"type": "image_url", "image_url": {"url": "https://a/1.png", "detail": "high"}},
            {"type": "video_url", "video_url": {"url": "https://a/v.mp4"}},
            {"type": "image_url", "image_url": "https://a/2.png"},
        ]},
        {"role": "user", "content": [{"type": "image", "image": "data:image/png;base64,AAAA"},
                                     {"type": "input_image", "image_url": "https://a/3.png"}]},
    ]
    assert [(ref.kind, ref.url) for ref in collect_media(messages)] == [
        ("image", "https://a/1.png"), ("video", "https://a/v.mp4"), ("image", "https://a/2.png"),
        ("image", "data:image/png;base64,AAAA"), ("image", "https://a/3.png")]
    assert media_ref({"type": "text", "text": "hi"}) is None
    with pytest.raises(InputError, match="no url"):
        media_ref({"type": "image_url", "image_url": {}})


def test_real_socket_server_that_stalls_times_out():
    import http.server
    import threading

    release = threading.Event()

    class Stall(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "1000")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            release.wait(5)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(InputError, match="could not fetch"):
            load_image(f"http://127.0.0.1:{server.server_port}/stall.png",
                       MediaPolicy(timeout_s=0.3, allowed_networks=("127.0.0.0/8",)))
        assert time.monotonic() - started < 2
    finally:
        release.set()
        server.shutdown()
        server.server_close()
