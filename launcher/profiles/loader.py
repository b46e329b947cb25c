"""Read profile files: YAML with line/column marks, `extends` chains, and errors that point at the key.

A file is composed (not just loaded) so every key keeps where it was written; `extends` is
resolved relative to the file that says it, or names a shipped profile. Merging is a deep merge
of mappings in which the child wins and lists are replaced. Each problem becomes one line:
`profiles/x.yaml:7:3: serving.port: expected an integer, got 'abc'`.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from qwen35.launcher.profiles.schema import Profile, allowed_keys, consistency_issues, field_help, looks_like_path
from qwen35.launcher.profiles.shipped import shipped_dir
from qwen35.planner.errors import InputError

BASE_SUFFIX = "-base"  # profiles named *-base.yaml are partial: others extend them
PLAN_SECTION = "profile"  # a plan document (qwen35 plan --yaml) keeps its profile here


@dataclass(frozen=True)
class Mark:
    """Where a key or value was written."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class ProfileIssue:
    """One problem: where, which key, and what is wrong or allowed."""

    where: str   # "file:line:col" (or just the file when the problem has no position)
    key: str     # "serving.port", "extra_args[2]"; "" for the whole document
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.message}" if self.key else f"{self.where}: {self.message}"


class ProfileError(InputError):
    """A profile that cannot be used, with every problem found (exit 2)."""

    def __init__(self, issues: list[ProfileIssue], hint: str = ""):
        self.issues = issues
        more = f" (and {len(issues) - 1} more; see qwen35 profiles validate)" if len(issues) > 1 else ""
        super().__init__(str(issues[0]) + more, hint)


Marks = dict[tuple, Mark]


def key_path(path: tuple) -> str:
    """("serving", "port") -> "serving.port"; list indexes as [i]."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return relative if not relative.startswith("..") else str(path)


def _mark(node: yaml.Node, file: str) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _construct(node: yaml.Node, path: tuple, marks: Marks, file: str, issues: list[ProfileIssue],
               scalars: yaml.SafeLoader) -> Any:
    """Plain data from a composed node, recording the mark of every key and list item."""
    if isinstance(node, yaml.MappingNode):
        data: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                issues.append(ProfileIssue(str(_mark(key_node, file)), key_path(path),
                                           f"keys must be plain strings, got {key_node.value!r}"))
                continue
            key = key_node.value
            if key in data:
                issues.append(ProfileIssue(str(_mark(key_node, file)), key_path(path + (key,)),
                                           f"duplicate key (first at line {marks[path + (key,)].line})"))
            marks[path + (key,)] = _mark(key_node, file)
            data[key] = _construct(value_node, path + (key,), marks, file, issues, scalars)
        return data
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            marks[path + (index,)] = _mark(item, file)
            items.append(_construct(item, path + (index,), marks, file, issues, scalars))
        return items
    return scalars.construct_object(node, deep=True)


def _compose(path: Path) -> tuple[Any, Marks, str]:
    """A file's data and marks; the `profile` section when the file is a plan document."""
    file = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{file}: no such profile file", "check the path, or run qwen35 profiles list") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{file}: cannot read it: {error}", "pass a readable UTF-8 YAML file") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise ProfileError([ProfileIssue(where, "", f"invalid YAML: {error.problem or error.context}")],
                           "fix the YAML syntax at that spot") from None
    except yaml.YAMLError as error:
        raise ProfileError([ProfileIssue(file, "", f"invalid YAML: {error}")]) from None
    if root is None:
        raise ProfileError([ProfileIssue(f"{file}:1:1", "", "the file is empty")],
                           "a profile needs at least version, model and hardware")
    if not isinstance(root, yaml.MappingNode):
        raise ProfileError([ProfileIssue(str(_mark(root, file)), "", "expected a mapping of profile keys at the top")])
    for key_node, value_node in root.value:
        # A plan document (qwen35 plan --yaml/--json) carries the profile that reproduces it.
        if key_node.value == PLAN_SECTION and isinstance(value_node, yaml.MappingNode):
            root = value_node
            break
    issues: list[ProfileIssue] = []
    marks: Marks = {(): _mark(root, file)}
    data = _construct(root, (), marks, file, issues, yaml.SafeLoader(""))
    if issues:
        raise ProfileError(issues)
    return data, marks, file


