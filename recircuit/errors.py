"""The one exception type for expected, user-facing errors (a leaf module: imports nothing).

Usage::

    from recircuit.errors import InputError
    raise InputError("runs/ft/model.json: field 'kind' is 'lora' but runs/ft/adapter.safetensors is missing; "
                     "re-save the checkpoint with recircuit train")

An :class:`InputError` carries one line that names the file (and the line or field where there is
one) and the fix. The command line prints it as ``recircuit CMD: error: MESSAGE`` with no
traceback and exits with status 2; library callers catch it like any ``ValueError``.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input a user can fix: a file, a field or an argument. The message says which, and how."""

    def __init__(self, message: str, *, path: object | None = None, line: int | None = None,
                 field: str | None = None, fix: str | None = None) -> None:
        where = str(path) if path is not None else ""
        if line is not None:
            where += f":{line}" if where else f"line {line}"
        if field is not None:
            where += f" (field {field!r})" if where else f"field {field!r}"
        text = f"{where}: {message}" if where else message
        if fix:
            text += f"; {fix}"
        super().__init__(" ".join(text.split()))
        self.path, self.line, self.field, self.fix = path, line, field, fix


class RunFailed(RuntimeError):
    """A run finished but its result must not be trusted (diverged, destroyed, at chance level).

    The command line turns it into one line and a non-zero exit; nothing good on disk is replaced.
    """


def report_error(prog: str, err: InputError | RunFailed) -> int:
    """Print ``PROG: error: MESSAGE`` on stderr (one line, no traceback); return the exit status.

    For scripts with their own ``main()`` (the benchmarks)::

        except (InputError, RunFailed) as err:
            return report_error("validity.py", err)

    Returns:
        2 for an :class:`InputError` (bad input), 1 for a :class:`RunFailed` (a result not to trust).
    """
    import sys

    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2 if isinstance(err, InputError) else 1
