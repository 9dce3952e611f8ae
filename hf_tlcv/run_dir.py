"""The run folder: its layout, its format version, and the atomic writes that keep it readable at every moment.

A cross-validation run lives in one folder (`KFoldConfig.output_dir`), the same locally and on the Hub:

```
README.md                  the run's card: what was measured and how (also the Hub model card)
folds.json                 the fold indices and the settings and data they were made for
cv_results.json            per-fold metrics, summary, settings, data and model records
oof_predictions.parquet    every fold's out-of-fold predictions
plots/*.png
fold_{repeat}_{fold}/fold_result.json, predictions.parquet, test_predictions.parquet
fold_{repeat}_{fold}/model/                   the fold's model (see `hf_tlcv.fold_models`)
```

Every file is written to a temporary sibling and renamed into place, so a reader, another process or a run killed
half-way never sees a partial file; a fold's `fold_result.json` is written last, so its presence marks a finished
fold. Files honour the process umask (a team share or a web server can read them), as `open()` does.

Every path a file of the folder names is relative to the folder (`fold_0_0`, `plots/accuracy.png`, a study's
`pretrained/`, a search's `trials/0`), or a data or model source as the user named it (`builtin:animal-mnist`, a Hub
id, a path the user gave): never where the folder, the caches or the home folder are on the machine that ran, since
the folder is moved, zipped and pushed as it is. Older folders record `output_dir` (an absolute path) in their
settings; nothing reads it back, so they load as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

FOLDS_FILE = "folds.json"
RESULTS_FILE = "cv_results.json"
OOF_FILE = "oof_predictions.parquet"
PLOTS_DIR = "plots"
CARD_FILE = "README.md"
FOLD_RESULT_FILE = "fold_result.json"
FOLD_PREDICTIONS_FILE = "predictions.parquet"
FOLD_TEST_PREDICTIONS_FILE = "test_predictions.parquet"
FOLD_MODEL_DIR = "model"
FOLD_DIR_GLOB = "fold_*"
# The data audit (hf_tlcv.audit): audit.json (written last) and audit/ (issues.parquet, audit.md, galleries).
AUDIT_FILE = "audit.json"
AUDIT_DIR = "audit"
AUDIT_MARKDOWN = "audit.md"
NESTED_FOLDS_FILE = "nested_folds.json"  # ci_method="nested": the extra repeats of the split
NESTED_DIR_GLOB = "nested_*"  # ci_method="nested": the extra fits, one folder each, like a fold's

# Settings that say where the run folder was on the machine that ran, not what ran: not recorded (the folder is the run).
RUN_LOCATION_SETTINGS = ("output_dir", "logging_dir")

FORMAT_VERSION = 2
"""Version of the JSON files of a run folder. 1: hf_tlcv 0.1 (no `format_version` key); 2: this version, which adds
`format_version`, the data and model records, the process layout and held-out test scores. Loaders read both."""


def format_version(payload: dict) -> int:
    """The format version a saved JSON payload was written with (1 for files that predate the key)."""
    return int(payload.get("format_version", 1))


# ---- atomic writes -----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path` in one rename.

    The temporary file is created with `open()`'s default permissions (0o666 minus the umask), so the finished
    file is as readable as any other file the process writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}-{uuid.uuid4().hex[:12]}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def honour_umask(directory: str | os.PathLike) -> None:
    """Give every file under `directory` the permissions a file `open()`ed here gets (0o666 minus the umask).

    For folders written by other libraries (transformers' `save_pretrained` writes its weights through temporary
    files, which are private to the owner), so that a fold's model is as readable as the rest of the run."""
    directory = Path(directory)
    probe = directory / f".umask-{uuid.uuid4().hex[:8]}"
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        mode = os.stat(probe).st_mode & 0o777
    finally:
        os.unlink(probe)
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def write_json_atomic(path: str | os.PathLike, payload: Any, **dump_kwargs) -> None:
    write_text_atomic(path, json.dumps(payload, **dump_kwargs))


def read_json(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# ---- folders that appear complete or not at all -----------------------------------------------------------------
MARKER_FILENAME = "hf_tlcv_asset.json"


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The completion marker of a folder built with [`building`], or `None` when the folder is missing or
    incomplete."""
    try:
        return read_json(Path(folder) / MARKER_FILENAME)
    except (OSError, ValueError):
        return None


def write_marker(folder: str | os.PathLike, marker: dict) -> None:
    with open(Path(folder) / MARKER_FILENAME, "w", encoding="utf-8") as fh:
        json.dump(marker, fh, indent=2, sort_keys=True)


@contextlib.contextmanager
def building(final: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place only when the block succeeds.

    The rename is atomic on one filesystem, so readers see either no folder or a complete one, even when the build
    is interrupted or several processes build the same folder at once: the first to finish wins and the others
    discard their copy. The block must write the marker ([`write_marker`]) last.

    Args:
        final (`pathlib.Path`): where the finished folder must end up; a stale or incomplete folder there is
            replaced.

    Yields:
        `pathlib.Path`: an empty temporary folder to build in.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # default permissions: readable by the users of a shared cache, as the umask allows
    trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            # `final` exists: either a stale/incomplete folder, or a concurrent builder got there first.
            expected = read_marker(tmp)
            if read_marker(final) == expected:
                return
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, trash)
            try:
                os.rename(tmp, final)
            except OSError:
                if read_marker(final) != expected:  # not a concurrent builder's identical copy
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)


# ---- the run folder ----------------------------------------------------------------------------------------------
def fold_dir(output_dir: str | os.PathLike, fold_name: str) -> Path:
    return Path(output_dir) / fold_name


def fold_is_complete(directory: str | os.PathLike) -> bool:
    """Whether a fold folder holds a finished fold (its result file is written last)."""
    return (Path(directory) / FOLD_RESULT_FILE).exists()


def fold_dirs(output_dir: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(output_dir).glob(FOLD_DIR_GLOB) if p.is_dir())


def clear_run(output_dir: str | os.PathLike) -> None:
    """Delete the results of a run from its folder (`overwrite_output_dir`), their audit included; other files are
    left alone."""
    out = Path(output_dir)
    for item in [out / FOLDS_FILE, out / NESTED_FOLDS_FILE, out / RESULTS_FILE, out / OOF_FILE, out / PLOTS_DIR,
                 out / CARD_FILE, out / AUDIT_FILE, out / AUDIT_DIR, *fold_dirs(out),
                 *(p for p in out.glob(NESTED_DIR_GLOB) if p.is_dir())]:
        if item.is_dir():
            shutil.rmtree(item)
        elif item.exists():
            item.unlink()
