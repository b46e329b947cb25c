"""The `qwen35` command line: thin commands that parse, call the library and render."""
from __future__ import annotations

import os
import platform
import sys

import typer

from qwen35.launcher.commands import COMMAND_MODULES
from qwen35.planner.errors import Qwen35Error

app = typer.Typer(
    name="qwen35",
    help="Plan, launch and serve Qwen3.5 models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version_text() -> str:
    """`qwen35 VERSION (Python X.Y.Z)`: what `qwen35 --version` prints."""
    from importlib import metadata

    try:
        version = metadata.version("qwen35")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed as a package)"
    return f"qwen35 {version} (Python {platform.python_version()})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="Print the qwen35 version and exit."),
) -> None:
    """Plan, launch and serve Qwen3.5 models.

    Start with `qwen35 plan --model Qwen3.5-9B --gpu H100:1`; every command has --help (or -h) with
    examples. Set QWEN35_DEBUG=1 to see tracebacks.
    """


for module in COMMAND_MODULES:
    module.register(app)


def main() -> None:
    """Entry point: run the app, turning known errors into one stderr line and an exit code."""
    try:
        # Outside standalone mode click returns a command's exit code instead of exiting.
        result = app(standalone_mode=False)
        if isinstance(result, int) and result:
            sys.exit(result)
    except Qwen35Error as error:
        if os.environ.get("QWEN35_DEBUG"):
            raise
        print(f"error: {error.one_line()}", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        # typer ships its own copy of click: usage errors are its ClickException subclasses.
        from typer._click import exceptions as click_errors

        if isinstance(error, click_errors.ClickException):
            error.show()
            sys.exit(2 if isinstance(error, click_errors.UsageError) else error.exit_code)
        if isinstance(error, typer.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
