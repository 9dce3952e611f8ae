"""The Space's trust boundary: what a stranger's request may make this machine do, and what the stranger is told.

Every visitor of a public Space is a stranger, and the app runs on its owner's machine with its owner's secrets.
Everything a visitor sends crosses this module before the library sees it:

- [`RunSettings.from_inputs`]: the numbers of a run, held to the ranges the page offers (an API caller can send any
  value: 10,000 folds or 8,192-pixel images would hold the shared machine for hours).
- [`hub_repo_id`]: a Hub repository id, never a path on this machine; [`check_hub_repo`] then asks the Hub whether
  the visitor's credentials (or none) can see it, and whether it is small enough to download here.
- [`push_credentials`] and [`identity_markdown`]: a push uses the visitor's own token (pasted, or from "Sign in with
  Hugging Face"), never the Space's; the page says which before the button is pressed.
- [`visitor_message`]: the one filter every exception passes before a visitor sees it. The visitor gets one
  sentence (Markdown-escaped) without server paths, temporary-folder names, tokens or library calls; the server log
  gets the whole exception, tokens masked, under a short reference the sentence repeats for unexpected errors.
"""

from __future__ import annotations

import errno
import os
import re
import secrets as _random
import sys
import tempfile
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from transformers.utils import logging

from hf_tlcv.escaping import escape_markdown
from hf_tlcv.hub.push import scrub
from hf_tlcv.upload import UploadError

logger = logging.get_logger("hf_tlcv.space")

__all__ = [
    "BUDGETS",
    "RANGES",
    "Budgets",
    "PushCredentials",
    "RunSettings",
    "VisitorError",
    "bounded",
    "check_hub_repo",
    "hub_repo_id",
    "identity_markdown",
    "push_credentials",
    "redact",
    "ticked",
    "visitor_message",
    "work_units",
]


class VisitorError(ValueError):
    """A request the Space refuses; the message is written for the visitor (it is still escaped when shown).

    `own`: text the visitor typed that the message quotes. It is shown back as typed (escaped), not redacted: a
    path-shaped id the visitor sent tells them nothing about this machine, and garbling it would hide their mistake.
    """

    def __init__(self, message: str, *, own: str | None = None):
        super().__init__(message)
        self.own = own


# ---- numbers ---------------------------------------------------------------------------------------------------------
# name -> (lowest, highest, what the page calls it). The page's sliders are built from the same table.
RANGES: dict[str, tuple[float, float, str]] = {
    "n_folds": (2, 10, "folds k"),
    "n_repeats": (1, 5, "repeats"),
    "epochs": (1, 20, "epochs"),
    "learning_rate": (1e-6, 1.0, "learning rate"),
    "sample_cap": (0, 10_000, "sample cap"),
    "image_size": (32, 224, "image size"),
    "freeze_layers": (0, 48, "blocks frozen"),
    # Tune: every trial is a whole cross-validation, so a search costs up to this many runs of the first tab.
    "n_trials": (4, 10, "trials"),
}


@dataclass(frozen=True)
class Budgets:
    """What one visitor's job, and one visitor, may take of the machine. Sized for a free CPU Space (2 vCPU, 16 GB
    RAM, 50 GB disk) that serves one job at a time; `spaces/README.md` lists them in its threat model.

    Attributes:
        max_classes: classes a job's data may have (fold models, tables and plots grow with them).
        max_rows: rows of a Hub dataset a job may use (the sample cap's maximum).
        max_work: units of work a job may ask for, counted before it trains (see [`work_units`]): Compare counts
            every variant it trains, Tune every trial at its costliest strategy and largest epochs.
        work_minutes: what `max_work` takes on a free CPU Space, for the refusal's sentence.
        max_job_seconds: wall-clock time a job may run (from its start, preparation included); then it is stopped.
        max_job_memory_bytes: resident memory of a job's process (and its children); then it is stopped.
        visitor_disk_bytes: a visitor's files (runs, zips, downloads, cached features); the oldest downloads, then
            the oldest runs, go first when a new job needs the room.
        max_waiting: jobs waiting for the machine, all visitors together; one per visitor.
        upload_bytes: one uploaded file (Gradio's `max_file_size`: a zip, or an image to classify).
    """

    max_classes: int = 100
    max_rows: int = int(RANGES["sample_cap"][1])
    max_work: int = 15_000
    work_minutes: int = 25
    max_job_seconds: int = 30 * 60
    max_job_memory_bytes: int = 8 * 2**30
    visitor_disk_bytes: int = 2 * 2**30
    max_waiting: int = 16
    upload_bytes: int = 50 * 2**20

    def describe(self) -> str:
        """The budgets in words, for the page."""
        return (f"Each job may have at most {self.max_classes} classes and {self.max_work:,} units of work (about "
                f"{self.work_minutes} minutes of full fine-tuning at 128 px; Compare and Tune count every "
                f"cross-validation they run), and runs at most {duration(self.max_job_seconds)} in "
                f"{size(self.max_job_memory_bytes)} of memory; your files may take {size(self.visitor_disk_bytes)} "
                "(the oldest go first).")


    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Budgets":
        """The budgets, each replaced by the environment variable `HF_TLCV_SPACE_<FIELD>` when it is set (a whole
        number): an owner on bigger hardware raises them, the tests lower them."""
        environ = os.environ if environ is None else environ
        values = {}
        for item in fields(cls):
            raw = environ.get(f"HF_TLCV_SPACE_{item.name.upper()}")
            if raw is not None:
                try:
                    values[item.name] = int(raw)
                except ValueError:
                    raise SystemExit(f"HF_TLCV_SPACE_{item.name.upper()} must be a whole number (got {raw!r}).") from None
        return cls(**values)


