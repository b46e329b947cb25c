"""Grammar-constrained decoding in the engine: constraints compile (and fail) as documented, masks
match llguidance's, and random logits at temperature 1 come out valid under the grammar."""
import json

import jsonschema
import numpy as np
import pytest
import torch

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.grammar.bitmask import TokenBitmask
from qwen35.runtime.engine.grammar.compiler import GrammarCompiler
from qwen35.runtime.engine.grammar.constraints import (GrammarError, choice_constraint, json_object_constraint,
                                                       json_schema_constraint, regex_constraint,
                                                       response_format_constraint, structural_tag_constraint)
from qwen35.runtime.engine.grammar.matcher import THINK_END_ID, opens_reasoning
from qwen35.runtime.engine.grammar.tool_grammar import tool_choice_constraint
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.engine.stand_in import LogitsRunner
from qwen35.runtime.server.parsers.tool_calls import ToolCallParser
from qwen35.runtime.tokenizer import Tokenizer, build_demo_tokenizer

VOCAB = 248320
IM_END, TOOL_CALL = 248046, 248058
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "member": {"type": "boolean"},
    },
    "required": ["name", "age", "member"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10},
                   "days": {"type": "integer", "minimum": 1, "maximum": 7},
                   "unit": {"enum": ["celsius", "fahrenheit"]},
                   "options": {"type": "object", "properties": {"hourly": {"type": "boolean"}},
                               "required": ["hourly"], "additionalProperties": False}},
    "required": ["city", "days"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "pattern": "^[A-Z][a-z]{1,8}/[A-Z][a-z]{1,8}$"}},
    "required": ["zone"]}}}
TOOL_TEXT = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n"
             "</parameter>\n<parameter=options>\n{\"hourly\": true}\n</parameter>\n</function>\n</tool_call>\n"
             "<tool_call>\n<function=get_time>\n<parameter=zone>\nEurope/Paris\n</parameter>\n</function>\n"
             "</tool_call>")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(build_demo_tokenizer(), eos_token_ids=[IM_END])


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return GrammarCompiler.for_tokenizer(tokenizer, VOCAB, DEFAULT_STOP_TOKEN_IDS)


