"""load_tokenizer on the demo tokenizer: Qwen3.5's special-token ids, round trips, stop ids, template lookup."""
import json
import time

import pytest

from qwen35.planner.errors import InputError
from qwen35.runtime.tokenizer import (
    ADDED_TOKEN_IDS,
    TOKENIZER_ID_COUNT,
    chat_template_text,
    load_chat_template,
    load_tokenizer,
    write_demo_tokenizer,
)
from qwen35.runtime.tokenizer.special_tokens import ADDED_TOKENS

# Facts §4 plus the rest of Qwen3.5's added tokens (its tokenizer_config.json added_tokens_decoder).
QWEN35_IDS = {
    "<|endoftext|>": 248044, "<|im_start|>": 248045, "<|im_end|>": 248046,
    "<|object_ref_start|>": 248047, "<|object_ref_end|>": 248048, "<|box_start|>": 248049,
    "<|box_end|>": 248050, "<|quad_start|>": 248051, "<|quad_end|>": 248052,
    "<|vision_start|>": 248053, "<|vision_end|>": 248054, "<|vision_pad|>": 248055,
    "<|image_pad|>": 248056, "<|video_pad|>": 248057, "<tool_call>": 248058, "</tool_call>": 248059,
    "<|fim_prefix|>": 248060, "<|fim_middle|>": 248061, "<|fim_suffix|>": 248062, "<|fim_pad|>": 248063,
    "<|repo_name|>": 248064, "<|file_sep|>": 248065, "<tool_response>": 248066, "</tool_response>": 248067,
    "<think>": 248068, "</think>": 248069, "<|audio_start|>": 248070, "<|audio_end|>": 248071,
    "<tts_pad>": 248072, "<tts_text_bos>": 248073, "<tts_text_eod>": 248074, "<tts_text_bos_single>": 248075,
    "<|audio_pad|>": 248076,
}

ROUND_TRIP_TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog 1234567890 times.",
    "  leading and trailing spaces\t\tand tabs\n\n\nand newlines  ",
    "Ünïcödé, 中文字符, русский текст, العربية, emoji 🙂👍🏽 and a ZWJ family 👨‍👩‍👧",
    "def add(a, b):\n    return a + b  # it's code\n",
    "e\u0301 stays decomposed? NFC composes it",
    "",
]


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    write_demo_tokenizer(directory)
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [248046, 248044]}))
    return directory


@pytest.fixture(scope="module")
def tokenizer(checkpoint_dir):
    return load_tokenizer(checkpoint_dir)


def test_added_token_table_matches_qwen35():
    assert {token.content: token.id for token in ADDED_TOKENS} == QWEN35_IDS
    assert ADDED_TOKEN_IDS == QWEN35_IDS
    assert TOKENIZER_ID_COUNT == 248077 == max(QWEN35_IDS.values()) + 1


def test_every_special_token_sits_at_its_real_id(tokenizer):
    assert tokenizer.vocab_size == 248077
    for content, token_id in QWEN35_IDS.items():
        assert tokenizer.token_id(content) == token_id
        assert tokenizer.encode(content) == [token_id]
        assert tokenizer.decode([token_id]) == content
    with pytest.raises(KeyError):
        tokenizer.token_id("<|not_a_token|>")


def test_special_tokens_inside_text_become_single_ids(tokenizer):
    ids = tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert ids[0] == 248045 and ids[-2:] == [248068, tokenizer.encode("\n")[0]]
    assert ids.count(248046) == 1 and ids.count(248045) == 2
    assert tokenizer.decode(ids) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_text_round_trips(tokenizer, text):
    import unicodedata

    assert tokenizer.decode(tokenizer.encode(text)) == unicodedata.normalize("NFC", text)


def test_trained_merges_compress_ordinary_text(tokenizer):
    text = "The assistant answers the question of the user."
    assert len(tokenizer.encode(text)) < len(text.encode()) / 2
    assert tokenizer.encode_batch([text, "x"]) == [tokenizer.encode(text), tokenizer.encode("x")]