BUDGETS = Budgets.from_env()


def duration(seconds: float) -> str:
    """`"40 s"`, `"30 minutes"`."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes"


def size(n_bytes: float) -> str:
    """`"400 MB"`, `"8 GB"`."""
    return f"{n_bytes / 2**20:.0f} MB" if n_bytes < 2**30 else f"{n_bytes / 2**30:.0f} GB"

# Cost of one training image-epoch at 128 px, relative to full fine-tuning, per strategy; LoRA's adapters sit in every
# block, so its backward pass is nearly full. A linear probe trains its head on cached features (almost free); it and
# freezing pay one forward pass per image for the cache, and every fold pays one evaluation pass of its rows.
_STRATEGY_COST = {"full": 1.0, "lora": 1.0, "freeze": 0.6, "linear_probe": 0.02}
_FORWARD_PASS = 0.35


def work_units(n_rows: int, image_size: int, fold_trainings: int, n_folds: int, epochs: float,
               strategy: str) -> float:
    """Units of work of `fold_trainings` trainings (folds x repeats x variants or trials) of `epochs` epochs on
    `n_rows` rows cut in `n_folds` folds: training image-epochs weighted by what trains, plus the forward passes of
    the feature cache and of every fold's evaluation, all scaled by the image area relative to 128 px. One unit is
    one training image-epoch of full fine-tuning at 128 px: about 10 per second on 2 CPU cores (EfficientNet-Lite0).

    Example:
    ```python
    >>> round(work_units(1000, 128, 5, 5, 3, "linear_probe"))  # the page's default run
    940
    >>> round(work_units(1000, 128, 5, 5, 3, "full"))  # the same, fully fine-tuned
    12350

    ```
    """
    scale = (image_size / 128) ** 2
    n_train = n_rows * (n_folds - 1) / n_folds
    training = fold_trainings * epochs * n_train * _STRATEGY_COST[strategy]
    passes = fold_trainings * (n_rows / n_folds) * _FORWARD_PASS
    if strategy in ("linear_probe", "freeze"):
        passes += n_rows * _FORWARD_PASS
    return scale * (training + passes)


def bounded(name: str, value, integer: bool = True):
    """`value` as a number within `RANGES[name]`, or a [`VisitorError`] that names the setting and its range."""
    low, high, label = RANGES[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VisitorError(f"The {label} must be a number between {low:g} and {high:g}.") from None
    if not low <= number <= high or (integer and number != int(number)):
        kind = "a whole number" if integer else "a number"
        raise VisitorError(f"The {label} must be {kind} between {low:g} and {high:g} (got {value}).")
    return int(number) if integer else number


def ticked(labels, offered: dict[str, str], what: str) -> tuple[str, ...]:
    """The values of the ticked `labels` of a checklist whose choices are `offered` (label -> value), or a
    [`VisitorError`] that lists the choices: an API caller can send any list, or none."""
    labels = list(labels or [])
    if not labels or any(label not in offered for label in labels):
        raise VisitorError(f"Tick at least one {what}, among: {', '.join(offered)}.")
    return tuple(offered[label] for label in dict.fromkeys(labels))


@dataclass(frozen=True)
class RunSettings:
    """The settings of one run, checked against [`RANGES`] and the page's choices."""

    strategy: str
    freeze_layers: int
    n_folds: int
    n_repeats: int
    epochs: int
    learning_rate: float
    sample_cap: int
    image_size: int

    @classmethod
    def from_inputs(cls, strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size,
                    *, strategies: Iterable[str]) -> "RunSettings":
        """Check the values a visitor sent (page or API); raise [`VisitorError`] with the first one out of range.

        Args:
            strategy (`str`): one of `strategies`.
            strategies (`Iterable[str]`): the strategy names the page offers.
            others: see [`RANGES`]; `image_size` must also be a multiple of 32 (the slider's step, and what
                EfficientNet pads like the original network).
        """
        strategies = list(strategies)
        if strategy not in strategies:
            raise VisitorError(f"Choose what trains among: {', '.join(strategies)}.")
        size = bounded("image_size", image_size)
        if size % 32:
            raise VisitorError(f"The image size must be a multiple of 32 pixels (got {size}).")
        return cls(strategy=strategy, freeze_layers=bounded("freeze_layers", freeze_layers),
                   n_folds=bounded("n_folds", n_folds), n_repeats=bounded("n_repeats", n_repeats),
                   epochs=bounded("epochs", epochs), learning_rate=bounded("learning_rate", learning_rate, False),
                   sample_cap=bounded("sample_cap", sample_cap), image_size=size)


