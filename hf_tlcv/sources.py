"""Where models and data come from: local folders and files, the Hugging Face Hub, and named sources that packages
install (hf_tlcv's own embedded offline assets answer to `builtin:`).

A *source* is an object with `prefix` (e.g. `"builtin:"`), `model_path(name) -> str`, `load_dataset(name, split,
**kwargs)`, `options(kind) -> list[str]` and, optionally, `name_of(path) -> str | None` (the source's name of one of its
local files or folders, so that records name `builtin:animal-mnist` rather than a cache path), published under the `hf_tlcv.sources` entry-point group (see
`pyproject.toml`) or registered with [`register_source`]. The core never imports a source: a name with its prefix
loads it on first use, so the embedded assets stay an optional layer on top of the library.

Every Hub load goes through [`hub_errors`]: an unreachable Hub becomes one [`HubUnreachableError`] that says what to
do, at once (a socket probe decides reachability before any download is tried, instead of half a minute of
retries), and a model already in the local cache is still loaded when the Hub is down.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from typing import Any, Iterator, Protocol

__all__ = ["HubUnreachableError", "hub_errors", "hub_is_reachable", "hub_unreachable_error", "is_hub_unreachable",
           "load_data", "offline_options", "register_source", "resolve_model_path", "source_for", "source_name"]

ENTRY_POINT_GROUP = "hf_tlcv.sources"


class Source(Protocol):
    prefix: str

    def model_path(self, name: str) -> str: ...

    def load_dataset(self, name: str, split: Any = "train", **kwargs): ...

    def options(self, kind: str) -> list[str]: ...


_SOURCES: dict[str, Source] = {}
_ENTRY_POINTS_LOADED = False


def register_source(source: Source) -> None:
    """Make names starting with `source.prefix` resolve through `source` (entry points do this automatically)."""
    _SOURCES[source.prefix.lower()] = source


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            source = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken optional source must not break loading anything else
            warnings.warn(f"The hf_tlcv source plugin {point.name!r} ({point.value}) could not be loaded and is "
                          f"skipped ({type(exc).__name__}: {exc}); reinstall or fix the package that provides it, or "
                          "uninstall it.", RuntimeWarning, stacklevel=2)
            continue
        _SOURCES.setdefault(source.prefix.lower(), source)


def sources() -> list[Source]:
    _load_entry_points()
    return list(_SOURCES.values())


def source_for(name: Any) -> Source | None:
    """The installed source whose prefix `name` starts with, or `None` (a Hub id or a local path)."""
    if not isinstance(name, str) or ":" not in name or os.path.exists(name):
        return None
    key = name.strip().lower()
    for source in sources():
        if key.startswith(source.prefix.lower()):
            return source
    return None


def offline_options(kind: str) -> list[str]:
    """The names every installed source offers for `kind` (`"model"` or `"dataset"`)."""
    return [option for source in sources() for option in source.options(kind)]


def resolve_model_path(name_or_path: str) -> str:
    """A source's name (`builtin:efficientnet-lite0`) -> its local folder; Hub ids and paths are returned unchanged."""
    source = source_for(name_or_path)
    return source.model_path(name_or_path) if source is not None else name_or_path


def source_name(name_or_path: str | os.PathLike | None) -> str | None:
    """The name a local model or data folder has where it came from, for the records a run writes: a file or folder
    of an installed source (`~/.cache/hf_tlcv/models/efficientnet-lite0` -> `builtin:efficientnet-lite0`), a snapshot
    in the Hub cache (`.../hub/models--google--vit-base/snapshots/<sha>` -> `google/vit-base`); anything else (a Hub
    id, a source's name, a path the user chose) unchanged.

    Example:
    ```python
    >>> source_name("/data/hub/models--google--vit-base-patch16-224/snapshots/0a1b2c")
    'google/vit-base-patch16-224'
    >>> source_name("google/vit-base-patch16-224"), source_name("builtin:trec")
    ('google/vit-base-patch16-224', 'builtin:trec')

    ```
    """
    if name_or_path is None:
        return None
    text = os.fspath(name_or_path)
    if source_for(text) is not None:
        return text
    parts = text.replace("\\", "/").split("/")
    for i, part in enumerate(parts[:-2]):
        kind, _, repo = part.partition("--")
        if kind in ("models", "datasets") and repo and parts[i + 1] == "snapshots":
            return repo.replace("--", "/")
    if os.path.exists(text):
        for source in sources():
            name = getattr(source, "name_of", lambda path: None)(text)
            if name:
                return name
    return text


