"""Which process wrote what under a folder: every file and folder it created, changed, renamed or removed there.

`record_writes(folder, log_dir, who)` installs an audit hook (`sys.addaudithook`) in this process that appends one
JSON line per write under `folder` to `<log_dir>/<who>-<pid>.jsonl`: files opened with a writing mode or flags,
folders made, renames and replaces (both ends), removals, permission and time changes, truncations and links.
Writers that open their files in C without Python's `open()` (`torch.save`, safetensors' `save_file` and pyarrow's
`write_table` and `OSFile`, which write checkpoints, weights and parquet files) report their target through the same hook. The test then attributes every path of the
finished tree to the processes that wrote it (`attribute`): a path nobody recorded means a writer this module does
not see yet, and fails the test instead of passing unnoticed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# audit event -> positions of the paths it changes (https://docs.python.org/3/library/audit_events.html)
CHANGES = {
    "os.mkdir": (0,), "os.rename": (0, 1), "os.remove": (0,), "os.rmdir": (0,), "shutil.rmtree": (0,),
    "os.truncate": (0,), "os.utime": (0,), "os.chmod": (0,), "os.chown": (0,), "os.link": (1,), "os.symlink": (1,),
    "test.write": (0,),
}
REMOVALS = {"os.remove", "os.rmdir", "shutil.rmtree", "os.rename.from"}  # the path (and what was below it) is gone
_installed: dict = {}


def _is_write(args) -> bool:
    _, mode, flags = (tuple(args) + (None, None))[:3]
    return bool((isinstance(mode, str) and set(mode) & set("wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS))


def record_writes(folder: str | os.PathLike, log_dir: str | os.PathLike, who: str) -> None:
    """Record this process's writes under `folder` (see the module docstring); once per process."""
    if _installed:
        return
    root = os.path.realpath(folder)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(log_dir) / f"{who}-{os.getpid()}.jsonl", "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    _installed.update(root=root, log=log)
    busy = []

    def hook(event, args):
        if busy or (event != "open" and event not in CHANGES):
            return
        if event == "open" and not _is_write(args):
            return
        busy.append(1)  # the checks below may raise audit events of their own
        try:
            for i in (0,) if event == "open" else CHANGES[event]:
                path = args[i] if i < len(args) else None
                if not isinstance(path, (str, bytes, os.PathLike)):
                    continue  # a file descriptor: its opening was recorded
                path = os.path.realpath(os.fsdecode(path))
                if path != root and not path.startswith(root + os.sep):
                    continue
                if event == "os.mkdir" and os.path.isdir(path):
                    continue  # makedirs(exist_ok=True) of a folder already there: nothing changes
                name = f"{event}.from" if event == "os.rename" and i == 0 else event
                log.write(json.dumps({"who": who, "pid": os.getpid(), "event": name, "t": time.time_ns(),
                                      "path": os.path.relpath(path, root)}) + "\n")
        finally:
            busy.pop()

    sys.addaudithook(hook)
    _report_c_writers()


def _report_c_writers() -> None:
    """`torch.save`, safetensors' `save_file`, pyarrow's `write_table` and `OSFile` (pandas' `to_parquet` of a path)
    open their file in C: say the path through the hook."""
    import pyarrow
    import pyarrow.parquet
    import safetensors.torch
    import torch

    def reporting(fn):
        def wrapper(obj, f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)):
                sys.audit("test.write", f)
            return fn(obj, f, *args, **kwargs)
        return wrapper

    torch.save = reporting(torch.save)
    pyarrow.parquet.write_table = reporting(pyarrow.parquet.write_table)
    os_file = pyarrow.OSFile

    def reporting_os_file(path, mode="r", *args, **kwargs):
        if set(mode) & set("wa"):
            sys.audit("test.write", path)
        return os_file(path, mode, *args, **kwargs)

    pyarrow.OSFile = reporting_os_file
    safetensors.torch.save_file = reporting(safetensors.torch.save_file)
    import transformers.modeling_utils  # binds save_file under its own name at import

    transformers.modeling_utils.safe_save_file = reporting(transformers.modeling_utils.safe_save_file)


def read_log(log_dir: str | os.PathLike) -> list[dict]:
    """Every recorded write, from every process that logged in `log_dir`."""
    return [json.loads(line) for path in sorted(Path(log_dir).glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def attribute(folder: str | os.PathLike, *log_dirs: str | os.PathLike) -> dict[str, set[str]]:
    """Every file and folder now under `folder` (relative paths), mapped to the writers (`who`) that recorded a write
    of it in any of `log_dirs` (the runs that wrote the folder) since it was last removed. Raises `AssertionError`
    naming the paths that no process recorded."""
    folder = Path(folder)
    writers: dict[str, set[str]] = {}
    for entry in sorted((e for log_dir in log_dirs for e in read_log(log_dir)), key=lambda e: e["t"]):
        path = entry["path"]
        if entry["event"] in REMOVALS:  # what is there now was written after: forget who wrote what was removed
            writers = {p: w for p, w in writers.items() if p != path and not p.startswith(path + os.sep)}
        else:
            writers.setdefault(path, set()).add(entry["who"])
    tree = {str(p.relative_to(folder)) for p in folder.rglob("*")}
    unseen = sorted(tree - writers.keys())
    assert not unseen, f"written by a process the audit did not see, or by a writer it does not know: {unseen}"
    return {path: writers[path] for path in tree}


def written_by(who: str, *log_dirs: str | os.PathLike) -> set[str]:
    """The paths (relative to the audited folder) that process `who`, or a worker it started (`who.worker`),
    recorded a write of, whether or not they are still there."""
    return {entry["path"] for log_dir in log_dirs for entry in read_log(log_dir)
            if entry["who"] == who or entry["who"].startswith(who + ".")}