# ---- Hub repositories ------------------------------------------------------------------------------------------------
def hub_repo_id(text: str | None, what: str, example: str) -> str:
    """`text` as a Hub repository id, or a [`VisitorError`].

    `huggingface_hub.utils.validate_repo_id` decides the form (`name` or `namespace/name`: letters, digits, `-`,
    `_`, `.`; no `..`, `--`, `/` at either end, at most 96 characters), which already excludes absolute paths, `~`
    and `..`. An id that also names something relative to this process's working folder is refused too:
    `transformers` and `datasets` would load that local folder instead of the Hub repository.

    Args:
        text (`str`): what the visitor typed.
        what (`str`): "model", "dataset" or "model repository", for the message.
        example (`str`): an id to show in the message.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = (text or "").strip()
    if not text:
        raise VisitorError(f"Type a Hub {what} id, e.g. {example}.")
    refusal = VisitorError(f"{text[:100]!r} is not a Hub {what} id the Space can load: type namespace/name as on "
                           f"the Hub (letters, digits, '-', '_', '.'), e.g. {example}.", own=repr(text[:100]))
    try:
        validate_repo_id(text)
    except HFValidationError:
        raise refusal from None
    if os.path.lexists(text) or os.path.lexists(text.split("/")[0]):
        raise refusal
    return text


_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")


def check_hub_repo(repo_id: str, repo_type: str, token: str | bool, max_bytes: int,
                   patterns: tuple[str, ...] | None = None) -> int:
    """Ask the Hub whether `token` can see `repo_id` and how much of it a load downloads; refuse above `max_bytes`.

    Args:
        repo_id (`str`): a checked id (see [`hub_repo_id`]).
        repo_type (`str`): `"model"` or `"dataset"`.
        token (`str` or `False`): the visitor's token, or `False` for an anonymous request (never the Space's).
        max_bytes (`int`): the most this machine downloads for one visitor's request.
        patterns (`tuple[str, ...]`, *optional*): `fnmatch` patterns of the files the load downloads; default, for
            models, the weight files of one format (safetensors when present) plus everything that is not a weight
            file, and for datasets every file.

    Returns:
        `int`: the bytes counted.

    Raises:
        VisitorError: too large. Hub errors (not found, gated, unreachable) propagate for [`visitor_message`].
    """
    from fnmatch import fnmatch

    from huggingface_hub import HfApi

    api = HfApi()
    info = (api.model_info if repo_type == "model" else api.dataset_info)(repo_id, files_metadata=True, token=token)
    files = {s.rfilename: s.size or 0 for s in (info.siblings or [])}
    if patterns is not None:
        files = {f: n for f, n in files.items() if any(fnmatch(f, p) for p in patterns)}
    elif repo_type == "model":
        weights = [f for f in files if f.endswith(_WEIGHTS)]
        keep = [f for f in weights if f.endswith(".safetensors")] or weights
        files = {f: n for f, n in files.items() if not f.endswith(_WEIGHTS) or f in keep}
    total = sum(files.values())
    if total > max_bytes:
        raise VisitorError(f"{repo_id} is {total / 2**20:,.0f} MB, more than the {max_bytes / 2**20:,.0f} MB this "
                           f"shared machine downloads for one visitor; choose a smaller {repo_type}.")
    return total


# ---- who pushes --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushCredentials:
    """The token a push uses and where it came from: `"pasted"`, `"oauth"` (Sign in with Hugging Face), `"local"`
    (this machine's login, only with the app's `--use-local-token`) or `"none"`."""

    token: str | None
    source: str

    def __repr__(self) -> str:  # never print a token, even in a debugger or a log line
        return f"PushCredentials(source={self.source!r}, token={'<set>' if self.token else None})"


def push_credentials(pasted: str | None, oauth_token: str | None, local_token: str | None) -> PushCredentials:
    """The visitor's own credentials, in the order a visitor expects: a token pasted for this push, else their
    sign-in, else (only when the app runs locally with `--use-local-token`) this machine's login. Nothing else: the
    Space's `HF_TOKEN` is not a candidate."""
    pasted = (pasted or "").strip()
    if pasted:
        return PushCredentials(pasted, "pasted")
    if oauth_token:
        return PushCredentials(oauth_token, "oauth")
    if local_token:
        return PushCredentials(local_token, "local")
    return PushCredentials(None, "none")


