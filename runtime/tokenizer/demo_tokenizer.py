"""Build a small but real byte-level BPE tokenizer laid out like Qwen3.5's (same ids for every added token)."""
from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers

from qwen35.runtime.tokenizer.chat_template import TEMPLATE_FILE, chat_template_text
from qwen35.runtime.tokenizer.special_tokens import ADDED_TOKENS, BPE_VOCAB_SIZE

# Qwen3.5's tokenizer.json splits text with this pattern before the byte-level mapping
# (contractions, letter runs with an optional leading symbol, single digits, punctuation runs, newlines).
QWEN35_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TRAINED_VOCAB_SIZE = 1200
MODEL_MAX_LENGTH = 262144

# Our own training text: small, but with the words chat prompts, tool calls and a demo answer use.
_CORPUS = """\
The demo model is a tiny Qwen3.5 checkpoint with random weights. It exists so that the planner,
the launcher, the runtime and the server can be exercised end to end on a laptop without a GPU.
Its answers are noise, but every piece around it is real: the configuration files, the tensor
names and shapes, the shards and their index, the tokenizer and the chat template.
A user asks a question and the assistant answers. The system prompt sets the tone of the
conversation. When the assistant thinks, it writes its reasoning between think tags first and
then gives the final answer. When thinking is off, the think block is empty.
The assistant may call a function when a tool fits the request. A tool call names the function
and gives each parameter on its own lines; the tool response comes back in the next user turn.
For example, the function get_weather takes a city and a number of days, and returns the
forecast: sunny in Paris, rain in London, snow in Oslo, wind in Chicago, fog in San Francisco.
Numbers are split into single digits: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14 1e-6 248320.
Code looks like this: def add(a, b): return a + b. for i in range(10): print(i). x = {"key": [1, 2]}.
Images and videos are shown to the model as placeholder tokens inside vision markers; the vision
tower turns each patch of sixteen by sixteen pixels into features and merges two by two patches.
Hello! How are you today? I am fine, thank you. What is the capital of France? It is Paris.
Please summarize the following text in one sentence. Translate this sentence into German.
Write a short poem about the sea. Explain how a linear attention layer keeps a recurrent state.
Qwen3.5 mixes gated delta net layers with full attention every fourth layer, and predicts one
extra token with its multi token prediction head, which speculative decoding can use.
"""


def _train_base() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="",
                                     end_of_word_suffix="", fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN35_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TRAINED_VOCAB_SIZE, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tokenizer.train_from_iterator(_CORPUS.splitlines(keepends=True), trainer)
    return tokenizer


def _filler_tokens(vocab: dict[str, int], count: int) -> list[str]:
    # Ids between the trained vocabulary and 248044 hold unreachable "words" glued from trained
    # letter pieces: no merge produces them, so encoding is unchanged, but a random-weight model
    # that samples them decodes to readable word salad instead of noise bytes.
    pieces = sorted((token for token in vocab if token.isascii() and token.isalpha()), key=lambda t: (len(t), t))
    taken = set(vocab)
    fillers: list[str] = []
    for length in (2, 3):
        for parts in itertools.product(pieces, repeat=length):
            word = "\u0120" + "".join(parts)  # U+0120 is the byte-level form of a leading space
            if word not in taken:
                taken.add(word)
                fillers.append(word)
                if len(fillers) == count:
                    return fillers
    raise RuntimeError(f"demo corpus too small: made {len(fillers)} of {count} filler tokens")


@functools.lru_cache(maxsize=1)
def demo_tokenizer_json() -> str:
    """tokenizer.json text: 248044 BPE ids, then Qwen3.5's 33 added tokens at 248044..248076 (built once)."""
    return _build_tokenizer_json()


def _build_tokenizer_json() -> str:
    trained = _train_base()
    # Let the library write the added-token records, then place them after the full-size vocabulary.
    trained.add_tokens([
        AddedToken(token.content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                   special=token.special)
        for token in ADDED_TOKENS
    ])
    document: dict[str, Any] = json.loads(trained.to_str())
    vocab: dict[str, int] = document["model"]["vocab"]
    for word in _filler_tokens(vocab, BPE_VOCAB_SIZE - len(vocab)):
        vocab[word] = len(vocab)
    by_content = {token.content: token.id for token in ADDED_TOKENS}
    for record in document["added_tokens"]:
        record["id"] = by_content[record["content"]]
    return json.dumps(document, ensure_ascii=False)


def build_demo_tokenizer() -> Tokenizer:
    """The demo tokenizer as a `tokenizers.Tokenizer` (see `demo_tokenizer_json`)."""
    return Tokenizer.from_str(demo_tokenizer_json())


def tokenizer_config(*, chat_template: str | None = None) -> dict[str, Any]:
    """tokenizer_config.json in Hugging Face's shape for the demo tokenizer."""
    config: dict[str, Any] = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(token.id): {"content": token.content, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": token.special}
            for token in ADDED_TOKENS
        },
        "additional_special_tokens": [token.content for token in ADDED_TOKENS if token.special],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    return config


def write_demo_tokenizer(out_dir: str | Path, *, thinking_default: bool = True) -> list[Path]:
    """Write tokenizer.json, tokenizer_config.json and chat_template.jinja into out_dir; returns the paths."""
    directory = Path(out_dir)
    paths = [directory / "tokenizer.json", directory / "tokenizer_config.json", directory / TEMPLATE_FILE]
    paths[0].write_text(demo_tokenizer_json(), "utf-8")
    paths[1].write_text(json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    paths[2].write_text(chat_template_text(thinking_default=thinking_default), "utf-8")
    return paths
