"""Images and videos through the real HTTP server and `openai` client, on the demo checkpoint's vision tower:
usage counts the expanded prompt, streaming agrees with non-streaming, and bad media gets a 4xx."""
import base64
import functools
import http.server
import io
import subprocess
import sys
import threading
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from server_harness import serving
from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.model.loader import load_model
from qwen35.planner.errors import InputError
from qwen35.runtime.server.errors import APIError
from qwen35.runtime.server.launch import ServeOptions
from qwen35.runtime.server.media_parts import MediaPart, VisionServing, load_media, vision_serving
from qwen35.runtime.server.settings import ServerSettings
from qwen35.runtime.vision import MediaPolicy

NAME = "qwen35-vision"
CONTEXT = 512
MAX_IMAGE_BYTES = 8192
CHAT = "/v1/chat/completions"
QUESTION = "What is in this picture?"
# 64x48 is upscaled to the 65536-pixel minimum: 224x320, a 14x20 patch grid, 2x2 merged into 70 tokens.
IMAGE_TOKENS = 70


def _png(width=64, height=48, noise=False) -> bytes:
    if noise:
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        rows, cols = np.mgrid[0:height, 0:width]
        pixels = np.stack([rows * 255 // height, cols * 255 // width, (rows + cols) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _mp4(frames=8, fps=8) -> bytes:
    """A tiny mpeg4 clip: `frames` 64x48 frames at `fps`."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as output:
        stream = output.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            pixels = np.full((48, 64, 3), 20 * index, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


IMAGE_URL = _data_url(_png(), "image/png")


def _user(*parts, text=QUESTION):
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


def _image_part(url=IMAGE_URL):
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("allowed_media")
    (directory / "picture.png").write_bytes(_png())
    return directory


@pytest.fixture(scope="module")
def vision_server(demo_path, demo_tokenizer, media_dir):
    model = load_model(demo_path, progress=False)
    # 32-token chunks: every image's 70 pads span three prefill chunks.
    config = EngineConfig(max_running_requests=4, max_queue=16, max_model_len=CONTEXT,
                          prefill_chunk_size=32, max_prefill_tokens=64)
    runner, _ = build_runner(model, config)  # what `qwen35 serve` runs
    engine = AsyncEngine(LLMEngine(runner, config, demo_tokenizer, DEFAULT_STOP_TOKEN_IDS))
    policy = MediaPolicy(local_media_dir=media_dir, max_image_bytes=MAX_IMAGE_BYTES, timeout_s=5.0,
                         allowed_networks=("127.0.0.0/8",))  # http_media serves on loopback
    settings = ServerSettings(served_model_names=[NAME], max_model_len=CONTEXT, model_root=str(demo_path),
                              request_timeout=120.0, max_n=2, text_only=False, max_body_bytes=1 << 20,
                              vision=vision_serving(demo_path, model.config, policy),
                              sampling_defaults={"temperature": 0.0})
    with serving(engine, demo_tokenizer, settings) as server:
        yield server


@pytest.fixture(scope="module")
def client(vision_server):
    return OpenAI(base_url=vision_server.v1, api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def http_media(media_dir):
    """An http server on a free port serving the allowed media directory."""
    handler = functools.partial(_QuietHandler, directory=str(media_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _rendered_tokens(tokenizer, *kinds: str) -> int:
    """Prompt tokens of the template's rendering, one placeholder per item (what a text-only count sees)."""
    content = [{"type": "text", "text": QUESTION}, *({"type": kind} for kind in kinds)]
    return len(tokenizer.apply_chat_template([{"role": "user", "content": content}]))


def test_image_request_end_to_end(client, demo_tokenizer):
    # The random demo model mostly picks ids outside its small tokenizer, so tokens are compared, not text.
    request = dict(model=NAME, messages=_user(_image_part()), max_tokens=8, extra_body={"return_token_ids": True})
    reply = client.chat.completions.create(**request)
    expected = _rendered_tokens(demo_tokenizer, "image") + IMAGE_TOKENS - 1
    assert reply.usage.prompt_tokens == expected == len(reply.prompt_token_ids)
    assert reply.prompt_token_ids.count(demo_tokenizer.token_id("<|image_pad|>")) == IMAGE_TOKENS
    assert reply.usage.completion_tokens == 8 and reply.choices[0].finish_reason == "length"
    assert len(reply.choices[0].token_ids) == 8 and isinstance(reply.choices[0].message.content, str)

    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    streamed = [t for c in chunks if c.choices for t in (getattr(c.choices[0], "token_ids", None) or [])]
    assert streamed == reply.choices[0].token_ids
    assert chunks[-1].usage.prompt_tokens == expected


def test_image_from_http_and_allowed_local_file(client, demo_tokenizer, http_media, media_dir):
    extra = {"return_token_ids": True}
    want = client.chat.completions.create(model=NAME, messages=_user(_image_part()), max_tokens=4, extra_body=extra)
    for url in (f"{http_media}/picture.png", str(media_dir / "picture.png"), f"file://{media_dir}/picture.png"):
        reply = client.chat.completions.create(model=NAME, messages=_user(_image_part(url)), max_tokens=4,
                                               extra_body=extra)
        assert reply.choices[0].token_ids == want.choices[0].token_ids, url
        assert reply.usage.prompt_tokens == want.usage.prompt_tokens


def test_mm_processor_kwargs_change_the_image_size(client, demo_tokenizer):
    # A 4096-pixel minimum keeps 64x48 at 64x64: a 4x4 grid, 4 tokens.
    reply = client.chat.completions.create(model=NAME, messages=_user(_image_part()), max_tokens=2,
                                           extra_body={"mm_processor_kwargs": {"min_pixels": 4096}})
    assert reply.usage.prompt_tokens == _rendered_tokens(demo_tokenizer, "image") + 4 - 1


def _video_tokens(tokenizer, stamps: list[str], pads_per_group: int) -> int:
    """Each frame group: its timestamp text, <|vision_start|>, the pads, <|vision_end|>."""
    return sum(len(tokenizer.encode(stamp)) + 2 + pads_per_group for stamp in stamps)


def test_video_as_mp4_and_as_frames(client, demo_tokenizer):
    # The template's <|vision_start|><|video_pad|><|vision_end|> is replaced whole by the groups.
    base = _rendered_tokens(demo_tokenizer, "video") - 3
    video = {"type": "video_url", "video_url": {"url": _data_url(_mp4(), "video/mp4")}}
    # 8 frames at 8 fps sampled at 2 fps, raised to min_frames 4: frames 0, 2, 5, 7 in two groups of
    # 64x64 (4 tokens each) at (0 + 0.25) / 2 and (0.625 + 0.875) / 2 seconds.
    reply = client.chat.completions.create(model=NAME, messages=_user(video), max_tokens=4)
    assert reply.usage.prompt_tokens == base + _video_tokens(demo_tokenizer, ["<0.1 seconds>", "<0.8 seconds>"], 4)
    assert reply.usage.completion_tokens == 4
    # num_frames 2 keeps frames 0 and 7: one group at 0.4375 s.
    fewer = client.chat.completions.create(model=NAME, messages=_user(video), max_tokens=4,
                                           extra_body={"mm_processor_kwargs": {"num_frames": 2}})
    assert fewer.usage.prompt_tokens == base + _video_tokens(demo_tokenizer, ["<0.4 seconds>"], 4)
    # Four frames sent as images are taken as sampled at the processor's 2 fps: groups at 0.25 s and 1.25 s.
    frames = {"type": "video", "video": [IMAGE_URL] * 4}
    as_frames = client.chat.completions.create(model=NAME, messages=_user(frames), max_tokens=4)
    assert as_frames.usage.prompt_tokens == base + _video_tokens(demo_tokenizer, ["<0.2 seconds>",
                                                                                      "<1.2 seconds>"], 4)


BAD_MEDIA = [
    ("undecodable", _user(_image_part("data:image/png;base64,AAAA")), {}, 400, "could not be decoded"),
    ("not-base64", _user(_image_part("data:image/png;base64,@@@@")), {}, 400, "not valid base64"),
    ("oversized", _user(_image_part(_data_url(_png(noise=True), "image/png"))), {}, 413, "over 8192 bytes"),
    ("local-outside-allowed-dir", _user(_image_part(__file__)), {}, 400, "outside the allowed media directory"),
    ("unsupported-scheme", _user(_image_part("ftp://example.com/cat.png")), {}, 400, "scheme 'ftp'"),
    ("empty-frame-list", _user({"type": "video", "video": []}), {}, 400, "non-empty list"),
    ("bad-video", _user({"type": "video_url", "video_url": {"url": _data_url(b"not a video", "video/mp4")}}), {},
     400, "not MP4/MOV"),
    ("audio", _user({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}), {}, 400,
     "not supported"),
    ("unknown-kwarg", _user(_image_part()), {"mm_processor_kwargs": {"resolution": 4}}, 400, "unsupported"),
    ("literal-pad-in-text", _user(_image_part(), text="<|image_pad|> here"), {}, 400, "placeholder"),
]


@pytest.mark.parametrize("name, messages, extra, status, fragment", BAD_MEDIA, ids=[c[0] for c in BAD_MEDIA])
def test_bad_media_gets_a_4xx(vision_server, name, messages, extra, status, fragment):
    with httpx.Client(base_url=vision_server.url, timeout=60) as http:
        response = http.post(CHAT, json={"model": NAME, "messages": messages, "max_tokens": 2, **extra})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_mm_processor_kwargs_past_every_range_are_400s(vision_server):
    """Values a float cannot hold (a 400-digit integer) or no video has: the client's error, never a 500."""
    video = {"type": "video_url", "video_url": {"url": _data_url(_mp4(), "video/mp4")}}
    with httpx.Client(base_url=vision_server.url, timeout=120) as http:
        for key in ("fps", "num_frames", "min_frames", "max_frames", "min_pixels", "max_pixels", "size"):
            for value in (10 ** 400, 2 ** 63, 1e308, -1, "x", [1], {"shortest_edge": 10 ** 400}):
                for part in (_image_part(), video):
                    response = http.post(CHAT, json={"model": NAME, "messages": _user(part), "max_tokens": 1,
                                                     "mm_processor_kwargs": {key: value}})
                    assert response.status_code == 400, (key, value, response.text)
                    assert response.json()["error"]["param"] == "mm_processor_kwargs"


def test_server_keeps_serving_after_bad_media(vision_server, client):
    with httpx.Client(base_url=vision_server.url, timeout=60) as http:
        for _, messages, extra, status, _ in BAD_MEDIA[:5]:
            assert http.post(CHAT, json={"model": NAME, "messages": messages, **extra}).status_code == status
    reply = client.chat.completions.create(model=NAME, messages=_user(_image_part()), max_tokens=2)
    assert reply.choices[0].finish_reason == "length"
    assert vision_server.engine.num_running == 0


def test_local_files_are_refused_without_an_allowed_directory(demo_path, demo_tokenizer, media_dir):
    vision = VisionServing.from_checkpoint(demo_path, MediaPolicy())
    ids = demo_tokenizer.encode("<|vision_start|><|image_pad|><|vision_end|>")
    part = MediaPart("image", "messages[0].content[1]", url=str(media_dir / "picture.png"))
    with pytest.raises(APIError) as caught:
        load_media(ids, [part], vision, None, demo_tokenizer.encode)
    assert caught.value.status == 400 and "local file media is not allowed" in caught.value.message
    assert caught.value.param == "messages[0].content[1]"


def test_media_urls_cannot_reach_this_machine_by_default(vision_server, demo_path, demo_tokenizer):
    """The reported hole: an image URL naming the server's own /metrics was fetched."""
    count = lambda: int(metric_line(httpx.get(vision_server.url + "/metrics").text))  # noqa: E731
    before = count()
    vision = VisionServing.from_checkpoint(demo_path, MediaPolicy())
    ids = demo_tokenizer.encode("<|vision_start|><|image_pad|><|vision_end|>")
    for url in (vision_server.url + "/metrics", vision_server.url.replace("127.0.0.1", "localhost") + "/metrics",
                "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(APIError) as caught:
            load_media(ids, [MediaPart("image", "messages[0].content[1]", url=url)], vision, None,
                       demo_tokenizer.encode)
        assert caught.value.status == 400 and "could not fetch" in caught.value.message
    assert count() == before + 1, "only the scrapes reached /metrics"
    assert ServeOptions(model="m", allowed_media_networks=["10.0.0.0/8", "fd00::/8"]).validate() is None
    with pytest.raises(InputError, match="--allowed-media-network"):
        ServeOptions(model="m", allowed_media_networks=["10.0.0.0/33"]).validate()


def metric_line(text: str) -> str:
    """How many /metrics answers the scraped text counts ("0" before the first)."""
    lines = [line for line in text.splitlines() if line.startswith('qwen35_requests_total{endpoint="/metrics"')]
    return lines[0].rsplit(" ", 1)[1] if lines else "0"


def test_cli_checks_the_allowed_media_directory(tmp_path):
    qwen35 = str(Path(sys.executable).with_name("qwen35"))
    help_text = subprocess.run([qwen35, "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--allowed-local-media-path" in help_text
    result = subprocess.run([qwen35, "serve", "--model", str(tmp_path), "--port", "0",
                             "--allowed-local-media-path", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--allowed-local-media-path" in result.stderr
    assert "Traceback" not in result.stderr


def test_context_check_counts_the_expanded_prompt(vision_server, demo_tokenizer):
    rendered = _rendered_tokens(demo_tokenizer, "image")
    # Fits with one placeholder token, not with the image's 70.
    body = {"model": NAME, "messages": _user(_image_part()), "max_tokens": CONTEXT - rendered - 10}
    with httpx.Client(base_url=vision_server.url, timeout=60) as http:
        response = http.post(CHAT, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert f"{rendered + IMAGE_TOKENS - 1} in the prompt" in error["message"]


def test_checkpoints_without_a_vision_tower_stay_text_only(demo_path):
    from dataclasses import replace

    from qwen35.runtime.demo import demo_config

    assert vision_serving(demo_path, replace(demo_config(), vision=None), MediaPolicy()) is None
    assert vision_serving(demo_path, demo_config(), MediaPolicy()).merge_size == 2