def identity_markdown(source: str, account: str | None = None, oauth_available: bool = True) -> str:
    """One line that tells the visitor, before they press Push, whose identity a push will use."""
    who = f" ({escape_markdown(account)})" if account else ""
    if source == "pasted":
        return ("**Pushes use:** the token you pasted, writing as the account it belongs to (checked when you press "
                "Push); it is forgotten right after.")
    if source == "oauth":
        return f"**Pushes use:** your Hugging Face account{who}, signed in on this page."
    if source == "local":
        return (f"**Pushes use:** this machine's Hugging Face login{who}: the app was started with "
                "`--use-local-token` for its owner's own use.")
    sign_in = "sign in with Hugging Face (top right), or paste" if oauth_available else "paste"
    return (f"**Pushes use:** nobody yet, a push needs your own credentials: {sign_in} a write token "
            "(huggingface.co/settings/tokens). This Space never pushes with its own credentials.")


# ---- the message filter ----------------------------------------------------------------------------------------------
def _server_roots(extra: Iterable[str | os.PathLike]) -> list[str]:
    roots = {str(Path(p)) for p in extra}
    roots |= {tempfile.gettempdir(), os.getcwd(), str(Path.home()), sys.prefix, sys.base_prefix,
              str(Path(__file__).resolve().parent)}
    for path in list(roots):
        try:
            roots.add(str(Path(path).resolve()))
        except OSError:
            pass
    return sorted((r for r in roots if r and r != "/"), key=len, reverse=True)


_PATH = re.compile(r"(?<![\w.:/~\\-])(?:~|\.{1,2})?/(?:[^\s'\"`,;:()\[\]<>]+)")
_TEMP_NAME = re.compile(r"\b(?:tlcv-space-|visitor-)[A-Za-z0-9_.-]{4,}|\btmp[A-Za-z0-9_]{6,}\b")
_CODE = re.compile(r"`|\b[A-Za-z_][\w.]*\((?!\s*\))|\bimport\s|\bpip\s+install\b|Traceback|File \"")


def redact(text: str, secrets: Iterable[str | None] = (), roots: Iterable[str | os.PathLike] = (), *,
           any_path: bool = True) -> str:
    """`text` without tokens (`secrets`, and anything shaped like a Hub token or an Authorization value), without
    paths of this machine (`roots`, the temporary folder, the home and working folders, Python's prefix, and, with
    `any_path`, any other absolute path) and without temporary-folder names."""
    for secret in secrets:
        if secret:
            text = scrub(text, secret)
    text = scrub(text)
    for root in _server_roots(roots):
        text = text.replace(root, "<server folder>")
    if any_path:
        text = _PATH.sub("<server folder>", text)
    return _TEMP_NAME.sub("<server folder>", text)


def _plain_sentences(text: str, limit: int = 400) -> str:
    """The sentences of a library message that speak to a person: those that show code (a call, an import, a
    backticked snippet) are library advice that a visitor cannot act on."""
    parts = re.split(r"(?<=[.;!?])\s+", " ".join(text.split()))
    kept = [p for p in parts if p and not _CODE.search(p)]
    out = " ".join(kept)
    return out if len(out) <= limit else out[:limit].rsplit(" ", 1)[0] + "…"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then the exceptions it was raised from or while handling (`raise ... from None` hides the context from
    tracebacks, not from `__context__`)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _hub_sentence(exc: BaseException) -> str | None:
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return "That repository is gated: accept its conditions on its Hub page first, then sign in here."
    if isinstance(exc, RepositoryNotFoundError):
        return ("That repository was not found on the Hub, or it is private and your credentials cannot see it "
                "(the Space looks with your sign-in or token only).")
    if isinstance(exc, DisabledRepoError):
        return "That repository has been disabled on the Hub."
    if isinstance(exc, RevisionNotFoundError):
        return "That repository does not have the requested revision."
    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return "The Hub could not be reached from this machine; try again later, or use the built-in data and model."
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            return "The Hub did not accept your sign-in or token (401): sign in again or paste a valid token."
        if status == 403:
            return ("The Hub refused the request (403): your account may not write there. Push to a repository in "
                    "your own namespace, or use a token with write access to it.")
        if status == 404:
            return "That repository or file was not found on the Hub (404)."
        if status == 429:
            return "The Hub is limiting the number of requests; wait a minute and try again."
        if status is not None and status >= 500:
            return f"The Hub answered with a server error ({status}); try again later."
        return f"The Hub refused the request ({status})." if status else "The Hub request failed."
    name = type(exc).__name__
    if isinstance(exc, ConnectionError) or any(w in name for w in ("Connect", "Timeout", "Network", "Proxy")):
        return "The Hub could not be reached from this machine; try again later, or use the built-in data and model."
    return None


