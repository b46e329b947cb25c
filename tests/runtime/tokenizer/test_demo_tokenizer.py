"""The demo tokenizer files: HF's layout, Qwen3.5's id space, reproducible bytes, quick to build."""
import json
import time

from qwen35.runtime.tokenizer import write_demo_tokenizer
from qwen35.runtime.tokenizer.demo_tokenizer import _build_tokenizer_json, demo_tokenizer_json, tokenizer_config
from qwen35.runtime.tokenizer.special_tokens import ADDED_TOKENS, BPE_VOCAB_SIZE


def test_tokenizer_json_layout():
    started = time.process_time()
    text = _build_tokenizer_json()
    assert time.process_time() - started < 8.0
    document = json.loads(text)
    model = document["model"]
    assert model["type"] == "BPE" and model["ignore_merges"] is False and model["byte_fallback"] is False
    assert len(model["vocab"]) == BPE_VOCAB_SIZE == 248044
    assert sorted(model["vocab"].values()) == list(range(BPE_VOCAB_SIZE))
    assert len(model["merges"]) > 300
    assert document["normalizer"]["type"] == "NFC"
    assert [step["type"] for step in document["pre_tokenizer"]["pretokenizers"]] == ["Split", "ByteLevel"]
    assert document["decoder"]["type"] == "ByteLevel"
    added = {record["content"]: (record["id"], record["special"]) for record in document["added_tokens"]}
    assert added == {token.content: (token.id, token.special) for token in ADDED_TOKENS}
    assert all(record["normalized"] is False for record in document["added_tokens"])


def test_build_is_reproducible():
    assert _build_tokenizer_json() == demo_tokenizer_json()


def test_tokenizer_config_shape():
    config = tokenizer_config()
    decoder = config["added_tokens_decoder"]
    assert list(decoder) == [str(token_id) for token_id in range(248044, 248077)]
    assert decoder["248046"] == {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False,
                                 "single_word": False, "special": True}
    assert decoder["248058"]["content"] == "<tool_call>" and decoder["248058"]["special"] is False
    assert config["eos_token"] == "<|im_end|>" and config["pad_token"] == "<|endoftext|>"
    assert config["bos_token"] is None and config["model_max_length"] == 262144
    assert "chat_template" not in config
    assert tokenizer_config(chat_template="x")["chat_template"] == "x"


def test_written_files(tmp_path):
    paths = write_demo_tokenizer(tmp_path, thinking_default=False)
    assert sorted(path.name for path in paths) == ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    assert "{%- set default_thinking = false %}" in (tmp_path / "chat_template.jinja").read_text()
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == tokenizer_config()
