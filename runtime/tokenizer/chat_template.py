"""Render a checkpoint's own chat template with jinja2, in the sandbox and dialect HF templates expect."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qwen35.planner.errors import InputError

TEMPLATE_FILE = "chat_template.jinja"
_THINKING_DEFAULT_LINE = "{%- set default_thinking = true %}"
# Older clients and other templates name a message's reasoning differently; templates read this one.
_REASONING_ALIASES = ("reasoning", "thinking")


class _GenerationBlock(jinja2.ext.Extension):
    """Accept `{% generation %}...{% endgeneration %}` (HF's assistant-mask marker) and render the body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


class _GuardedNamespace(jinja2.utils.Namespace):
    """A `namespace()` whose attribute names may not start with '_', keeping templates off Python internals."""

    def __setitem__(self, name: str, value: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")
        super().__setitem__(name, value)


def _namespace(*args: Any, **kwargs: Any) -> _GuardedNamespace:
    namespace = _GuardedNamespace()
    for name, value in dict(*args, **kwargs).items():
        namespace[name] = value
    return namespace


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # jinja's own tojson HTML-escapes '<' and '&'; templates want plain JSON text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def build_environment() -> ImmutableSandboxedEnvironment:
    """The jinja2 sandbox with the helpers and whitespace rules Hugging Face chat templates rely on."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _namespace
    env.globals["dict"] = dict
    return env


def _plain(value: Any) -> Any:
    # A deep copy built from JSON types only: rich objects (decoded images, arrays) become an inert
    # "<TypeName>" string, since templates only test whether a media key is present.
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return f"<{type(value).__name__}>"


def prepare_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copy messages to plain dicts: reasoning aliased to `reasoning_content`, JSON-string tool arguments parsed."""
    prepared = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise InputError(f"message {index} is not an object with a 'role'",
                             "send messages like {'role': 'user', 'content': 'hi'}")
        message = _plain(message)
        if message.get("reasoning_content") is None:
            for alias in _REASONING_ALIASES:
                if message.get(alias) is not None:
                    message["reasoning_content"] = message[alias]
                    break
        for call in message.get("tool_calls") or []:
            function = call.get("function", call)
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    function["arguments"] = json.loads(arguments) if arguments.strip() else {}
                except json.JSONDecodeError as error:
                    raise InputError(f"message {index}: tool call arguments are not valid JSON ({error})",
                                     "send arguments as a JSON object or a JSON-encoded string") from None
        prepared.append(message)
    return prepared


class ChatTemplate:
    """A compiled chat template; `render` turns a conversation into the prompt text the model was trained on."""

    def __init__(self, source: str, *, special_tokens: Mapping[str, str] | None = None, origin: str = "<string>"):
        self.source = source
        self.origin = origin
        self.special_tokens = dict(special_tokens or {})
        try:
            self._compiled = build_environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as error:
            raise InputError(f"chat template {origin} does not compile: {error} (line {error.lineno})",
                             "fix the template or remove it to fall back to tokenizer_config.json") from None

    def render(self, messages: Sequence[Mapping[str, Any]], /, tools: Sequence[Mapping[str, Any]] | None = None,
               add_generation_prompt: bool = True, enable_thinking: bool | None = None, **kwargs: Any) -> str:
        """Render messages (and tools) to prompt text; extra keyword arguments become template variables.

        Any name is a variable, "self" and "messages" included (positional-only parameters, and the
        context goes to jinja as one dict): a client's chat_template_kwargs cannot collide with them.
        """
        context: dict[str, Any] = {**self.special_tokens, **kwargs}
        if enable_thinking is not None:
            context["enable_thinking"] = enable_thinking
        context.update(messages=prepare_messages(messages), tools=_plain(list(tools)) if tools else None,
                       documents=None, add_generation_prompt=add_generation_prompt)
        try:
            return self._compiled.render(context)
        except (jinja2.exceptions.TemplateError, TypeError, ValueError) as error:
            # Model templates validate messages by raising; a bad conversation is the caller's input.
            raise InputError(f"chat template rejected the conversation: {error}",
                             "check the roles, content parts and tool calls of the messages") from None


def chat_template_text(*, thinking_default: bool = True) -> str:
    """Our shipped Qwen3.5 template; `thinking_default` is what an unset `enable_thinking` means."""
    package = resources.files("qwen35.runtime.tokenizer")
    text = package.joinpath("templates").joinpath(TEMPLATE_FILE).read_text("utf-8")
    if text.count(_THINKING_DEFAULT_LINE) != 1:
        raise RuntimeError("shipped chat template lost its default_thinking line")
    if not thinking_default:
        text = text.replace(_THINKING_DEFAULT_LINE, _THINKING_DEFAULT_LINE.replace("true", "false"))
    return text


def _special_token_strings(config: Mapping[str, Any]) -> dict[str, str]:
    # HF exposes the named special tokens (bos_token, eos_token, ...) to templates as plain strings.
    tokens = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key)
        if isinstance(value, Mapping):
            value = value.get("content")
        if isinstance(value, str):
            tokens[key] = value
    return tokens


def load_chat_template(checkpoint_dir: str | Path, *, name: str | None = None) -> ChatTemplate | None:
    """The checkpoint's own template: chat_template.jinja, else tokenizer_config.json's; None if it has none."""
    directory = Path(checkpoint_dir)
    config_path = directory / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_text("utf-8")) if config_path.is_file() else {}
    except json.JSONDecodeError as error:
        raise InputError(f"{config_path} is not valid JSON ({error})",
                         "re-download the checkpoint's config files") from None
    special_tokens = _special_token_strings(config)
    template_path = directory / TEMPLATE_FILE
    if template_path.is_file() and name in (None, "default"):
        return ChatTemplate(template_path.read_text("utf-8"), special_tokens=special_tokens,
                            origin=str(template_path))
    stored = config.get("chat_template")
    if isinstance(stored, str) and name in (None, "default"):
        return ChatTemplate(stored, special_tokens=special_tokens, origin=f"{config_path}:chat_template")
    if isinstance(stored, list):
        named = {entry.get("name"): entry.get("template") for entry in stored if isinstance(entry, Mapping)}
        wanted = name or "default"
        if isinstance(named.get(wanted), str):
            return ChatTemplate(named[wanted], special_tokens=special_tokens,
                                origin=f"{config_path}:chat_template[{wanted}]")
        raise InputError(f"{config_path} has no chat template named {wanted!r} (it has {sorted(map(str, named))})",
                         "pick one of those names")
    if name not in (None, "default"):
        raise InputError(f"{directory} has no chat template named {name!r}", "leave the template name unset")
    return None