def allowed_tokens(matcher) -> set[int]:
    """The tokens llguidance's own bitmask allows next (the reference the engine's mask is held to)."""
    bits = np.unpackbits(np.frombuffer(matcher.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
    return set(np.flatnonzero(bits[:VOCAB]).tolist())


def kept_ids(row: torch.Tensor) -> list[int]:
    return torch.nonzero(row).flatten().tolist()


def takes(compiler, constraint, text: str, tokenizer) -> bool:
    """Whether the grammar takes the whole text (as the tokenizer encodes it) and may end there."""
    matcher = compiler.compile(constraint)[0].matcher()
    ids = tokenizer.encode(text)
    return matcher.matcher.validate_tokens(ids) == len(ids) and matcher.matcher.consume_tokens(ids) \
        and matcher.matcher.is_accepting()


# -- constraints and the compiler --------------------------------------------------------------


def test_compile_is_cached_by_constraint_and_counted(tokenizer):
    compiler = GrammarCompiler.for_tokenizer(tokenizer, VOCAB, DEFAULT_STOP_TOKEN_IDS)
    first, fresh = compiler.compile(json_schema_constraint(PERSON))
    again, fresh_again = compiler.compile(json_schema_constraint(dict(PERSON)))
    assert fresh and not fresh_again and again is first
    assert compiler.stats.compiles == 1 and compiler.stats.cache_hits == 1
    assert 0 < first.compile_seconds == compiler.stats.compile_seconds


def test_cache_drops_the_least_recently_used(tokenizer):
    compiler = GrammarCompiler(GrammarCompiler.for_tokenizer(tokenizer, VOCAB, [IM_END]).tokenizer, cache_size=2)
    a, b, c = (regex_constraint(p) for p in ("a+", "b+", "c+"))
    compiler.compile(a), compiler.compile(b), compiler.compile(a), compiler.compile(c)
    assert not compiler.compile(a)[1] and compiler.compile(b)[1]


@pytest.mark.parametrize("constraint, param, words", [
    (json_schema_constraint({"type": "objekt"}), "response_format.json_schema", "objekt"),
    (regex_constraint("(ab"), "regex", "unclosed group"),
    (json_schema_constraint({"type": "string", "format": "shoe-size"}, strict=True), "response_format.json_schema",
     "shoe-size"),
])
def test_invalid_constraints_name_the_problem(compiler, constraint, param, words):
    with pytest.raises(GrammarError) as caught:
        compiler.compile(constraint)
    assert caught.value.param == param and words in caught.value.message


def test_non_strict_schema_ignores_unsupported_keywords(compiler, tokenizer):
    schema = {"type": "string", "format": "shoe-size", "maxLength": 3}
    assert takes(compiler, json_schema_constraint(schema, strict=False), '"abc"', tokenizer)


@pytest.mark.parametrize("response_format, error", [
    ({"type": "json_schema"}, "'response_format.json_schema' is required"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}, "must be a JSON Schema object"),
    ({"type": "yaml"}, "'response_format.type' 'yaml'"),
])
def test_response_format_errors(response_format, error):
    with pytest.raises(GrammarError, match=error):
        response_format_constraint(response_format)


def test_response_format_kinds(compiler, tokenizer):
    assert response_format_constraint(None) is None and response_format_constraint({"type": "text"}) is None
    obj = response_format_constraint({"type": "json_object"})
    assert takes(compiler, obj, '{"a": [1, 2]}', tokenizer) and not takes(compiler, obj, "[1]", tokenizer)
    schema = response_format_constraint({"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
    assert takes(compiler, schema, '{"name": "Ann", "age": 31, "member": false}', tokenizer)
    assert not takes(compiler, schema, '{"name": "Ann", "age": 31}', tokenizer)  # a required key is missing
    assert not takes(compiler, schema, '{"name": "Ann", "age": 131, "member": false}', tokenizer)


def test_regex_and_choice(compiler, tokenizer):
    assert takes(compiler, regex_constraint(r"\d{3}-[a-z]+"), "123-abc", tokenizer)
    assert not takes(compiler, regex_constraint(r"\d{3}-[a-z]+"), "12-abc", tokenizer)
    choice = choice_constraint(["yes", 'say "no"\n'])
    assert takes(compiler, choice, 'say "no"\n', tokenizer) and not takes(compiler, choice, "maybe", tokenizer)
    for bad in ([], ["ok", ""], "yes"):
        with pytest.raises(GrammarError, match="non-empty list"):
            choice_constraint(bad)


# -- tool calls ---------------------------------------------------------------------------------


def test_required_tool_choice_takes_the_parsers_format(compiler, tokenizer):
    constraint = tool_choice_constraint([WEATHER, TIME], "required")
    assert takes(compiler, constraint, TOOL_TEXT, tokenizer)
    parser = ToolCallParser([WEATHER, TIME])
    parser.feed(TOOL_TEXT), parser.flush()
    assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == [
        ("get_weather", {"city": "Paris", "days": 3, "options": {"hourly": True}}),
        ("get_time", {"zone": "Europe/Paris"})]


@pytest.mark.parametrize("text", [
    TOOL_TEXT.replace("<parameter=days>\n3\n", "<parameter=days>\n9\n"),  # maximum 7
    TOOL_TEXT.replace("get_time", "get_date"),  # not a declared tool
    TOOL_TEXT.replace("<parameter=city>\nParis\n</parameter>\n", ""),  # city is required
    TOOL_TEXT.replace("Europe/Paris", "europe/paris"),  # the pattern
    TOOL_TEXT.replace("{\"hourly\": true}", "{\"hourly\": 1}"),
    "I will call it.\n" + TOOL_TEXT,  # text before the call
])
def test_required_tool_choice_refuses_what_the_schemas_do(compiler, tokenizer, text):
    assert not takes(compiler, tool_choice_constraint([WEATHER, TIME], "required"), text, tokenizer)


def test_named_tool_choice_is_one_call_of_that_tool(compiler, tokenizer):
    named = tool_choice_constraint([WEATHER, TIME], {"name": "get_time"})
    one_call = TOOL_TEXT[TOOL_TEXT.index("<tool_call>\n<function=get_time>"):]
    assert takes(compiler, named, one_call, tokenizer)
    assert not takes(compiler, named, TOOL_TEXT, tokenizer)
    single = tool_choice_constraint([WEATHER, TIME], "required", parallel_tool_calls=False)
    assert not takes(compiler, single, TOOL_TEXT, tokenizer) and takes(compiler, single, one_call, tokenizer)
    assert tool_choice_constraint([WEATHER], "auto") is None and tool_choice_constraint([WEATHER], "none") is None


WRITE_FILE = {"type": "function", "function": {"name": "write_file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string", "maxLength": 20}, "content": {"type": "string"}},
    "required": ["path", "content"]}}}


