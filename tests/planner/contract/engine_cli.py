"""Run the real SGLang and vLLM command-line parsers of a chosen release, on CPU.

Each release is installed once into its own throwaway directory under a cache root
(``$QWEN35_CONTRACT_CACHE``, else ``~/.cache/qwen35/contract``): the engine's Python files
plus the few light packages its argument parser imports, never its GPU stack. A child
process (this file run as a script by the project's interpreter, that directory on
``PYTHONPATH``) builds the parser the way ``python -m sglang.launch_server`` or
``vllm serve`` builds it and answers, for each argv, None (accepted) or argparse's message.

Where the child departs from a real launch, and why no parser option can notice:

- SGLang's ``sglang/__init__.py`` is not executed: it redirects cache directories,
  patches transformers and imports the frontend DSL (``sglang.lang``: IPython, aiohttp).
  ``sglang.srt.server_args`` builds the server's parser on its own.
- SGLang: ``triton`` (every release) and ``torchvision`` (0.5.x up to 0.5.22) are
  replaced by import-only stand-ins, and only when the real package is absent.
  ``sglang.srt.utils.common`` imports them at top level for kernels and JPEG decoding;
  ``add_cli_args`` computes no option, choice or default from them. The real wheels are
  CUDA builds: triton unpacks to ~1 GB, and PyPI's torchvision links ``libtorch_cuda``
  so it cannot load next to a CPU torch. The stand-ins live only in the child's
  ``sys.modules``; nothing is written for them.
- vLLM runs with ``VLLM_TARGET_DEVICE=cpu`` so the device config's default resolves
  without a GPU; no platform overrides ``pre_register_and_update``, so the parser is the
  CUDA platform's. The wheel's compiled extensions are not extracted (parsing never
  loads them).
- Every child runs with ``CUDA_VISIBLE_DEVICES=""``.

Only argparse acceptance is checked (option names, choices, value types), not the
engines' post-parse validation (``ServerArgs.__post_init__``,
``EngineArgs.create_engine_config``), which needs the model config and a GPU.
"""

from __future__ import annotations

import contextlib
import email.parser
import fcntl
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

# Bump when the layout of an installed directory changes: older ones get reinstalled.
_LAYOUT = 1
_MARKER = ".qwen35-contract.json"
_CHILD_TIMEOUT_S = 600
_INSTALL_TIMEOUT_S = 900


class EngineCliError(RuntimeError):
    """An engine release could not be installed or its parser could not be built."""


@dataclass(frozen=True)
class Recipe:
    """What one range of an engine's releases needs to import its parser on CPU."""

    first: str  # the newest recipe whose `first` <= the release applies
    deps: tuple[str, ...]  # distributions the project venv lacks; the engine's pins apply
    stubs: tuple[str, ...] = ()  # top-level modules given import-only stand-ins in the child


@dataclass(frozen=True)
class OptionSpec:
    """One option string of an engine's parser."""

    choices: tuple[str, ...] | None
    default: str  # repr() of the parser default
    deprecated: bool  # heuristic: a Deprecated* action class, or "deprecated" in its help


# Found by importing each release's parser in a bare child and adding what it asked for.
# Verified: sglang 0.5.13.post1 and 0.5.14 through 0.5.23; vllm 0.33.0.
# sglang.srt.utils.common imports these at top level.
_SGLANG_UTILS = ("orjson", "pillow", "psutil", "pybase64", "pyzmq", "requests", "urllib3")
# The --tool-call-parser choices come from importing the detectors themselves (until 0.5.23).
_SGLANG_FUNCTION_CALL = ("ipython", "traitlets", "partial-json-parser")
# Up to 0.5.18 the parser imports sglang.srt.configs, which registers model types (qwen3_asr)
# that newer transformers already owns: the release's own transformers pin (and that one's
# hub and tokenizers pins) is needed.
_SGLANG_MODEL_CONFIGS = ("transformers", "huggingface-hub", "tokenizers", "sentencepiece", "dill")
_XGRAMMAR = ("xgrammar", "apache-tvm-ffi")

