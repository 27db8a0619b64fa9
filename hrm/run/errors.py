"""How every command-line tool fails: one or two lines naming the file, the problem and the fix.

`run_tool(prog, main, argv)` runs a tool's `main`; whatever escapes it becomes `prog: <file>: <problem>;
<fix>` on stderr and an exit status: 2 for a bad input (a missing, corrupt or foreign file, a bad
argument), 1 for the machine (a full disk, no permission) or an unexpected error. The traceback is
printed only with `--debug` (or HRM_DEBUG=1), which every tool accepts. `reading(path, what, fix)`
gives a failure while reading a file that file's name. Torch-free: the app's entry point uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

DEBUG_FLAG = "--debug"
EXIT_MACHINE, EXIT_INPUT = 1, 2

_OS_PROBLEMS: dict[int, tuple[str, str, int]] = {
    errno.ENOENT: ("does not exist", "check the path", EXIT_INPUT),
    errno.EISDIR: ("is a directory, not a file", "give the path of a file", EXIT_INPUT),
    errno.ENOTDIR: ("is not a directory (or a part of its path is a file)", "check the path", EXIT_INPUT),
    errno.EACCES: ("permission denied", "check its permissions or choose another location", EXIT_MACHINE),
    errno.EPERM: ("operation not permitted", "check its permissions or choose another location", EXIT_MACHINE),
    errno.ENOSPC: ("no space left on device", "free space there (or choose another location) and run again", 1),
    errno.EDQUOT: ("disk quota exceeded", "free space there (or choose another location) and run again", 1),
    errno.EROFS: ("read-only filesystem", "choose a writable location", EXIT_MACHINE),
    errno.EEXIST: ("already exists", "choose another name or remove it first", EXIT_INPUT),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path", EXIT_INPUT),
}


class ToolError(Exception):
    """A failure already worded for the user: the file, the problem and the fix."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def describe(exc: BaseException, path: str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that reached the top of a tool; `path` names
    the file when the exception does not."""
    if isinstance(exc, ToolError):
        return exc.code, str(exc)
    if isinstance(exc, OSError):
        filename = exc.filename if exc.filename is not None else path
        where = f"{os.fspath(filename)}: " if filename is not None else ""
        if exc.errno in _OS_PROBLEMS:
            problem, fix, code = _OS_PROBLEMS[exc.errno]
            return code, f"{where}{problem}; {fix}"
        # OSError("text") has no errno: its text is the message (str() would add "[Errno None]")
        text = exc.strerror or (str(exc.args[0]) if exc.errno is None and exc.args else _first_line(exc))
        if exc.errno is None and "requested and" in text and "written" in text:  # numpy's short write
            problem, fix, code = _OS_PROBLEMS[errno.ENOSPC]
            return code, f"{where}{problem} ({text}); {fix}"
        return EXIT_MACHINE, f"{where}{text}"
    if isinstance(exc, MemoryError):
        return EXIT_MACHINE, "out of memory; try a smaller batch or model, or close other programs"
    if isinstance(exc, (ValueError, LookupError, TypeError)):
        return EXIT_INPUT, _first_line(exc)
    return (
        EXIT_MACHINE,
        f"unexpected error: {type(exc).__name__}: {_first_line(exc)} (run again with --debug for the details)",
    )


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], what: str = "file", fix: str = "") -> Iterator[None]:
    """Name `path` in any failure inside the block: an OSError without a file name gets it, anything
    else becomes a ToolError saying that `path` is not a readable `what`."""
    try:
        yield
    except ToolError:
        raise
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            exc.filename = os.fspath(path)
        raise
    except (ValueError, LookupError, TypeError, AttributeError, EOFError, RuntimeError) as exc:
        hint = f"; {fix}" if fix else ""
        raise ToolError(f"{os.fspath(path)}: not a valid {what} ({_first_line(exc)}){hint}") from exc


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Name `path` in an OSError raised while writing it (a full disk says no file of its own)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            exc.filename = os.fspath(path)
        raise


def run_tool(
    prog: str, main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None, *, parses_debug: bool = False
) -> int:
    """Run a tool's main(argv) and turn any failure into its one-line message and exit status.
    `--debug` is taken out of argv here unless the tool's own parser takes it (`parses_debug`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get("HRM_DEBUG", "") not in ("", "0")
    if not parses_debug:
        args = [a for a in args if a != DEBUG_FLAG]
    try:
        return int(main(args) or 0)
    except SystemExit as exc:  # argparse and tools that exit on their own: their words stand
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(f"{prog}: {exc.code}", file=sys.stderr)
        return EXIT_MACHINE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hrm-export ... | head`: the reader left, nothing to say
        with contextlib.suppress(OSError):
            sys.stderr.close()
        return EXIT_MACHINE
    except Exception as exc:
        if debug:
            traceback.print_exc()
        code, message = describe(exc)
        print(f"{prog}: {message}", file=sys.stderr)
        return code