def write_call(content: str) -> str:
    return (f"<tool_call>\n<function=write_file>\n<parameter=path>\nindex.html\n</parameter>\n"
            f"<parameter=content>\n{content}\n</parameter>\n</function>\n</tool_call>")


@pytest.mark.parametrize("content", ["<html>\n  <body>a < b && c > d</body>\n</html>", "if (x<3) { y = '<'; }",
                                     "</para>", "<parameter", "", "two\n\nlines\n"])
def test_string_arguments_may_hold_markup_and_code(compiler, tokenizer, content):
    # Anything but the tags the parser ends a value at: the parser reads the same string back.
    assert takes(compiler, tool_choice_constraint([WRITE_FILE], "required"), write_call(content), tokenizer)
    parser = ToolCallParser([WRITE_FILE])
    parser.feed(write_call(content)), parser.flush()
    assert json.loads(parser.calls[0].arguments) == {"path": "index.html", "content": content}


@pytest.mark.parametrize("content", ["a\n</parameter>\nb", "x <parameter=path> y", "done</function>"])
def test_string_arguments_cannot_hold_the_parsers_end_tags(compiler, tokenizer, content):
    assert not takes(compiler, tool_choice_constraint([WRITE_FILE], "required"), write_call(content), tokenizer)


def test_bounded_strings_keep_their_length_and_leave_out_markup(compiler, tokenizer):
    # A counted repetition under the tag exclusion overwhelms llguidance's lexer, so a maxLength string
    # keeps its bounds and refuses `<` instead.
    named = tool_choice_constraint([WEATHER], {"name": "get_weather"})
    call = TOOL_TEXT[:TOOL_TEXT.index("\n<tool_call>\n<function=get_time>")]
    assert takes(compiler, named, call.replace("Paris", "Nice, 06"), tokenizer)
    assert not takes(compiler, named, call.replace("Paris", "Nice, 06000"), tokenizer)  # 11: over maxLength 10
    assert not takes(compiler, named, call.replace("Paris", "<b>Ni</b>"), tokenizer)
    long_file = {"type": "function", "function": {"name": "write_file", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string", "maxLength": 4096},
                                         "notes": {"type": "string", "minLength": 10000}},
        "required": ["path", "content"]}}}
    text = ("let x = 1; y = 2;\n" * 200)[:3000]
    assert takes(compiler, tool_choice_constraint([long_file], "required"), write_call(text), tokenizer)
    assert not takes(compiler, tool_choice_constraint([long_file], "required"), write_call("<p>" + text), tokenizer)


def test_call_tags_are_the_single_special_tokens(compiler):
    matcher = compiler.compile(tool_choice_constraint([WEATHER], "required"))[0].matcher()
    assert allowed_tokens(matcher) == {TOOL_CALL}


# -- matcher and bitmask ------------------------------------------------------------------------