def merge(base: Any, child: Any) -> Any:
    """Deep-merge mappings with the child winning; anything else (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(child, dict):
        merged = dict(base)
        for key, value in child.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return child


def resolve_extends(target: str, from_file: Path) -> Path | None:
    """A file path relative to the extending file, else a shipped profile of that name."""
    from qwen35.launcher.profiles.shipped import shipped_path

    candidate = (from_file.parent / target).expanduser()
    if candidate.is_file():
        return candidate
    return shipped_path(target)


def _load_chain(path: Path, chain: tuple[Path, ...]) -> tuple[dict, Marks]:
    data, marks, file = _compose(path)
    if "extends" not in data:
        return data, marks
    target = data.pop("extends")
    where = str(marks[("extends",)])
    if not isinstance(target, str) or not target:
        raise ProfileError([ProfileIssue(where, "extends", f"expected a file path or shipped profile name, got {target!r}")])
    found = resolve_extends(target, path)
    if found is None:
        from qwen35.launcher.profiles.shipped import shipped_names

        raise ProfileError([ProfileIssue(where, "extends", f"cannot find {target!r} (no file {display_path(path.parent / target)} "
                                                           f"and no shipped profile of that name)")],
                           f"shipped profiles: {', '.join(shipped_names())}")
    if found.resolve() in chain:
        cycle = " -> ".join(display_path(p) for p in (*chain, found.resolve()))
        raise ProfileError([ProfileIssue(where, "extends", f"cycle: {cycle}")], "remove one of the extends")
    base, base_marks = _load_chain(found, chain + (found.resolve(),))
    marks.pop(("extends",))
    return merge(base, data), {**base_marks, **marks}


def _message(error: dict, path: tuple) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    shown = repr(value)
    if kind == "missing":
        what = field_help(path)
        return "required key missing" + (f" ({what})" if what else "")
    if kind == "extra_forbidden":
        allowed = allowed_keys(path[:-1]) or []
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        return ("unknown key" + (f"; did you mean {close[0]}?" if close else "")
                + f"; allowed: {', '.join(allowed)}")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {shown}"
    if kind == "string_type":
        quoted = f" (quote it: '{value}')" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        return f"expected a string, got {shown}{quoted}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {shown}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = ">=" if kind == "greater_than_equal" else "<="
        return f"expected a number {bound} {ctx.get('ge', ctx.get('le'))}, got {shown}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {shown}"
    if kind == "list_type":
        return f"expected a list of strings, got {shown}"
    if kind == "string_too_short":
        return "expected a non-empty string"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{error['msg']}, got {shown}"


def _located(path: tuple, marks: Marks, fallback: str, message: str) -> tuple[tuple, ProfileIssue]:
    """The issue for `path`, placed at its own mark or its nearest marked parent; plus a sort key."""
    for end in range(len(path), -1, -1):
        mark = marks.get(path[:end])
        if mark is not None:
            return (mark.file, mark.line, mark.column), ProfileIssue(str(mark), key_path(path), message)
    return (fallback, 0, 0), ProfileIssue(fallback, key_path(path), message)


def _raise_sorted(located: list[tuple[tuple, ProfileIssue]]) -> None:
    if located:
        raise ProfileError([issue for _, issue in sorted(located, key=lambda pair: pair[0])])


def validate_data(data: dict, marks: Marks, fallback: str, partial: bool = False) -> Profile | None:
    """Validate merged profile data; ProfileError with every issue located. Partial: missing keys allowed."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as error:
        located = []
        for item in error.errors():
            path = tuple(part for part in item["loc"] if part != "[key]")
            if not (partial and item["type"] == "missing"):
                located.append(_located(path, marks, fallback, _message(item, path)))
        _raise_sorted(located)
        return None
    _raise_sorted([_located(path, marks, fallback, message) for path, message in consistency_issues(profile)])
    return profile


def is_base(path: Path) -> bool:
    """Whether a file is a partial base profile (named *-base.yaml): valid without required keys."""
    return path.stem.endswith(BASE_SUFFIX)


def load_profile(path: str | Path) -> Profile:
    """Load, merge (`extends`) and validate a profile file or a plan document's profile section.

    A relative model path is read from the folder of the file that wrote it (as `extends` is),
    so a profile works from any directory; a shipped profile lives inside the package, so its
    relative model path is left to the working directory.
    """
    path = Path(path).expanduser()
    data, marks = _load_chain(path, (path.resolve(),))
    profile = validate_data(data, marks, display_path(path))
    written_in = Path(marks[("model",)].file).resolve().parent
    if looks_like_path(profile.model) and not Path(profile.model).expanduser().is_absolute() \
            and written_in != shipped_dir().resolve():
        profile = profile.model_copy(update={"model": str(written_in / profile.model)})
    return profile


def check_profile_file(path: str | Path) -> Profile | None:
    """Validate one file as `profiles validate` does: a *-base file may leave required keys out (None)."""
    path = Path(path).expanduser()
    data, marks = _load_chain(path, (path.resolve(),))
    return validate_data(data, marks, display_path(path), partial=is_base(path))