# ---- Hub reachability ---------------------------------------------------------------------------------------------
_REACHABLE: dict[str, tuple[float, bool]] = {}
_PROBE_TIMEOUT_S = 3.0
_PROBE_TTL_S = 60.0


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_is_reachable() -> bool:
    """Whether a TCP connection to the Hub endpoint opens within 3 s (answer kept for a minute).

    `False` at once under `HF_HUB_OFFLINE=1`. The probe costs milliseconds and spares the ~30 s of retries
    `huggingface_hub` spends before it gives up on an unreachable Hub.
    """
    from huggingface_hub import constants
    from urllib.parse import urlparse

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = _endpoint()
    cached = _REACHABLE.get(endpoint)
    if cached is not None and time.monotonic() - cached[0] < _PROBE_TTL_S:
        return cached[1]
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=_PROBE_TIMEOUT_S):
            reachable = True
    except OSError:
        reachable = False
    _REACHABLE[endpoint] = (time.monotonic(), reachable)
    return reachable


# ---- offline detection and errors ----------------------------------------------------------------------------------
# Matched by class name anywhere in an exception's MRO, so the check works whichever HTTP stack raised
# (huggingface_hub ships its own httpx build, `datasets` may use requests/aiohttp, urllib3 underneath)
# without importing any of them.
_UNREACHABLE_CLASS_NAMES = frozenset(
    {
        "OfflineModeIsEnabled",  # HF_HUB_OFFLINE=1
        "LocalEntryNotFoundError",  # huggingface_hub: network failed and the file is not cached
        "ConnectError",  # httpx / httpcore
        "ConnectTimeout",
        "ProxyError",
        "NameResolutionError",  # urllib3
        "NewConnectionError",
        "MaxRetryError",
        "ClientConnectorError",  # aiohttp (datasets streaming)
        "ServerDisconnectedError",
    }
)


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_hub_unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or anything in its cause/context chain) means the Hugging Face Hub could not be reached.

    This is the single place that decides "offline"; both dataset and model loading go through it.

    Args:
        exc (`BaseException`):
            What `datasets.load_dataset`, `from_pretrained` or a Hub client call raised.

    Returns:
        `bool`: True for offline mode (`HF_HUB_OFFLINE=1`), DNS failures, refused/timed-out connections
        and "not cached and could not connect" errors; False for everything else, e.g. a repository that
        exists nowhere (the Hub answered 404) or a bad argument.
    """
    return any(_is_network_error(err) for err in _exception_chain(exc))


def _is_network_error(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, socket.gaierror, socket.timeout)):
        return True
    # requests.ConnectionError is not the builtin one, hence the name check.
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & _UNREACHABLE_CLASS_NAMES) or "ConnectionError" in names


class HubUnreachableError(ConnectionError):
    """The Hugging Face Hub could not be reached for a model or dataset id (and it was not cached).

    A `ConnectionError`, hence also an `OSError`, so callers that already catch either keep working.

    Attributes:
        kind (`str`): what was being loaded ("model", "dataset", ...).
        name (`str`): the id that was asked for.
    """

    def __init__(self, message: str, kind: str = "", name: str = ""):
        super().__init__(message)
        self.kind = kind
        self.name = name


def hub_unreachable_error(kind: str, name: str, exc: BaseException | None = None) -> HubUnreachableError:
    """Build the error to raise when `name` could not be fetched because the Hub is unreachable.

    Loaders use it through [`hub_errors`], so every loader reports the same actionable message.

    Args:
        kind (`str`):
            What was being loaded: `"dataset"` lists the builtin datasets; `"model"`,
            `"image processor"`, `"tokenizer"` and the like list the builtin models.
        name (`str`):
            The Hub id that failed.
        exc (`BaseException`, *optional*):
            The original error; its last line is quoted as the cause.

    Returns:
        [`HubUnreachableError`]: not raised, so the caller can chain it with `from exc`.
    """
    options = ", ".join(offline_options("dataset" if kind == "dataset" else "model")) or "none installed"
    cause = ""
    if exc is not None:
        chain = list(_exception_chain(exc))
        # The deepest network error says most (e.g. "Name or service not known"); wrappers below it
        # (datasets' "not cached") say least.
        network = [err for err in chain if _is_network_error(err)]
        root = network[-1] if network else chain[-1]
        text = str(root).strip().splitlines()
        cause = f" Cause: {type(root).__name__}: {text[-1] if text else ''}".rstrip(": ")
    message = (
        f"Could not reach the Hugging Face Hub to load the {kind} {name!r}, and it is not in the local "
        f"cache (no network, or HF_HUB_OFFLINE=1). Use a builtin offline {kind if kind == 'dataset' else 'model'} "
        f"instead ({options}), pass a local path, or run once with network access so the Hub cache holds it "
        f"(a cached copy is used when HF_HUB_OFFLINE=1 is set).{cause}"
    )
    return HubUnreachableError(message, kind=kind, name=name)


@contextlib.contextmanager
def hub_errors(kind: str, name: str) -> Iterator[None]:
    """Around a Hub load: an unreachable Hub becomes [`HubUnreachableError`] naming the builtin options; every
    other error (a missing local folder, a 404, a bad file) propagates unchanged.

    Example:
    ```python
    >>> with hub_errors("model", "google/vit-base-patch16-224-in21k"):
    ...     AutoConfig.from_pretrained("google/vit-base-patch16-224-in21k")  # doctest: +SKIP

    ```
    """
    try:
        yield
    except Exception as exc:
        if is_hub_unreachable(exc):
            raise hub_unreachable_error(kind, name, exc) from exc
        raise



# ---- data ------------------------------------------------------------------------------------------------------
_FILE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".arrow": "arrow",
}


def _data_file_extension(path: str) -> str:
    """The extension that tells the format, looking through a compression suffix (`a.csv.gz` -> `.csv`)."""
    stem, ext = os.path.splitext(path.lower())
    if ext in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        ext = os.path.splitext(stem)[1]
    return ext


def _named(loaded, name: str):
    """`loaded` (a Dataset or DatasetDict) recording the file or folder as the user named it: `datasets` keeps only
    its builder ("csv") and cache files, which is what a run's card would otherwise describe."""
    for part in (loaded.values() if isinstance(loaded, dict) else [loaded]):
        part.info.dataset_name = str(name)
    return loaded


