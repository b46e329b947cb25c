"""Our shipped Qwen3.5 chat template renders exactly the facts-§4 format, and as HF's renderer does."""
import json

import pytest

from qwen35.planner.errors import InputError
from qwen35.runtime.tokenizer import ChatTemplate, chat_template_text

THINK_ON = "<|im_start|>assistant\n<think>\n"
THINK_OFF = "<|im_start|>assistant\n<think>\n\n</think>\n\n"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Forecast for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK_TOOL = {"type": "function", "function": {"name": "now", "description": "Current time", "parameters": {}}}

TOOLS_HEAD = (
    "# Tools\n\nYou can call the functions listed below. Inside <tools></tools> each line is one function "
    "signature as a JSON object:\n<tools>\n"
)
TOOLS_TAIL = (
    "\n</tools>\n\nTo call a function, answer with a block in exactly this form:\n\n"
    "<tool_call>\n<function=FUNCTION_NAME>\n<parameter=PARAMETER_NAME>\nPARAMETER_VALUE\n</parameter>\n"
    "</function>\n</tool_call>\n\n"
    "How to call functions:\n"
    "- Write one <parameter=...> block for each argument and give every required parameter.\n"
    "- Write objects and lists as JSON; write strings, numbers and booleans as plain text. "
    "A value may span several lines.\n"
    "- You may reason and write text before a call, but nothing after it: a call ends your turn.\n"
    "- For several calls at once, write several <tool_call> blocks one after another.\n"
    "- If no function fits the request, answer without calling one."
)
TOOL_LINES = (
    '{"type": "function", "function": {"name": "get_weather", "description": "Forecast for a city", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n'
    '{"type": "function", "function": {"name": "now", "description": "Current time", "parameters": {}}}'
)


@pytest.fixture(scope="module")
def template():
    return ChatTemplate(chat_template_text())


def user(text):
    return {"role": "user", "content": text}


def test_single_turn_thinking_on_is_the_default(template):
    expected = "<|im_start|>user\nHi there<|im_end|>\n" + THINK_ON
    assert template.render([user("Hi there")]) == expected
    assert template.render([user("Hi there")], enable_thinking=True) == expected