def test_skip_special_tokens_keeps_the_non_special_markers(tokenizer):
    ids = tokenizer.encode("<|im_start|>assistant\n<think>\nhm\n</think>\n\n<tool_call>x</tool_call><|im_end|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == (
        "assistant\n<think>\nhm\n</think>\n\n<tool_call>x</tool_call>")
    assert tokenizer.is_special(248046) and not tokenizer.is_special(248068)


def test_embedding_padding_ids_decode_to_nothing(tokenizer):
    hello = tokenizer.encode("hello")
    assert tokenizer.decode(hello + [248100, 248319]) == "hello"


def test_stop_and_pad_ids(tokenizer, checkpoint_dir, tmp_path):
    assert tokenizer.eos_token_ids == (248046, 248044)
    assert tokenizer.pad_token_id == 248044
    assert tokenizer.model_max_length == 262144
    # Without generation_config.json, config.json and then tokenizer_config's eos_token decide.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((checkpoint_dir / name).read_bytes())
    assert load_tokenizer(tmp_path).eos_token_ids == (248046,)
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": 248044}}))
    assert load_tokenizer(tmp_path).eos_token_ids == (248044, 248046)


def test_matches_transformers_tokenizer(checkpoint_dir, tokenizer):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(str(checkpoint_dir))
    assert len(theirs) == 248077
    assert theirs.eos_token_id == 248046 and theirs.pad_token_id == 248044
    for text in ROUND_TRIP_TEXTS + ["<|vision_start|><|image_pad|><|vision_end|> <tool_call>\n"]:
        assert tokenizer.encode(text) == theirs.encode(text, add_special_tokens=False)
    messages = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(messages) == theirs.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False)


def test_loading_is_fast(checkpoint_dir):
    # CPU time, not wall time: the suite may share the machine. The real tokenizer.json has the
    # same 248k-entry vocabulary, so this is also what loading a hub checkpoint costs.
    started = time.process_time()
    load_tokenizer(checkpoint_dir)
    assert time.process_time() - started < 3.0


def test_template_file_wins_over_tokenizer_config(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "config:{{ messages[0].content }}"}))
    assert load_chat_template(tmp_path).render([{"role": "user", "content": "x"}]) == "config:x"
    (tmp_path / "chat_template.jinja").write_text("file:{{ messages[0].content }}")
    assert load_chat_template(tmp_path).render([{"role": "user", "content": "x"}]) == "file:x"


def test_named_templates_in_tokenizer_config(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": {"content": "<|im_end|>"},
        "chat_template": [{"name": "default", "template": "d{{ eos_token }}"},
                          {"name": "tool_use", "template": "t{{ tools | length }}"}],
    }))
    assert load_chat_template(tmp_path).render([{"role": "user", "content": "x"}]) == "d<|im_end|>"
    tool_use = load_chat_template(tmp_path, name="tool_use")
    assert tool_use.render([{"role": "user", "content": "x"}], tools=[{"name": "a"}]) == "t1"
    with pytest.raises(InputError, match="no chat template named 'missing'"):
        load_chat_template(tmp_path, name="missing")


def test_checkpoint_without_template(checkpoint_dir, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((checkpoint_dir / "tokenizer.json").read_bytes())
    assert load_chat_template(tmp_path) is None
    bare = load_tokenizer(tmp_path)
    assert bare.chat_template is None and bare.eos_token_ids == ()
    with pytest.raises(InputError, match="no chat template"):
        bare.apply_chat_template([{"role": "user", "content": "x"}])


def test_missing_or_broken_tokenizer_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(InputError, match="could not be read"):
        load_tokenizer(tmp_path)


def test_apply_chat_template_uses_the_checkpoint_template(tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], enable_thinking=False)
    assert tokenizer.decode(ids) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tokenizer.chat_template.source == chat_template_text(thinking_default=True)