def test_opens_reasoning():
    think, end, turn = 248068, THINK_END_ID, 248045
    assert opens_reasoning([turn, 5, think, 6])
    assert not opens_reasoning([turn, 5, think, 6, end, 7])
    assert not opens_reasoning([turn, think, 1, end, turn, 5])  # an earlier turn's block
    assert not opens_reasoning([1, 2, 3])


def test_bitmask_matches_llguidance_and_leaves_free_rows(compiler, tokenizer):
    matchers = [compiler.compile(json_schema_constraint(PERSON))[0].matcher(),
                None,
                compiler.compile(regex_constraint("[0-9]{2}x"))[0].matcher()]
    matchers[0].matcher.consume_tokens(tokenizer.encode('{"name": "A'))
    logits = torch.randn(3, VOCAB)
    before = logits.clone()
    TokenBitmask(VOCAB, torch.device("cpu")).apply(logits, matchers)
    for row, matcher in enumerate(matchers):
        kept = set(kept_ids(logits[row] > float("-inf")))
        assert kept == (set(range(VOCAB)) if matcher is None else allowed_tokens(matcher))
        assert torch.equal(logits[row][list(kept)], before[row][list(kept)])


def test_draft_masks_follow_the_drafts_and_leave_the_matcher(compiler, tokenizer):
    compiled = compiler.compile(regex_constraint("[0-9]{2}x"))[0]
    matcher = compiled.matcher()
    digit, x_token = tokenizer.encode("7")[0], tokenizer.encode("x")[0]
    drafts = [[digit, x_token, digit]]  # the second draft is refused: positions after it stay free
    logits = torch.zeros(1, 4, VOCAB)
    TokenBitmask(VOCAB, torch.device("cpu")).apply_with_drafts(logits, [matcher], drafts)
    walk = compiled.matcher()
    for j in range(2):
        assert set(kept_ids(logits[0, j] == 0)) == allowed_tokens(walk)
        walk.accept(digit)
    assert x_token not in set(kept_ids(logits[0, 1] == 0))
    assert torch.all(logits[0, 2:] == 0)
    assert allowed_tokens(matcher) == allowed_tokens(compiled.matcher())  # nothing consumed


def test_drafter_masks_follow_the_drafts_so_far(compiler, tokenizer):
    compiled = compiler.compile(regex_constraint("[0-9]{2}x"))[0]
    matcher = compiled.matcher()
    digit, x_token = tokenizer.encode("7")[0], tokenizer.encode("x")[0]
    logits = torch.zeros(3, VOCAB)
    TokenBitmask(VOCAB, torch.device("cpu")).apply(logits, [matcher, matcher, None],
                                                   [[digit], [digit, x_token], [x_token]])
    walk = compiled.matcher()
    walk.accept(digit)
    assert set(kept_ids(logits[0] == 0)) == allowed_tokens(walk)  # the mask after the one draft
    assert torch.all(logits[1] == 0) and torch.all(logits[2] == 0)  # a refused draft, and a free row
    assert allowed_tokens(matcher) == allowed_tokens(compiled.matcher())  # nothing consumed


def test_an_end_of_sequence_draft_after_a_complete_grammar_rolls_back_cleanly(compiler, tokenizer):
    # llguidance does not record a token taken once the grammar is complete: rolling it back as well
    # would undo the closing character before it (the next accept of "}" then failed).
    close = tokenizer.encode("}")[0]
    for fill in ("verify", "draft"):
        matcher = compiler.compile(regex_constraint("ab}"))[0].matcher()
        for token in tokenizer.encode("ab"):
            matcher.accept(token)
        logits = torch.zeros(1, 3, VOCAB) if fill == "verify" else torch.zeros(1, VOCAB)
        bitmask = TokenBitmask(VOCAB, torch.device("cpu"))
        if fill == "verify":
            bitmask.apply_with_drafts(logits, [matcher], [[close, IM_END]])
        else:
            bitmask.apply(logits, [matcher], [[close, IM_END]])
        matcher.accept(close)
        assert matcher.is_terminated