def load_data(name: str, /, split: str | None = "train", **kwargs):
    """Load a dataset by name: a local folder or file, a Hub dataset, or a prefixed name of an installed source
    (`builtin:` for hf_tlcv's embedded offline data), with a clear error when the Hub cannot be reached.

    Named `load_data` so that it never shadows `datasets.load_dataset`, which it calls for files, folders and Hub
    ids.

    Args:
        name (`str`):
            A builtin name (`"builtin:animal-mnist"`, `"builtin:trec"`, ...); a local folder (an image
            folder with one sub-folder per class, or csv/json/parquet files, as `datasets` infers); a local data file
            (`.csv`, `.tsv`, `.json`, `.jsonl`, `.parquet`, `.txt`, optionally compressed);
            or a Hub dataset id. Positional-only, so `name=` stays free for the `datasets` config
            name (`load_dataset("glue", name="mrpc")`).
        split (`str`, *optional*, defaults to `"train"`):
            Split spec, `datasets` syntax (`"train[:10%]"` works for builtins too). `None` returns a
            `datasets.DatasetDict`.
        **kwargs:
            Passed to `datasets.load_dataset` (e.g. `name=`, `data_files=`, `revision=`). Builtin
            datasets take none (options set to None are ignored).

    Returns:
        `datasets.Dataset` (or `datasets.DatasetDict` when `split` is None).

    Raises:
        ValueError: unknown builtin name (the message lists them) or a split a builtin does not have.
        HubUnreachableError: a Hub id could not be fetched because the Hub is unreachable; the message
            names the builtin datasets. It is a `ConnectionError`/`OSError`.
    """
    provider = source_for(name)
    if provider is not None:
        return provider.load_dataset(name, split=split, **kwargs)

    import datasets

    path = os.path.expanduser(str(name))
    if os.path.isfile(path) and "data_files" not in kwargs:
        ext = _data_file_extension(path)
        builder = _FILE_BUILDERS.get(ext)
        if builder is None:
            raise ValueError(
                f"Cannot tell the format of {path!r} from its extension. Supported: "
                f"{', '.join(sorted(_FILE_BUILDERS))}; or call datasets.load_dataset(<format>, data_files=...)."
            )
        if ext == ".tsv":
            kwargs.setdefault("sep", "\t")
        return _named(datasets.load_dataset(builder, data_files=path, split=split, **kwargs), name)
    if os.path.isdir(path):
        return _named(datasets.load_dataset(path, split=split, **kwargs), name)
    if path.startswith((".", "/", "~")) or "\\" in path or _data_file_extension(path) in _FILE_BUILDERS:
        # Not a valid Hub id either: asking the Hub would only turn a typo into a confusing network error.
        raise FileNotFoundError(
            f"No such local file or folder: {path!r}. Offline datasets: {', '.join(offline_options('dataset'))}."
        )
    with hub_errors("dataset", name):
        if not hub_is_reachable():
            raise ConnectionError(f"the Hub at {_endpoint()} cannot be reached")
        return datasets.load_dataset(name, split=split, **kwargs)


