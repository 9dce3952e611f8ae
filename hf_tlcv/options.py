"""Options named as the user typed them: `--fold_strategy kfold` on a command line, `fold_strategy='kfold'` in Python.

Error messages name settings through [`option`]; a command-line entry point wraps its parsing and its run in
[`command_line_options`], so every message raised inside names the flags the user actually typed.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

_ON_COMMAND_LINE = contextvars.ContextVar("hf_tlcv_command_line_options", default=False)
_UNSET = object()


@contextlib.contextmanager
def command_line_options() -> Iterator[None]:
    """Within the block, [`option`] renders settings as command-line flags."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)


def option(name: str, value: Any = _UNSET) -> str:
    """`name` (with `value`) as the user writes it here: `--name value` on a command line, `name=value` in Python.

    Example:
    ```python
    >>> option("fold_strategy", "kfold")
    "fold_strategy='kfold'"
    >>> with command_line_options():
    ...     option("fold_strategy", "kfold")
    '--fold_strategy kfold'

    ```
    """
    if _ON_COMMAND_LINE.get():
        if value is _UNSET:
            return f"--{name}"
        shown = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
        return f"--{name} {shown}"
    return name if value is _UNSET else f"{name}={value!r}"