def test_reasoning_is_free_until_think_end(compiler, tokenizer):
    matcher = compiler.compile(regex_constraint("ok"))[0].matcher(in_reasoning=True)
    word = tokenizer.encode("hmm")[0]
    assert not matcher.constrains and matcher.mask_offset([word, word]) is None
    assert matcher.mask_offset([word, THINK_END_ID, word]) == 2
    matcher.accept(word), matcher.accept(THINK_END_ID)
    allowed = allowed_tokens(matcher)
    assert matcher.constrains and allowed and all("ok".startswith(tokenizer.decode([t])) for t in allowed)


# -- the engine ----------------------------------------------------------------------------------


class RandomLogits(LogitsRunner):
    """Logits drawn from N(0, 4) per (sequence, position): at temperature 1, noise over the 248K vocabulary.

    `script` forces the first tokens of every sequence (e.g. reasoning and `</think>`); `boost` raises some
    tokens' logits by 8 at every step.
    """

    def __init__(self, num_slots: int, script: list[int] = (), boost: list[int] = ()):
        super().__init__(num_slots, 512, VOCAB)
        self.script = list(script)
        self.boost = list(boost)

    def logits(self, seqs):
        rows = []
        for seq in seqs:
            position = len(seq.output_ids)
            generator = torch.Generator().manual_seed(seq.seq_id * 10007 + position)
            row = torch.randn(VOCAB, generator=generator) * 2
            row[self.boost] += 8.0
            if position < len(self.script):
                row[self.script[position]] = 1e4
            rows.append(row)
        return torch.stack(rows)


def generate(tokenizer, compiler, constraint, count: int, prompt_ids=(1, 2, 3), script=(), max_tokens=160,
             boost=()):
    """`count` seeded choices of one prompt under the constraint; (text, finish_reason) per choice."""
    config = EngineConfig(max_running_requests=count, max_model_len=512)
    engine = LLMEngine(RandomLogits(count, list(script), list(boost)), config, tokenizer, DEFAULT_STOP_TOKEN_IDS,
                       compiler)
    params = [SamplingParams(temperature=1.0, seed=seed, max_tokens=max_tokens, constraint=constraint)
              for seed in range(count)]
    seqs = engine.add_request(list(prompt_ids), params)
    while engine.has_work:
        engine.step()
    return [(seq.text, seq.finish_reason) for seq in seqs]


def test_random_logits_follow_a_json_schema_every_time(tokenizer, compiler):
    results = generate(tokenizer, compiler, json_schema_constraint(PERSON), 20)
    for text, finish in results:
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), PERSON)
    free = generate(tokenizer, compiler, None, 2, max_tokens=20)
    assert all(not text.startswith("{") for text, _ in free)  # without the mask the noise is not JSON


def test_json_object_gives_objects(tokenizer, compiler):
    # Free strings and objects end only when the noise picks a closing token, so closers are boosted;
    # the boosted tokens in noise order are not JSON either.
    closers = [tokenizer.encode(text)[0] for text in ('"', "}", "]", "1", "true")]
    results = generate(tokenizer, compiler, json_object_constraint(), 6, boost=closers)
    for text, finish in results:
        assert finish == "stop" and isinstance(json.loads(text), dict), text
    free = generate(tokenizer, compiler, None, 2, max_tokens=20, boost=closers)
    for text, _ in free:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


@pytest.mark.parametrize("max_tokens", [3, 12, 40])
def test_json_object_cut_by_max_tokens_is_closed_and_parses(tokenizer, compiler, max_tokens):
    # Plain noise rarely ends a free string by chance: most objects here were closed for the budget
    # ("length"); those the noise finished itself (it picks the "{}" token about half the time) end with "stop".
    results = generate(tokenizer, compiler, json_object_constraint(), 20, max_tokens=max_tokens)
    for text, finish in results:
        assert finish in ("length", "stop") and isinstance(json.loads(text), dict), text
    assert sum(finish == "length" for _, finish in results) >= 10