def test_single_turn_thinking_off(template):
    assert template.render([user("Hi there")], enable_thinking=False) == (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_no_generation_prompt(template):
    assert template.render([user("Hi")], add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"


def test_system_prompt(template):
    messages = [{"role": "system", "content": "You are terse."}, user("Hi")]
    assert template.render(messages) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" + THINK_ON
    )


def test_tools_without_system_prompt(template):
    rendered = template.render([user("Weather in Oslo?")], tools=[WEATHER_TOOL, CLOCK_TOOL])
    assert rendered == (
        "<|im_start|>system\n" + TOOLS_HEAD + TOOL_LINES + TOOLS_TAIL + "<|im_end|>\n"
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n" + THINK_ON
    )


def test_tools_with_system_prompt_put_the_prompt_after_the_tools(template):
    messages = [{"role": "system", "content": "You are terse."}, user("Weather in Oslo?")]
    rendered = template.render(messages, tools=[WEATHER_TOOL, CLOCK_TOOL], enable_thinking=False)
    assert rendered == (
        "<|im_start|>system\n" + TOOLS_HEAD + TOOL_LINES + TOOLS_TAIL + "\n\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n" + THINK_OFF
    )


def test_tool_json_keeps_unicode_and_key_order(template):
    tool = {"type": "function", "function": {"name": "traduire", "description": "Übersetzt <text> & mehr"}}
    rendered = template.render([user("x")], tools=[tool])
    assert '\n{"type": "function", "function": {"name": "traduire", "description": "Übersetzt <text> & mehr"}}\n' \
        in rendered


CALL_ARGUMENTS = {"city": "Paris", "days": 3, "options": {"unit": "celsius", "hourly": False},
                  "fields": ["temp", "wind"], "detailed": True, "ratio": 0.5}
CALL_BLOCK = (
    "<tool_call>\n<function=get_weather>\n"
    "<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n"
    '<parameter=options>\n{"unit": "celsius", "hourly": false}\n</parameter>\n'
    '<parameter=fields>\n["temp", "wind"]\n</parameter>\n'
    "<parameter=detailed>\ntrue\n</parameter>\n"
    "<parameter=ratio>\n0.5\n</parameter>\n"
    "</function>\n</tool_call>"
)


def tool_call(name, arguments):
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_assistant_tool_call_with_several_parameters(template):
    messages = [user("Weather?"), {"role": "assistant", "content": "", "tool_calls": [
        tool_call("get_weather", CALL_ARGUMENTS)]}]
    assert template.render(messages, add_generation_prompt=False) == (
        "<|im_start|>user\nWeather?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n" + CALL_BLOCK + "<|im_end|>\n"
    )


def test_json_string_arguments_render_like_a_dict(template):
    as_dict = [user("Weather?"), {"role": "assistant", "content": None,
                                  "tool_calls": [tool_call("get_weather", CALL_ARGUMENTS)]}]
    as_text = [user("Weather?"), {"role": "assistant", "content": None,
                                  "tool_calls": [tool_call("get_weather", json.dumps(CALL_ARGUMENTS))]}]
    assert template.render(as_text) == template.render(as_dict)


def test_text_before_a_call_and_two_calls(template):
    messages = [user("Both?"), {"role": "assistant", "content": "Checking.", "tool_calls": [
        tool_call("get_weather", {"city": "Oslo"}), tool_call("now", {})]}]
    assert template.render(messages, add_generation_prompt=False) == (
        "<|im_start|>user\nBoth?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        "Checking.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n</function>\n"
        "</tool_call>\n<tool_call>\n<function=now>\n</function>\n</tool_call><|im_end|>\n"
    )


def test_one_tool_response(template):
    messages = [user("Weather?"),
                {"role": "assistant", "content": "", "tool_calls": [tool_call("get_weather", {"city": "Oslo"})]},
                {"role": "tool", "tool_call_id": "call_1", "content": "snow, -3 C"}]
    assert template.render(messages) == (
        "<|im_start|>user\nWeather?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n<function=get_weather>\n"
        "<parameter=city>\nOslo\n</parameter>\n</function>\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsnow, -3 C\n</tool_response><|im_end|>\n" + THINK_ON
    )


def test_two_tool_responses_share_one_user_turn(template):
    messages = [user("Both?"),
                {"role": "assistant", "content": "", "tool_calls": [tool_call("get_weather", {"city": "Oslo"}),
                                                                    tool_call("now", {})]},
                {"role": "tool", "content": "snow"}, {"role": "tool", "content": "12:00"}]
    rendered = template.render(messages, enable_thinking=False)
    assert rendered.endswith(
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsnow\n</tool_response>\n<tool_response>\n12:00\n</tool_response>"
        "<|im_end|>\n" + THINK_OFF
    )


def test_reasoning_dropped_before_the_last_query_and_kept_after(template):
    messages = [
        user("2+2?"),
        {"role": "assistant", "content": "4", "reasoning_content": "add two and two"},
        user("And 3+3?"),
        {"role": "assistant", "content": "<think>\nthree plus three\n</think>\n\n6"},
        user("Weather in Oslo?"),
        {"role": "assistant", "content": "", "reasoning_content": "I need the tool.",
         "tool_calls": [tool_call("get_weather", {"city": "Oslo"})]},
        {"role": "tool", "content": "snow"},
    ]
    assert template.render(messages) == (
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n6<|im_end|>\n"
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nI need the tool.\n</think>\n\n<tool_call>\n<function=get_weather>\n"
        "<parameter=city>\nOslo\n</parameter>\n</function>\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsnow\n</tool_response><|im_end|>\n" + THINK_ON
    )


def test_reasoning_alias_fields_are_read(template):
    messages = [user("q"), {"role": "assistant", "content": "a", "reasoning": "r"}]
    assert template.render(messages, add_generation_prompt=False).endswith(
        "<|im_start|>assistant\n<think>\nr\n</think>\n\na<|im_end|>\n")


def test_image_and_video_placeholders(template):
    messages = [{"role": "user", "content": [
        {"type": "image", "image": "file:///cat.png"},
        {"type": "text", "text": "What is this? And this:"},
        {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg"}},
        {"type": "video", "video": "file:///clip.mp4"},
        {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}},
    ]}]
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    video = "<|vision_start|><|video_pad|><|vision_end|>"
    assert template.render(messages, enable_thinking=False) == (
        "<|im_start|>user\n" + image + "What is this? And this:" + image + video + video + "<|im_end|>\n"
        + THINK_OFF
    )


def test_shipped_template_with_a_non_thinking_default():
    non_thinking = ChatTemplate(chat_template_text(thinking_default=False))
    assert non_thinking.render([user("Hi")]).endswith(THINK_OFF)
    assert non_thinking.render([user("Hi")], enable_thinking=True).endswith(THINK_ON)


def test_bad_conversations_fail_with_input_errors(template):
    with pytest.raises(InputError, match="unknown message role: robot"):
        template.render([{"role": "robot", "content": "beep"}])
    with pytest.raises(InputError, match="not valid JSON"):
        template.render([user("q"), {"role": "assistant", "content": "",
                                     "tool_calls": [tool_call("now", "{not json")]}])
    with pytest.raises(InputError, match="no messages"):
        template.render([])
    with pytest.raises(InputError, match="unsupported content part"):
        template.render([{"role": "user", "content": [{"type": "audio", "audio": "x.wav"}]}])
    with pytest.raises(InputError, match="does not compile"):
        ChatTemplate("{% if %}")


def test_sandbox_blocks_python_internals():
    assert ChatTemplate("[{{ messages.__class__ }}]").render([user("x")]) == "[]"
    with pytest.raises(InputError):
        ChatTemplate("{{ messages.__class__.__mro__ }}").render([user("x")])


def test_helpers_hf_templates_use():
    helpers = ChatTemplate(
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
        "{{ ns.n }}|{{ {'a': '<b>'} | tojson }}|{{ strftime_now('%Y') | length }}|{{ eos_token }}"
        "{% generation %}G{% endgeneration %}",
        special_tokens={"eos_token": "<|im_end|>"},
    )
    assert helpers.render([user("x"), user("y")]) == '2|{"a": "<b>"}|4|<|im_end|>G'
    with pytest.raises(InputError, match="not allowed"):
        ChatTemplate("{% set ns = namespace(ok=1) %}{% set ns._hidden = 2 %}").render([user("x")])
    with pytest.raises(InputError, match="not allowed"):
        ChatTemplate("{% set ns = namespace(_hidden=1) %}").render([user("x")])
    with pytest.raises(InputError, match="stop here"):
        ChatTemplate("{{ raise_exception('stop here') }}").render([user("x")])


# Conversations rendered by both our renderer and transformers' (tokenizer-free) one.
PARITY_CASES = [
    ([user("Hi")], None, {}),
    ([user("Hi")], None, {"enable_thinking": False}),
    ([{"role": "system", "content": "Be brief."}, user("Hi")], [WEATHER_TOOL, CLOCK_TOOL], {}),
    ([user("Weather?"),
      {"role": "assistant", "content": "Let me check.", "reasoning_content": "tool time",
       "tool_calls": [tool_call("get_weather", CALL_ARGUMENTS), tool_call("now", {})]},
      {"role": "tool", "content": "snow"}, {"role": "tool", "content": "12:00"}],
     [WEATHER_TOOL], {"enable_thinking": True}),
    ([user("2+2?"), {"role": "assistant", "content": "<think>add</think>4"}, user("again"),
      {"role": "assistant", "content": "4", "reasoning_content": "same"}], None, {"add_generation_prompt": False}),
    ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "video"}]}],
     None, {"enable_thinking": False}),
]


@pytest.mark.parametrize("messages, tools, options", PARITY_CASES)
def test_renders_like_transformers(template, messages, tools, options):
    chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")
    options = dict(options)
    add_generation_prompt = options.pop("add_generation_prompt", True)
    theirs, _ = chat_template_utils.render_jinja_template(
        conversations=[messages], tools=tools, chat_template=template.source,
        add_generation_prompt=add_generation_prompt, **options,
    )
    ours = template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt, **options)
    assert ours == theirs[0]