SGLANG_RECIPES = (
    Recipe("0.5.0", deps=_SGLANG_MODEL_CONFIGS + _SGLANG_FUNCTION_CALL + _SGLANG_UTILS,
           stubs=("triton", "torchvision")),
    # sglang.kernels (imported for FLA's chunk size) wants msgspec.
    Recipe("0.5.15", deps=_SGLANG_MODEL_CONFIGS + _SGLANG_FUNCTION_CALL + ("msgspec",) + _SGLANG_UTILS,
           stubs=("triton", "torchvision")),
    # A tool-call detector imports xgrammar.
    Recipe("0.5.16",
           deps=_SGLANG_MODEL_CONFIGS + _SGLANG_FUNCTION_CALL + _XGRAMMAR + ("msgspec",) + _SGLANG_UTILS,
           stubs=("triton", "torchvision")),
    # sglang.srt.configs is no longer on the parser's path: the venv's transformers does.
    Recipe("0.5.19", deps=_SGLANG_FUNCTION_CALL + _XGRAMMAR + ("msgspec",) + _SGLANG_UTILS,
           stubs=("triton", "torchvision")),
    # Parser names come from light registries, and torchvision is imported lazily.
    Recipe("0.5.23", deps=("msgspec",) + _SGLANG_UTILS, stubs=("triton",)),
)

# Start-up sizing (engine_sizing.py) imports much more: the model-config registry, the
# quantization layers and the KV-cache configurator (ModelRunner's mixin up to 0.5.13.post1).
# Verified: sglang 0.5.13.post1, 0.5.19, 0.5.20, 0.5.23.
_SGLANG_SIZING = ("msgspec",) + _SGLANG_UTILS + _SGLANG_FUNCTION_CALL + (
    "dill", "sentencepiece", "compressed-tensors", "loguru", "gguf", "apache-tvm-ffi")
_SGLANG_SIZING_STUBS = ("triton", "torchvision", "sgl_kernel", "aiter")
SGLANG_SIZING_RECIPES = (
    # sglang.srt.configs registers model types newer transformers owns (the release's own pin is
    # needed); a tool-call detector imports xgrammar, the MoE runners einops, the FP8 layers
    # flashinfer at top level.
    Recipe("0.5.13", deps=_SGLANG_SIZING + _SGLANG_MODEL_CONFIGS + ("xgrammar", "einops"),
           stubs=_SGLANG_SIZING_STUBS + ("flashinfer",)),
    Recipe("0.5.23", deps=_SGLANG_SIZING, stubs=_SGLANG_SIZING_STUBS),
)

VLLM_RECIPES = (
    # 0.33.0. vLLM installs its own triton placeholder when triton is missing.
    Recipe(
        "0.33.0",
        deps=(
            "aiohttp", "aiohappyeyeballs", "aiosignal", "attrs", "frozenlist", "multidict",
            "propcache", "yarl", "xgrammar", "apache-tvm-ffi", "llguidance", "cachetools",
            "cbor2", "cloudpickle", "msgspec", "oss-harmony", "partial-json-parser",
            "prometheus-client", "psutil", "py-cpuinfo", "pybase64", "pyzmq", "requests",
            "urllib3", "uvloop",
        ),
    ),
)

# Start-up sizing (vllm_sizing.py) builds the engine config and imports the Qwen3.5 model module, its
# layers and the KV-cache planner: the model-config registry, quantization layers and the tokenizer
# and parser modules those import. The compiled extensions get import-only stand-ins. Verified: vllm 0.33.0.
VLLM_SIZING_RECIPES = (
    Recipe(
        "0.33.0",
        deps=VLLM_RECIPES[-1].deps + ("einops", "compressed-tensors", "loguru", "ijson", "mistral-common",
                                      "pydantic-extra-types", "pycountry"),
        stubs=("torchvision", "vllm._C", "vllm._C_stable_libtorch", "vllm._moe_C",
               "vllm.vllm_flash_attn._vllm_fa2_C", "vllm.vllm_flash_attn._vllm_fa3_C"),
    ),
)