def test_unbounded_json_schema_cut_by_max_tokens_still_validates(tokenizer, compiler):
    schema = {"type": "object", "properties": {"note": {"type": "string"}, "n": {"type": "integer"},
                                               "more": {"type": "array", "items": {"type": "string"}}},
              "required": ["note", "n", "more"], "additionalProperties": False}
    for text, finish in generate(tokenizer, compiler, json_schema_constraint(schema), 10, max_tokens=48):
        assert finish == "length", text
        jsonschema.validate(json.loads(text), schema)


def test_closing_path_reaches_an_accepting_state(tokenizer, compiler):
    from qwen35.runtime.engine.grammar.matcher import closing_path

    cases = [(json_object_constraint(), '{"ab', '{"ab": ""}'), (json_object_constraint(), '{"a": [1, {"b": tr',
                                                                 '{"a": [1, {"b": true}]}'),
             (json_schema_constraint(PERSON), '{"name": "Jo',
              '{"name": "Jo", "age": 0, "tags": ["red"], "member": true}')]  # greedy: not always the shortest
    for constraint, prefix, closed in cases:
        matcher = compiler.compile(constraint)[0].matcher()
        assert matcher.matcher.consume_tokens(tokenizer.encode(prefix))
        path = closing_path(matcher.matcher, compiler.closers, 96)
        assert prefix + tokenizer.decode(path) == closed
        assert not matcher.matcher.is_accepting()  # the matcher itself did not move
        assert closing_path(matcher.matcher, compiler.closers, len(path) - 1) is None


def test_random_logits_follow_regex_choice_and_tool_calls(tokenizer, compiler):
    for text, finish in generate(tokenizer, compiler, regex_constraint(r"[0-9]{3}-(ab|cd)"), 4):
        assert finish == "stop" and len(text) == 6 and text[:3].isdigit() and text[4:] in ("ab", "cd")
    for text, finish in generate(tokenizer, compiler, choice_constraint(["left", "right"]), 4):
        assert finish == "stop" and text in ("left", "right")
    # One call each: with parallel calls, noise picks another call over the end about as often as not.
    single = tool_choice_constraint([WEATHER, TIME], "required", parallel_tool_calls=False)
    for text, finish in generate(tokenizer, compiler, single, 4):
        parser = ToolCallParser([WEATHER, TIME])
        parsed = parser.feed(text).content + parser.flush().content
        assert finish == "stop" and len(parser.calls) == 1 and not parsed.strip(), text
        for call in parser.calls:
            schema = (WEATHER if call.name == "get_weather" else TIME)["function"]["parameters"]
            jsonschema.validate(json.loads(call.arguments), schema)


WEATHER_TAG = {"structures": [{"begin": "<function=get_weather>", "end": "</function>",
                               "schema": WEATHER["function"]["parameters"]}],
               "triggers": ["<function="]}


def test_structural_tag_holds_what_follows_a_trigger(compiler, tokenizer):
    constraint = structural_tag_constraint(WEATHER_TAG)
    call = '<function=get_weather>{"city": "Paris", "days": 3}</function>'
    assert takes(compiler, constraint, "Let me look. " + call + " Done.", tokenizer)
    assert takes(compiler, constraint, "No call at all, a < b.", tokenizer)
    assert not takes(compiler, constraint, "Look: <function=get_weather>{\"city\": \"Paris\"}</function>", tokenizer)
    assert not takes(compiler, constraint, "Look: <function=get_time>{}</function>", tokenizer)  # no such structure


def test_random_logits_write_valid_structures_after_a_trigger(tokenizer, compiler):
    # The noise is steered into the trigger; from there the grammar writes the structure, then text is free.
    script = tokenizer.encode("Checking <function=")
    for text, _ in generate(tokenizer, compiler, structural_tag_constraint(WEATHER_TAG), 4, script=script,
                            max_tokens=80):
        assert text.startswith("Checking <function=get_weather>"), text
        body = text[len("Checking <function=get_weather>"):text.index("</function>")]
        jsonschema.validate(json.loads(body), WEATHER["function"]["parameters"])


