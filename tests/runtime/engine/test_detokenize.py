"""Incremental detokenizing over a small trained byte-level BPE, and stop-string matching."""
import random

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from qwen35.runtime.engine.detokenize import REPLACEMENT_CHAR, IncrementalDetokenizer, StopMatcher

SENTENCES = [
    "The café serves crème brûlée and naïve déjà vu.",
    "日本語のテキストと日本の文化。",
    "Emoji time: 🙂🚀 and 👩‍💻 at work, ünïcödé everywhere.",
    "plain ascii text with spaces, numbers 12345 and punctuation!?",
]
PIECES = ["é", "日本", "🙂", "🚀", " the", "a", "語", "\n", " ", "x", "ü", "👩‍💻", "<think>"]


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # A small vocabulary keeps most multi-byte characters split across several tokens.
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    # Like Qwen: <think> / <tool_call> are added but not special, so they always decode.
    tok.add_tokens([AddedToken("<think>", special=False), AddedToken("<tool_call>", special=False)])
    return tok


def _stream(tokenizer, ids, skip_special_tokens=True):
    detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
    deltas = [detok.feed(i) for i in ids]
    deltas.append(detok.flush())
    assert detok.text == "".join(deltas)
    return deltas


def test_split_character_is_held_until_complete(tokenizer):
    ids = tokenizer.encode("🙂").ids
    assert len(ids) > 1  # the emoji really is split into byte pieces
    assert tokenizer.decode(ids[:1]).endswith(REPLACEMENT_CHAR)
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.feed(i) for i in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1)
    assert deltas[-1] == "🙂"
    assert detok.flush() == ""


def test_random_text_streams_exactly_without_replacement_chars(tokenizer):
    rng = random.Random(0)
    for _ in range(60):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 25)))
        ids = tokenizer.encode(text).ids
        deltas = _stream(tokenizer, ids)
        assert "".join(deltas) == tokenizer.decode(ids) == text
        assert not any(REPLACEMENT_CHAR in d for d in deltas)


def test_random_ids_concatenate_to_full_decode(tokenizer):
    rng = random.Random(1)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    clean = 0
    for _ in range(200):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(1, 12))]
        for skip in (True, False):
            full = tokenizer.decode(ids, skip_special_tokens=skip)
            deltas = _stream(tokenizer, ids, skip_special_tokens=skip)
            assert "".join(deltas) == full
            if REPLACEMENT_CHAR not in full:
                clean += 1
                assert not any(REPLACEMENT_CHAR in d for d in deltas)
    assert clean > 20  # the no-U+FFFD property was exercised, not vacuous


def test_special_tokens_skipped_or_kept(tokenizer):
    end = tokenizer.token_to_id("<|im_end|>")
    think = tokenizer.token_to_id("<think>")
    ids = [think] + tokenizer.encode("日本").ids + [end]
    assert "".join(_stream(tokenizer, ids, skip_special_tokens=True)) == "<think>日本"
    assert "".join(_stream(tokenizer, ids, skip_special_tokens=False)) == "<think>日本<|im_end|>"


def test_flush_releases_an_unfinished_character(tokenizer):
    ids = tokenizer.encode("a🙂").ids[:-1]
    detok = IncrementalDetokenizer(tokenizer)
    assert "".join(detok.feed(i) for i in ids) == "a"
    tail = detok.flush()
    assert tail.endswith(REPLACEMENT_CHAR) and "a" + tail == tokenizer.decode(ids)


def _run_matcher(stops, deltas):
    matcher = StopMatcher(stops)
    out = [matcher.feed(d) for d in deltas]
    out.append(matcher.flush())
    return "".join(out), matcher.matched, out


def test_stop_string_across_deltas():
    text, matched, out = _run_matcher(["</answer>"], ["The answer is 42</", "ans", "wer> trailing"])
    assert text == "The answer is 42" and matched == "</answer>"
    assert out[0] == "The answer is 42"  # "</" held back, not emitted
    assert out[1] == ""


def test_multiple_stop_strings_first_completion_wins():
    assert _run_matcher(["STOP", "\n\n"], ["line\n", "\nmore STOP"])[:2] == ("line", "\n\n")
    assert _run_matcher(["STOP", "\n\n"], ["a STO", "P\n\n"])[:2] == ("a ", "STOP")
    # Both end at the same character: the longer (earlier starting) one cuts first.
    assert _run_matcher(["cd", "abcd"], ["ab", "cd"])[:2] == ("", "abcd")


def test_stop_result_does_not_depend_on_delta_split():
    rng = random.Random(2)
    stops = ["<|end|>", "end", "\n\n\n"]
    for _ in range(100):
        pieces = ["e", "n", "d", "<|", "|>", "\n", "x", "<|end"]
        full = "".join(rng.choice(pieces) for _ in range(30))
        want_text, want_stop, _ = _run_matcher(stops, [full])
        cuts = sorted(rng.sample(range(1, len(full)), 5))
        parts = [full[a:b] for a, b in zip([0] + cuts, cuts + [len(full)])]
        assert _run_matcher(stops, parts)[:2] == (want_text, want_stop)
        assert _run_matcher(stops, list(full))[:2] == (want_text, want_stop)


def test_no_false_hold_back():
    matcher = StopMatcher(["abc"])
    assert matcher.feed("xxab") == "xx"
    assert matcher.feed("x") == "abx"  # the partial match broke: release at once
    assert matcher.feed("a") == ""
    assert matcher.flush() == "a"  # end of stream: nothing was a stop
    assert matcher.matched is None
    assert StopMatcher(["abc"]).feed("hello") == "hello"
    assert StopMatcher([]).feed("anything") == "anything"


def test_nothing_after_stop():
    matcher = StopMatcher(["##"])
    assert matcher.feed("a#") == "a"
    assert matcher.feed("#b") == ""
    assert matcher.stopped and matcher.feed("more") == "" and matcher.flush() == ""
