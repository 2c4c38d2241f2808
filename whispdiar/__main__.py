"""``python -m whispdiar`` and the ``whispdiar`` command.

The signal handlers go in before the CLI's imports (typer, rich, numpy: ~0.15 s), so a
Ctrl-C at any moment after start-up gives "interrupted" and exit 130, not a traceback.
When the command is done the process leaves with ``os._exit``: Python's own shutdown
resets signal handlers first, and a SIGTERM in that window would kill the process by
the signal after all its work was done (and freeing the models only costs time).
"""

from __future__ import annotations


def main() -> None:
    import os
    import signal
    import sys

    from . import signals

    signals.install()
    try:
        try:
            from .cli import main as cli_main

            cli_main()
            code = 0
        except SystemExit as e:
            code = _exit_code(e.code)
        signals.raise_pending()
    except BaseException as e:
        if signals.caused_by_signal(e):
            signals.exit_for(e)
        code = _last_resort(e)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)  # the work is done: a late signal changes nothing
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # stdout closed under us: the output did not all get out
    os._exit(code)


def _last_resort(e: BaseException) -> int:
    """One line instead of a traceback for what escaped the commands' own handling: a
    broken install (a dependency or package file missing) or a bug.
    ``WHISPDIAR_DEBUG=1`` re-raises, for the traceback."""
    import os
    import sys

    from .errors import WhispdiarError

    if os.environ.get("WHISPDIAR_DEBUG", "") not in ("", "0") or not isinstance(e, Exception):
        raise e
    if isinstance(e, WhispdiarError):
        sys.stderr.write(f"whispdiar: error: {e}\n")
        return e.exit_code
    if isinstance(e, ImportError):
        sys.stderr.write(f"whispdiar: error: broken installation: {e}; reinstall whispdiar "
                         "(e.g. `pip install --force-reinstall whispdiar`)\n")
        return EXIT_BROKEN
    first = str(e).splitlines()[0] if str(e) else ""
    sys.stderr.write(f"whispdiar: internal error: {type(e).__name__}: {first} "
                     "(a bug; WHISPDIAR_DEBUG=1 shows where)\n")
    return EXIT_BUG


EXIT_BROKEN = 18  # a dependency of whispdiar cannot be imported
EXIT_BUG = 70  # EX_SOFTWARE: an error whispdiar did not expect


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    import sys

    sys.stderr.write(f"{code}\n")
    return 1


if __name__ == "__main__":
    main()