def _sentence(exc: BaseException) -> tuple[str, bool]:
    """(sentence, expected): `expected` is False for failures that are the app's fault, not the visitor's."""
    from hf_tlcv.hub.push import HubPushError

    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, (VisitorError, UploadError)):
            return str(item), True
    for item in chain:
        sentence = _hub_sentence(item)
        if sentence:
            return sentence, True
    if isinstance(exc, HubPushError):
        return "The push to the Hub failed. Your run is kept here: press Push again to retry.", True
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return ("The machine ran out of memory for this request; use a smaller sample cap, image size or model."), True
    if isinstance(exc, OSError) and exc.errno in (errno.ENAMETOOLONG, errno.ENOSPC, errno.EMFILE):
        return {
            errno.ENAMETOOLONG: "A file or folder name is too long for this machine; shorten the names and retry.",
            errno.ENOSPC: "This machine is out of disk space; try again later.",
            errno.EMFILE: "This machine is too busy (too many open files); try again in a minute.",
        }[exc.errno], True
    if isinstance(exc, (ValueError, TypeError)) and not isinstance(exc, UnicodeError):
        sentence = _plain_sentences(str(exc))
        if sentence:
            return sentence, True
    return "", False


def visitor_message(exc: BaseException, *, secrets: Iterable[str | None] = (),
                    roots: Iterable[str | os.PathLike] = ()) -> str:
    """The one way an exception reaches a visitor: a Markdown-escaped sentence, and the whole story in the log.

    Visitor-level errors ([`VisitorError`], `hf_tlcv.upload.UploadError`) keep their words; Hub errors anywhere in
    the chain (also inside `HubPushError` or the `OSError` that `transformers` wraps them in) become one sentence per
    kind (401, 403, not found, gated, server error, unreachable); disk, memory and name-length failures get their
    own; library `ValueError`/`TypeError` keep their sentences that show no code. Anything else is "something went
    wrong" with a reference to the log line. Then every sentence is [`redact`]ed and escaped.

    Args:
        exc (`BaseException`): what was raised while serving the visitor.
        secrets (`Iterable[str]`): tokens that must not appear (the visitor's, and any the app holds).
        roots (`Iterable[str | os.PathLike]`): server folders to hide besides the usual ones (the work folder).

    Returns:
        `str`: Markdown for the page, without a prefix.
    """
    secrets = [s for s in secrets if s]
    reference = _random.token_hex(3)
    detail = "".join(traceback.format_exception(exc))
    for secret in secrets:  # the log keeps the paths (it is the owner's), never a token
        detail = scrub(detail, secret)
    detail = scrub(detail)
    sentence, expected = _sentence(exc)
    if expected:
        logger.info("Visitor request refused [%s]: %s", reference, detail.strip().splitlines()[-1])
        logger.debug("[%s] %s", reference, detail)
    else:
        logger.error("Unexpected error while serving a visitor [%s]:\n%s", reference, detail)
        sentence = (f"Something went wrong on the server (reference {reference}). The app is still usable: try "
                    "again, or tell the Space's owner the reference.")
    own = getattr(exc, "own", None) if expected else None
    if own and own in sentence:
        # The visitor's own words go back as they typed them ('../../etc' stays readable), except for what is this
        # machine's: its folders, its temporary names, tokens.
        shown = escape_markdown(redact(own, secrets, roots, any_path=False))
        return escape_markdown(redact(sentence.replace(own, _OWN), secrets, roots)).replace(_OWN, shown)
    return escape_markdown(redact(sentence, secrets, roots))


_OWN = "VISITORTEXTQUOTED"  # stands for the visitor's own words while the rest of a sentence is redacted