def default_cache_root() -> Path:
    """The cache root: $QWEN35_CONTRACT_CACHE, else ~/.cache/qwen35/contract."""
    configured = os.environ.get("QWEN35_CONTRACT_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "qwen35" / "contract"


def index_reachable(timeout_s: float = 10.0) -> bool:
    """Whether the package index pip uses ($PIP_INDEX_URL, else PyPI) answers an HTTP request."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/pip/", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def ensure_sglang(version: str, root: Path | None = None) -> Path:
    """Install sglang==version and its parser's light deps under root once; return the directory."""
    return _ensure("sglang", version, root, _populate_sglang)


def ensure_sglang_sizing(version: str, root: Path | None = None) -> Path:
    """Install sglang==version with what its start-up sizing imports, under root once; return the dir."""
    return _ensure("sglang-sizing", version, root, _populate_sglang)


def ensure_vllm(version: str, root: Path | None = None) -> Path:
    """Install vllm==version's Python files and its parser's light deps under root once; return the dir."""
    return _ensure("vllm", version, root, _populate_vllm)


def ensure_vllm_sizing(version: str, root: Path | None = None) -> Path:
    """Install vllm==version's Python files with what its start-up sizing imports, under root once; return the dir."""
    return _ensure("vllm-sizing", version, root, _populate_vllm)


def is_installed(engine: str, version: str, root: Path | None = None) -> bool:
    """Whether that release of engine ("sglang" or "vllm") is installed under root with the current recipe."""
    target, version = _target(engine, version, root)
    return _is_complete(target, engine, version, recipe_for(engine, version))


def parse_sglang(version: str, argvs: list[list[str]], root: Path | None = None) -> list[str | None]:
    """Parse each argv (after `python -m sglang.launch_server`): None if accepted, else argparse's message."""
    return _ask_child("sglang", ensure_sglang(version, root), {"mode": "parse", "argvs": argvs})


def parse_vllm(version: str, argvs: list[list[str]], root: Path | None = None) -> list[str | None]:
    """Parse each argv (what follows `vllm serve`): None if accepted, else the parser's message."""
    return _ask_child("vllm", ensure_vllm(version, root), {"mode": "parse", "argvs": argvs})


def sglang_options(version: str, root: Path | None = None) -> dict[str, OptionSpec]:
    """Every option string of that SGLang release's server parser."""
    raw = _ask_child("sglang", ensure_sglang(version, root), {"mode": "options"})
    return {name: _option_spec(spec) for name, spec in raw.items()}


def vllm_options(version: str, root: Path | None = None) -> dict[str, OptionSpec]:
    """Every option string of that vLLM release's `vllm serve` parser."""
    raw = _ask_child("vllm", ensure_vllm(version, root), {"mode": "options"})
    return {name: _option_spec(spec) for name, spec in raw.items()}


def recipe_for(engine: str, version: str) -> Recipe:
    """The recipe that applies to that release (the newest whose `first` is not after it)."""
    from packaging.version import Version

    recipes = {"sglang": SGLANG_RECIPES, "sglang-sizing": SGLANG_SIZING_RECIPES, "vllm": VLLM_RECIPES,
               "vllm-sizing": VLLM_SIZING_RECIPES}[engine]
    wanted = Version(version)
    applicable = [recipe for recipe in recipes if Version(recipe.first) <= wanted]
    return max(applicable, key=lambda recipe: Version(recipe.first)) if applicable else recipes[0]


# --- installing ---------------------------------------------------------------------------


def _target(engine: str, version: str, root: Path | None) -> tuple[Path, str]:
    from packaging.version import Version

    version = str(Version(version))  # validates before the string reaches a path or pip
    root = Path(root).expanduser() if root is not None else default_cache_root()
    return root / f"{engine}-{version}", version


def _ensure(engine: str, version: str, root: Path | None, populate: Callable[[Path, str], None]) -> Path:
    target, version = _target(engine, version, root)
    root = target.parent
    recipe = recipe_for(engine, version)
    if _is_complete(target, engine, version, recipe):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{engine}-{version}.lock"):
        if _is_complete(target, engine, version, recipe):  # another caller finished first
            return target
        for stale in root.glob(f".{engine}-{version}.partial-*"):  # only the lock holder makes these
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{engine}-{version}.partial-", dir=root))
        partial.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            populate(partial, version)
            installed = _install_deps(partial, recipe)
            marker = {"layout": _LAYOUT, "engine": engine, "version": version,
                      "recipe": asdict(recipe), "installed": installed}
            (partial / _MARKER).write_text(json.dumps(marker, indent=1))
            if target.exists():  # left by an older recipe or layout
                shutil.rmtree(target)
            partial.rename(target)  # atomic: a directory with a marker is always complete
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def _is_complete(target: Path, engine: str, version: str, recipe: Recipe) -> bool:
    try:
        marker = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    expected = {"layout": _LAYOUT, "engine": engine, "version": version, "recipe": _as_json(asdict(recipe))}
    return all(marker.get(key) == value for key, value in expected.items())


def _as_json(value):
    return json.loads(json.dumps(value))  # tuples become lists, as they come back from the marker


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # per open file: serialises threads and processes alike
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _populate_sglang(target: Path, version: str) -> None:
    _pip(["install", "--target", str(target), f"sglang=={version}"])


# Compiled extensions, C/CUDA sources and headers: megabytes the parser never loads.
_NATIVE_MEMBER = re.compile(r"\.so(\.\d+)*$|\.(h|hpp|cuh|cu|cc|cpp|inl)$")
# The wheel also carries prebuilt executables (vllm/vllm-rs, ~60 MB); no Python file is this big.
_MAX_MEMBER_BYTES = 16 << 20


def _populate_vllm(target: Path, version: str) -> None:
    download = target / ".wheel"
    _pip(["download", "--dest", str(download), f"vllm=={version}"])
    (wheel,) = download.glob("vllm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = [member for member in archive.infolist()
                   if not _NATIVE_MEMBER.search(member.filename) and member.file_size <= _MAX_MEMBER_BYTES]
        archive.extractall(target, members)
    shutil.rmtree(download)


def _install_deps(target: Path, recipe: Recipe) -> list[str]:
    """Install recipe.deps in two rounds so each is pinned by whoever requires it."""
    from packaging.utils import canonicalize_name

    # Round one: what the engine pins, at its pins. Round two: the rest, at the pins of
    # everything installed by then (transformers pins its hub and tokenizers, requests its urllib3).
    engine_pins = _requirement_pins(target)
    first = [dep for dep in recipe.deps if engine_pins.get(canonicalize_name(dep))]
    rounds = (first, [dep for dep in recipe.deps if dep not in first])
    installed: list[str] = []
    for deps in rounds:
        if not deps:
            continue
        pins = _requirement_pins(target)
        specs = [dep + ",".join(pins.get(canonicalize_name(dep), [])) for dep in deps]
        _pip(["install", "--target", str(target), *specs])
        installed += specs
    return installed


def _requirement_pins(target: Path) -> dict[str, list[str]]:
    """Version specifiers, by canonical name, from every METADATA under target (markers applied)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, list[str]] = {}
    for metadata in target.glob("*.dist-info/METADATA"):
        message = email.parser.Parser().parsestr(metadata.read_text(errors="replace"), headersonly=True)
        for line in message.get_all("Requires-Dist") or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            specs = pins.setdefault(canonicalize_name(requirement.name), [])
            if str(requirement.specifier):
                specs.append(str(requirement.specifier))
    return pins


def _pip(arguments: list[str]) -> None:
    # --only-binary: never build an sdist (slow, and a sign the recipe is wrong);
    # --no-compile: bytecode is written on first import, only for what the parser imports.
    command = [sys.executable, "-m", "pip", *arguments, "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "-qq"]
    if arguments[0] == "install":
        command.append("--no-compile")
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise EngineCliError(f"`pip {' '.join(arguments)}` took over {_INSTALL_TIMEOUT_S} s") from error
    if completed.returncode != 0:
        raise EngineCliError(f"`pip {' '.join(arguments)}` failed ({completed.returncode}):\n"
                             f"{_tail(completed.stderr or completed.stdout)}")


# --- asking the child ---------------------------------------------------------------------


# Optional packages of the project venv that a release's own (older) transformers pin would find and
# misuse: transformers 5.25 brings `kernels` 0.19, whose API the 0.5.13.post1 pin (5.8.1) cannot call.
_HIDDEN_UNDER_OWN_TRANSFORMERS = ("kernels",)


def _hidden_from_child(target: Path) -> list[str]:
    """Top-level modules the child must not import: the venv's extras, where the release has its own transformers."""
    return list(_HIDDEN_UNDER_OWN_TRANSFORMERS) if (target / "transformers").is_dir() else []


def _ask_child(engine: str, target: Path, request: dict, script: Path | None = None) -> list | dict:
    marker = json.loads((target / _MARKER).read_text())
    request = {**request, "engine": engine, "stubs": marker["recipe"]["stubs"], "hidden": _hidden_from_child(target)}
    env = {**os.environ, "PYTHONPATH": str(target), "CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}
    # Keep bytecode of the throwaway directory (the venv's is already compiled): repeat runs import faster.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if engine == "vllm":
        env["VLLM_TARGET_DEVICE"] = "cpu"
    with tempfile.TemporaryDirectory(prefix="qwen35-contract-") as scratch:
        request_path, result_path = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request_path.write_text(json.dumps(request))
        # -P: this file's folder stays off sys.path; -s: no user site-packages.
        command = [sys.executable, "-s", "-P", str(script or Path(__file__).resolve()),
                   str(request_path), str(result_path)]
        try:
            completed = subprocess.run(command, env=env, capture_output=True, text=True,
                                       timeout=_CHILD_TIMEOUT_S, cwd=scratch)
        except subprocess.TimeoutExpired as error:
            raise EngineCliError(
                f"{engine} {marker['version']}: the parser child ran over {_CHILD_TIMEOUT_S} s") from error
        if completed.returncode != 0 or not result_path.exists():
            raise EngineCliError(f"{engine} {marker['version']}: building the parser failed "
                                 f"(exit {completed.returncode}):\n{_tail(completed.stderr)}")
        return json.loads(result_path.read_text())


def _option_spec(raw: dict) -> OptionSpec:
    choices = raw["choices"]
    return OptionSpec(tuple(choices) if choices is not None else None, raw["default"], raw["deprecated"])


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- the child (this file run as a script) -------------------------------------------------


class _StandIn(types.ModuleType):
    """An import-only module: any attribute exists, calling it passes a decorated function through."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        # Capitalised names are used as base classes and in isinstance checks; the rest as submodules.
        if name[:1].isupper():
            value = _StandInClass(name, (), {})
        else:
            value = importlib.import_module(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]  # @triton.jit
        return lambda function: function  # @triton.autotune(...), @triton.heuristics(...)


class _StandInClass(type):
    """A class whose attributes are further stand-in classes (enum members, nested types)."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandInClass(name, (), {})

    def __call__(cls, *args, **kwargs):
        return cls


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `root` and every `root.*` submodule as a stand-in."""

    def __init__(self, root: str):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.root or fullname.startswith(self.root + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0"  # never satisfies a minimum-version feature check
        return module

    def exec_module(self, module):
        pass


def _isolate(request: dict) -> None:
    """In the child: hide what the request names, then give its stand-ins."""
    for name in request.get("hidden", ()):
        sys.modules[name] = None  # `import` raises ImportError and find_spec answers None, as if not installed
    _install_stand_ins(request["stubs"])


def run_forked(work: Callable[[Path], dict], prefix: str) -> dict:
    """In a child: `work(scratch)` in a fork, so every case starts from the same freshly imported release.

    The fork's failure comes back as {"error": "harness: <traceback>", "stage": "harness"}, never swallowed.
    """
    import traceback

    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        result_path = Path(scratch) / "result.json"
        pid = os.fork()
        if pid == 0:
            try:  # the fork never returns into the parent's loop, whatever fails
                try:
                    outcome = json.dumps(work(Path(scratch)))
                except BaseException:  # noqa: BLE001 - reported to the parent
                    outcome = json.dumps({"error": "harness: " + traceback.format_exc(limit=8), "stage": "harness"})
                result_path.write_text(outcome)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if not result_path.exists():
            return {"error": "harness: the case's process died", "stage": "harness"}
        return json.loads(result_path.read_text())


def _install_stand_ins(roots: list[str]) -> None:
    for root in roots:
        if importlib.util.find_spec(root) is None:  # a real install always wins
            sys.meta_path.insert(0, _StandInFinder(root))


def _sglang_parser():
    import argparse

    # Register the package without running sglang/__init__.py (see the module docstring).
    sys.modules["sglang"] = importlib.util.module_from_spec(importlib.util.find_spec("sglang"))
    from sglang.srt.server_args import ServerArgs

    # Built as sglang.srt.server_args.prepare_server_args builds it.
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    return parser


def _vllm_parser():
    # The `vllm serve` subcommand's parser: make_arg_parser over a FlexibleArgumentParser.
    try:
        from vllm.entrypoints.common.cli_args import make_arg_parser
    except ImportError:  # releases before the entrypoints reshuffle
        from vllm.entrypoints.openai.cli_args import make_arg_parser
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser
    return make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))


def _try_parse(parser, argv: list[str]) -> str | None:
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):  # --help, --version
            return None
        text = captured.getvalue().strip()
        match = re.search(r": error: (.*)\Z", text, re.S)
        return match.group(1).strip() if match else text or f"exit status {exit_.code}"
    except Exception as error:  # vLLM's type converters and actions raise instead of exiting
        return f"{type(error).__name__}: {error}"
    return None


def _describe(parser) -> dict:
    options = {}
    for action in parser._actions:
        help_text = action.help if isinstance(action.help, str) else ""
        deprecated = "Deprecated" in type(action).__name__ or "deprecated" in help_text.lower()
        choices = [str(choice) for choice in action.choices] if action.choices is not None else None
        for option in action.option_strings:
            options[option] = {"choices": choices, "default": repr(action.default), "deprecated": deprecated}
    return options


def _child_main(request_path: str, result_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    _isolate(request)
    parser = _sglang_parser() if request["engine"] == "sglang" else _vllm_parser()
    if request["mode"] == "options":
        result = _describe(parser)
    else:
        result = [_try_parse(parser, argv) for argv in request["argvs"]]
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    _child_main(*sys.argv[1:])