@pytest.mark.parametrize("spec, words", [
    ({"structures": [], "triggers": ["<f"]}, "structures' must be a non-empty list"),
    ({"structures": [{"begin": "<g>", "end": "</g>", "schema": {}}], "triggers": ["<f"]}, "none of the triggers"),
    ({"structures": [{"begin": "<f>", "end": "</f>", "schema": {}}], "triggers": []}, "triggers' must be"),
    ({"structures": [{"begin": "<f>", "schema": {}}], "triggers": ["<f"]}, "string 'begin' and 'end'"),
])
def test_structural_tag_errors_name_the_field(spec, words):
    with pytest.raises(GrammarError, match=words):
        structural_tag_constraint(spec)


def test_reasoning_stays_outside_the_grammar(tokenizer, compiler):
    think_prompt = [248045, *tokenizer.encode("assistant\n"), 248068, *tokenizer.encode("\n")]
    reasoning = tokenizer.encode("Let me think about it") + [THINK_END_ID]
    for text, finish in generate(tokenizer, compiler, choice_constraint(["yes", "no"]), 3, think_prompt, reasoning):
        before, after = text.split("</think>")
        assert finish == "stop" and before == "Let me think about it" and after in ("yes", "no")


def test_speculative_steps_keep_to_the_grammar(tokenizer, compiler):
    """An MTP model: drafts the grammar refuses are rejected, so greedy output equals plain decoding's
    under the same grammar, and sampled output is valid."""
    from test_speculative import tiny_model

    model = tiny_model(VOCAB, seed=3)
    constraint = json_schema_constraint(PERSON)

    def run(speculative_tokens: int, temperature: float):
        config = EngineConfig(max_running_requests=3, max_model_len=256, speculative_tokens=speculative_tokens)
        engine = LLMEngine(build_runner(model, config)[0], config, tokenizer, DEFAULT_STOP_TOKEN_IDS, compiler)
        params = [SamplingParams(temperature=temperature, seed=seed, max_tokens=120, constraint=constraint)
                  for seed in range(3)]
        seqs = engine.add_request([1, 2, 3, 4], params)
        while engine.has_work:
            assert all(output.finish_reason != "error" for _, output in engine.step())
        return [(seq.output_ids, seq.text, seq.finish_reason) for seq in seqs], engine

    plain, _ = run(0, 0.0)
    speculated, engine = run(2, 0.0)
    assert [ids for ids, _, _ in speculated] == [ids for ids, _, _ in plain]
    # Drafts are drawn under the grammar: its forced tokens are drafted and accepted (drawn unmasked from
    # random weights, almost none were: 0 of 336).
    assert engine.draft_tokens > 0 and engine.accepted_tokens >= engine.draft_tokens // 2
    sampled, engine = run(2, 1.0)
    for _, text, finish in sampled + plain:
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), PERSON)


def test_speculative_steps_close_the_grammar_for_the_budget(tokenizer, compiler):
    """Drafts that leave the closing are rejected: greedy output cut by max_tokens equals plain decoding's, and
    both parse."""
    from test_speculative import tiny_model

    model = tiny_model(VOCAB, seed=5)

    def run(speculative_tokens: int):
        config = EngineConfig(max_running_requests=3, max_model_len=256, speculative_tokens=speculative_tokens)
        engine = LLMEngine(build_runner(model, config)[0], config, tokenizer, DEFAULT_STOP_TOKEN_IDS, compiler)
        params = [SamplingParams(temperature=0.0, max_tokens=max_tokens, constraint=json_object_constraint())
                  for max_tokens in (6, 15, 30)]
        seqs = engine.add_request([1, 2, 3, 4], params)
        while engine.has_work:
            engine.step()
        return [(seq.output_ids, seq.text, seq.finish_reason) for seq in seqs]

    plain = run(0)
    assert run(2) == plain
    for _, text, finish in plain:
        assert finish == "length" and isinstance(json.loads(text), dict), text
