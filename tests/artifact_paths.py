"""Where an artifact names a folder of the machine that wrote it: `server_paths_in(folder_or_zip, roots)`.

A run, study, search or audit folder (and the zip or Hub repository made of it) must name paths relative to itself,
or a data or model source as the user named it; never the machine's temporary folder, home or caches. This helper
finds every place a file in a folder or a `.zip` names one of those roots, so a test can assert that there is none
(the library's tests and the Space's both use it).

Every file is searched as bytes: JSON, markdown, CSV, YAML and text, and also what stores strings uncompressed (an
SQLite study, PNG text chunks, a safetensors header). Parquet compresses its pages, so it is read with pyarrow and
its string columns, column names and schema metadata are searched instead.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["path_forms", "server_paths_in"]

_CONTEXT = 60


def path_forms(roots: Iterable[str | os.PathLike]) -> list[str]:
    """The strings under which each root may appear: as given, resolved (a symlinked `/tmp`), and with the other
    separator (a path written on Windows, or escaped into JSON). The filesystem root and empty roots are skipped:
    they would match every absolute path."""
    forms: set[str] = set()
    for root in roots:
        text = os.fspath(root).rstrip("/\\")
        if len(text) < 2:
            continue
        for form in (text, os.path.realpath(text)):
            windows = form.replace("/", "\\")
            forms.update({form, windows, windows.replace("\\", "\\\\"), form.replace("/", "\\/")})
    return sorted(f for f in forms if len(f) > 1)


def _members(artifact: Path) -> Iterator[tuple[str, bytes]]:
    if artifact.is_dir():
        for path in sorted(artifact.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(artifact).as_posix(), path.read_bytes()
    elif zipfile.is_zipfile(artifact):
        with zipfile.ZipFile(artifact) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield info.filename, archive.read(info)
    else:
        yield artifact.name, artifact.read_bytes()


def _parquet_strings(data: bytes) -> Iterator[tuple[str, str]]:
    """(where, text) for the column names, schema metadata and every string value of a parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    for key, value in (table.schema.metadata or {}).items():
        yield f"metadata {key.decode(errors='replace')}", value.decode(errors="replace")
    for name, column in zip(table.column_names, table.columns):
        yield "column names", name
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            for i, value in enumerate(column.to_pylist()):
                if value is not None:
                    yield f"column {name!r} row {i}", value


def _hits(text: str, forms: list[str], where: str) -> Iterator[str]:
    """One line per occurrence (an occurrence of a longer form, e.g. the resolved path, is not counted twice)."""
    seen: set[int] = set()
    for form in sorted(forms, key=len, reverse=True):
        start = text.find(form)
        while start >= 0:
            if start not in seen:
                seen.add(start)
                excerpt = text[max(0, start - _CONTEXT): start + len(form) + _CONTEXT].replace("\n", " ")
                yield f"{where}: {form!r} in ...{excerpt}..."
            start = text.find(form, start + 1)


def server_paths_in(artifact: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> list[str]:
    """Every place a file of `artifact` names one of `roots`, one line each (`"<file>: '<root>' in ...<text>..."`);
    empty when there is none.

    Args:
        artifact: a folder (searched recursively), a `.zip` file (every member), or a single file.
        roots: the folders that must not appear: the temporary root, the home folder, the caches.

    Example:
    ```python
    >>> import json, tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / "cv_results.json").write_text(json.dumps({"output_dir": str(run / "run-1")}))
    >>> [line.split(":")[0] for line in server_paths_in(run, [run])]
    ['cv_results.json']
    >>> server_paths_in(run, ["/nowhere/else"])
    []

    ```
    """
    forms = path_forms(roots)
    found: list[str] = []
    for name, data in _members(Path(artifact)):
        if name.endswith(".parquet"):
            for where, text in _parquet_strings(data):
                found.extend(_hits(text, forms, f"{name} ({where})"))
        else:
            found.extend(_hits(data.decode("utf-8", errors="replace"), forms, name))
    return found
