"""Untrusted uploads: a zip of an image folder (one sub-folder per class) turned into an image-classification dataset.

Everything a stranger's zip can do wrong is caught here, at the boundary, with one sentence that says what was
wrong and what to do, before a file is written or a model is loaded: not a zip, encrypted members, paths that
escape the extraction folder (``../``, absolute paths, drive letters), symbolic links, more files or more bytes
than [`UploadLimits`] allow (checked on the declared sizes first, then enforced while streaming, so a zip bomb
that lies about its sizes is cut off), files that are not images or are too large to decode, a single class,
and classes with fewer images than folds. The Space uses it for its uploads; scripts can use it too.

Every image a stranger supplies (a file in the zip, an image to classify, a row of a Hub dataset) is decoded through
[`open_image`], which holds it to the same [`UploadLimits`]: its bytes, its pixel count (read from the header before
any pixel is decoded) and its decode time.

Example:
```python
>>> from hf_tlcv.upload import load_image_zip
>>> dataset = load_image_zip("pets.zip", "extracted/", min_per_class=5)  # pets/cat/*.jpg, pets/dog/*.jpg
>>> dataset.features["label"].names
['cat', 'dog']

```
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import datasets
    from PIL import Image as PILImage

__all__ = [
    "IMAGE_EXTENSIONS",
    "UploadError",
    "UploadLimits",
    "check_image_rows",
    "class_counts",
    "extract_zip",
    "image_folder_dataset",
    "load_image_zip",
    "open_image",
    "preview_samples",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The PIL decoders a stranger's bytes may reach: the formats of IMAGE_EXTENSIONS and nothing else (PIL would otherwise
# also try EPS, which runs Ghostscript, and a few dozen rarely audited formats).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# Operating-system litter that zip tools add; skipped silently rather than reported as "not an image".
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}
_IGNORED_DIRS = {"__macosx"}
_CHUNK = 1 << 16
_MAX_NAME_BYTES = 255  # one file or folder name on Linux, macOS and Windows file systems


class UploadError(ValueError):
    """An upload that cannot be used; the message says why and what to do, and is safe to show to the uploader."""


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.3g} megapixels"


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may contain. Defaults suit a shared demo machine; raise them for your own data.

    Args:
        max_zip_bytes (`int`, defaults to 200 MiB): size of the zip file itself.
        max_files (`int`, defaults to 20,000): files in the zip (folders not counted).
        max_total_bytes (`int`, defaults to 1 GiB): all files unpacked together.
        max_file_bytes (`int`, defaults to 32 MiB): one file unpacked.
        max_image_pixels (`int`, defaults to 40,000,000): width x height of one image, read from its header before
            any pixel is decoded (a small PNG can otherwise decode into gigabytes).
        max_decode_seconds (`float`, defaults to 10.0): wall-clock time one image may take to decode; checked
            between reads of its encoded bytes, so a slow image is stopped mid-decode.

    The byte, pixel and decode-time limits hold for every image [`open_image`] decodes, not only for zips.

    Example:
    ```python
    >>> UploadLimits(max_files=500).describe()
    'at most 500 files, 1,024 MB unpacked (32 MB per file), a 200 MB zip, 40 megapixels and 10 s of decoding per image'

    ```
    """

    max_zip_bytes: int = 200 * 2**20
    max_files: int = 20_000
    max_total_bytes: int = 1024 * 2**20
    max_file_bytes: int = 32 * 2**20
    max_image_pixels: int = 40_000_000
    max_decode_seconds: float = 10.0

    def __post_init__(self):
        for name in ("max_zip_bytes", "max_files", "max_total_bytes", "max_file_bytes", "max_image_pixels",
                     "max_decode_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"UploadLimits.{name} must be positive (got {getattr(self, name)}).")

    def describe(self) -> str:
        """The limits in words, for the page that asks for an upload."""
        return (f"at most {self.max_files:,} files, {_mib(self.max_total_bytes)} unpacked "
                f"({_mib(self.max_file_bytes)} per file), a {_mib(self.max_zip_bytes)} zip, "
                f"{self.describe_image()} per image")

    def describe_image(self) -> str:
        """The limits on one image in words: pixels and decode time."""
        return f"{_megapixels(self.max_image_pixels)} and {self.max_decode_seconds:g} s of decoding"


class _DecodeTimeout(Exception):
    pass


class _DeadlineReader(io.RawIOBase):
    """Encoded image bytes that refuse to be read past a deadline.

    PIL decodes by reading the encoded data block by block and feeding each block to its decoder, so a check on every
    read stops a slow decode within one block's work. Formats that PIL decodes in one step after reading everything
    (WebP) are bounded by the pixel limit instead, which is checked before decoding starts.
    """

    def __init__(self, data: bytes, deadline: float):
        self._data = io.BytesIO(data)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if time.monotonic() > self._deadline:
            raise _DecodeTimeout()
        return self._data.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()


def _read_limited(source: bytes | str | os.PathLike | BinaryIO, limit: int, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise UploadError(f"{name} was not received; upload it again.")
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    else:
        data = source.read(limit + 1)
    if len(data) > limit:
        raise UploadError(f"{name} is larger than {_mib(limit)}; resize it or save it as a JPEG.")
    return data


def open_image(source: bytes | str | os.PathLike | BinaryIO, limits: UploadLimits | None = None, *,
               name: str = "The image", exif_transpose: bool = True) -> "PILImage.Image":
    """Decode one untrusted image within `limits`, or say in one sentence why not.

    In order: at most `limits.max_file_bytes` are read; the header is parsed (only PNG, JPEG, BMP, GIF, WebP and TIFF
    decoders are reachable) and `width x height` is compared with `limits.max_image_pixels` before any pixel is
    decoded; the pixels are then decoded with a deadline of `limits.max_decode_seconds`. Nothing process-wide is
    changed (PIL's own `Image.MAX_IMAGE_PIXELS` still applies on top).

    Args:
        source (`bytes`, `str`, `os.PathLike` or a binary file object): the encoded image.
        limits ([`UploadLimits`], *optional*): defaults to `UploadLimits()`.
        name (`str`, defaults to `"The image"`): how messages refer to the image (e.g. its path inside a zip). Never
            pass a server path: messages are meant for the person who supplied the image.
        exif_transpose (`bool`, defaults to `True`): turn photos upright as their EXIF orientation says, as a
            browser shows them.

    Returns:
        `PIL.Image.Image`: the decoded first frame, detached from `source`.

    Raises:
        UploadError: too many bytes or pixels, too slow to decode, not an image of a supported format, or damaged.

    Example:
    ```python
    >>> from hf_tlcv.upload import UploadLimits, open_image
    >>> image = open_image("photo.jpg", UploadLimits(max_image_pixels=25_000_000, max_decode_seconds=5))

    ```
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    limits = limits or UploadLimits()
    data = _read_limited(source, limits.max_file_bytes, name)
    started = time.monotonic()
    try:
        image = Image.open(_DeadlineReader(data, started + limits.max_decode_seconds), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise UploadError(f"{name} is {width:,}x{height:,} pixels, over the limit of "
                              f"{_megapixels(limits.max_image_pixels)}; resize it and try again.")
        image.load()
        if getattr(image, "n_frames", 1) > 1:
            image = image.copy()  # the first frame alone, so nothing reads the source again
        if exif_transpose:
            image = ImageOps.exif_transpose(image)
    except UploadError:
        raise
    except _DecodeTimeout:
        raise UploadError(f"{name} took longer than {limits.max_decode_seconds:g} s to decode; re-save it smaller "
                          "or as a plain PNG or JPEG.") from None
    except Image.DecompressionBombError:
        raise UploadError(f"{name} has far more pixels than the limit of {_megapixels(limits.max_image_pixels)}; "
                          "resize it and try again.") from None
    except UnidentifiedImageError:
        raise UploadError(f"{name} is not an image in a supported format ({', '.join(IMAGE_FORMATS)}).") from None
    except Exception as exc:  # noqa: BLE001 - whatever a decoder raises on a stranger's bytes means "damaged"
        raise UploadError(f"{name} could not be decoded ({type(exc).__name__}: the file is damaged or truncated); "
                          "re-save it as PNG or JPEG.") from None
    return image


def _safe_member_path(name: str) -> PurePosixPath:
    """The relative path a zip member may be written to, or an UploadError for one that would escape."""
    # Zip names use "/", but Windows tools sometimes write "\\"; both are separators for this check.
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise UploadError(f"The zip contains an absolute path ({name!r}); zip the image folder with relative paths "
                          "(class_name/image.png).")
    if any(part == ".." for part in path.parts):
        raise UploadError(f"The zip contains a path that leaves the extraction folder ({name!r}); it was rejected "
                          "without extracting anything. Zip the image folder itself, with relative paths.")
    parts = [p for p in path.parts if p not in ("", ".")]
    too_long = next((p for p in parts if len(p.encode("utf-8")) > _MAX_NAME_BYTES), None)
    if too_long is not None:
        raise UploadError(f"The zip holds a file or folder name longer than {_MAX_NAME_BYTES} bytes "
                          f"({too_long[:40]!r}…); shorten it (class folders are named after their class).")
    return PurePosixPath(*parts) if parts else PurePosixPath()


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix zips keep the file mode in the high 16 bits of external_attr.
    return stat.S_ISLNK(info.external_attr >> 16)


def _is_ignored(path: PurePosixPath) -> bool:
    return any(part.startswith(".") or part.lower() in _IGNORED_DIRS for part in path.parts) or (
        path.name.lower() in _IGNORED_NAMES
    )


def _list_some(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _list_sentences(sentences: list[str], limit: int = 3) -> str:
    shown = " ".join(sentences[:limit])
    return shown + (f" ({len(sentences) - limit} more like these.)" if len(sentences) > limit else "")


def extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, limits: UploadLimits | None = None,
                extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[str, str]:
    """Safely extract the image files of an untrusted zip into `dest`.

    Every member is checked before anything is written: path escapes (``..``, absolute paths, drive letters),
    symbolic links, encryption, file count, declared sizes and file types. Members are then streamed out in
    chunks with the byte limits enforced on the bytes actually decompressed. Hidden files and OS litter
    (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``) are skipped.

    Args:
        zip_path (`str` or `os.PathLike`): the uploaded file.
        dest (`str` or `os.PathLike`): an empty or new folder to extract into.
        limits ([`UploadLimits`], *optional*): the limits to enforce (defaults: `UploadLimits()`).
        extensions (`tuple[str, ...]`): file endings accepted (lower case); any other file is an error.

    Returns:
        `dict[str, str]`: relative path (POSIX) -> SHA-256 of its content, for every extracted file.

    Raises:
        UploadError: anything wrong with the upload; `dest` is left empty in that case.
    """
    limits = limits or UploadLimits()
    zip_path, dest = Path(zip_path), Path(dest)
    if not zip_path.is_file():
        raise UploadError(f"No uploaded file at {zip_path}; upload a .zip of an image folder.")
    size = zip_path.stat().st_size
    if size > limits.max_zip_bytes:
        raise UploadError(f"The upload is {_mib(size)}, over the {_mib(limits.max_zip_bytes)} limit; upload fewer "
                          "or smaller images (a sample of each class is enough to compare fine-tuning settings).")
    if not zipfile.is_zipfile(zip_path):
        raise UploadError(f"{zip_path.name!r} is not a zip file; upload a .zip of a folder with one sub-folder of "
                          "images per class.")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _checked_members(archive, limits, extensions)
            dest.mkdir(parents=True, exist_ok=True)
            try:
                return _stream_members(archive, members, dest, limits)
            except BaseException:
                _empty(dest)  # nothing half-extracted stays behind to be mistaken for a usable folder
                raise
    except zipfile.BadZipFile as exc:
        raise UploadError(f"The zip is damaged ({exc}); create it again and re-upload.") from exc
    except (zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise UploadError(f"The zip cannot be read ({exc}); create it with standard deflate compression.") from exc


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _checked_members(archive: zipfile.ZipFile, limits: UploadLimits,
                     extensions: tuple[str, ...]) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = archive.infolist()
    members, not_images, seen = [], [], set()
    for info in infos:
        path = _safe_member_path(info.filename)  # checked for every member, ignored ones included
        if _is_symlink(info):
            raise UploadError(f"The zip contains a symbolic link ({info.filename!r}); links are not accepted. Zip "
                              "the image files themselves (e.g. `zip -r data.zip folder` without -y).")
        if info.is_dir() or not path.parts or _is_ignored(path):
            continue
        if info.flag_bits & 0x1:
            raise UploadError(f"{info.filename!r} is encrypted; upload a zip without a password.")
        key = path.as_posix().lower()
        if key in seen:
            raise UploadError(f"The zip holds {info.filename!r} twice; keep one copy of each file.")
        seen.add(key)
        if path.suffix.lower() not in extensions:
            not_images.append(info.filename)
        members.append((info, path))
    if len(members) > limits.max_files:
        raise UploadError(f"The zip holds {len(members):,} files, over the limit of {limits.max_files:,}; upload a "
                          "sample of each class instead.")
    if not_images:
        raise UploadError(f"The zip holds files that are not images: {_list_some(not_images)}. Only "
                          f"{', '.join(extensions)} files may be in the class folders; remove the others.")
    if not members:
        raise UploadError("The zip holds no images; put one sub-folder of images per class in it.")
    declared = sum(info.file_size for info, _ in members)
    if declared > limits.max_total_bytes:
        raise UploadError(f"The zip unpacks to {_mib(declared)}, over the {_mib(limits.max_total_bytes)} limit; "
                          "upload fewer or smaller images.")
    too_big = [info.filename for info, _ in members if info.file_size > limits.max_file_bytes]
    if too_big:
        raise UploadError(f"{_list_some(too_big)} unpack to more than {_mib(limits.max_file_bytes)} each; resize "
                          "those images before uploading.")
    return members


def _stream_members(archive: zipfile.ZipFile, members, dest: Path, limits: UploadLimits) -> dict[str, str]:
    root = dest.resolve()
    hashes, total = {}, 0
    for info, path in members:
        target = (root / Path(*path.parts)).resolve()
        if root not in target.parents:  # belt and braces after _safe_member_path
            raise UploadError(f"The zip member {info.filename!r} would be written outside the extraction folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, written = hashlib.sha256(), 0
        # Declared sizes can lie: count the bytes that really come out and stop at the limits.
        with archive.open(info) as src, open(target, "xb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                total += len(chunk)
                if written > limits.max_file_bytes or total > limits.max_total_bytes:
                    raise UploadError(
                        f"{info.filename!r} unpacks to more bytes than the zip declares, past the "
                        f"{_mib(min(limits.max_file_bytes, limits.max_total_bytes))} limit; the upload was rejected "
                        "(possible zip bomb)."
                    )
                digest.update(chunk)
                out.write(chunk)
        hashes[path.as_posix()] = digest.hexdigest()
    return hashes


def _class_layout(paths: list[str]) -> tuple[list[str], list[str]]:
    """(class per file, relative path per file): the first folder level below any single wrapping folder."""
    split = [PurePosixPath(p).parts for p in paths]
    # `zip -r data.zip pets` wraps everything in pets/: look through wrapping folders shared by every file.
    while split and all(len(s) > 2 for s in split) and len({s[0] for s in split}) == 1:
        split = [s[1:] for s in split]
    loose = [p for p, s in zip(paths, split) if len(s) < 2]
    if loose:
        raise UploadError(f"Images must sit in one sub-folder per class, but {_list_some(loose)} "
                          f"{'is' if len(loose) == 1 else 'are'} not inside a class folder; move "
                          f"{'it' if len(loose) == 1 else 'them'} into the folder named after the class.")
    return [s[0] for s in split], paths


def image_folder_dataset(folder: str | os.PathLike, min_per_class: int = 2, limits: UploadLimits | None = None,
                         hashes: dict[str, str] | None = None) -> "datasets.Dataset":
    """An image-classification dataset from a folder with one sub-folder of images per class.

    Each image is decoded once through [`open_image`] (byte, pixel and decode-time limits), so unreadable files and
    images too large or too slow to decode are reported now rather than as a crash in the middle of a fold.

    Args:
        folder (`str` or `os.PathLike`): holds `class_a/...`, `class_b/...` (optionally inside one wrapping folder).
        min_per_class (`int`, defaults to 2): fewest images a class may have; pass the number of folds, since
            stratified k-fold puts at least one image of every class in each fold.
        limits ([`UploadLimits`], *optional*): the per-image limits apply here (`max_file_bytes`,
            `max_image_pixels`, `max_decode_seconds`).
        hashes (`dict[str, str]`, *optional*): relative path -> content hash (as [`extract_zip`] returns), used
            for a fingerprint that is the same for the same upload; computed when not given.

    Returns:
        `datasets.Dataset` with columns `image` (`datasets.Image`, decoded as RGB, read from `folder`, which
        must therefore stay) and `label` (`datasets.ClassLabel`, classes in sorted order).

    Raises:
        UploadError: no images, an image outside a class folder, unreadable images, one class only, or a class
            with fewer than `min_per_class` images.
    """
    from .assets.datasets import columns_to_dataset, image_classification_features

    limits = limits or UploadLimits()
    root = Path(folder)
    files = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and not _is_ignored(PurePosixPath(p.relative_to(root).as_posix()))
    )
    if not files:
        raise UploadError("No images found; put one sub-folder of images per class in the zip.")
    labels, paths = _class_layout(files)
    unreadable = []
    for rel in paths:
        try:
            open_image(root / rel, limits, name=rel, exif_transpose=False)
        except UploadError as exc:
            unreadable.append(str(exc))
    if unreadable:
        raise UploadError(f"{len(unreadable)} file(s) are not usable images. {_list_sentences(unreadable)}")
    counts = Counter(labels)
    classes = sorted(counts)
    if len(classes) < 2:
        raise UploadError(f"The upload holds a single class ({classes[0]!r}); a classifier needs at least two class "
                          "folders, one per class, each with its images.")
    small = [f"{c} ({counts[c]})" for c in classes if counts[c] < min_per_class]
    if small:
        raise UploadError(f"Every class needs at least {min_per_class} images (one per fold), but "
                          f"{_list_some(small, 5)} {'has' if len(small) == 1 else 'have'} fewer; add images or "
                          "lower the number of folds.")
    if hashes is None:
        hashes = {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in paths}
    fingerprint = hashlib.sha256(
        "\n".join(f"{c}\t{rel}\t{hashes.get(rel, '')}" for c, rel in zip(labels, paths)).encode()
    ).hexdigest()[:32]
    index = {c: i for i, c in enumerate(classes)}
    columns = {"image": [str((root / rel).resolve()) for rel in paths], "label": [index[c] for c in labels]}
    return columns_to_dataset(columns, image_classification_features(classes), fingerprint,
                              description=f"image folder upload: {len(paths)} images, {len(classes)} classes")


def load_image_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, min_per_class: int = 2,
                   limits: UploadLimits | None = None) -> "datasets.Dataset":
    """[`extract_zip`] then [`image_folder_dataset`]: an uploaded zip of an image folder as a dataset.

    Args:
        zip_path (`str` or `os.PathLike`): the uploaded zip (`class_a/x.png`, `class_b/y.jpg`, ..., optionally
            inside one wrapping folder).
        dest (`str` or `os.PathLike`): new folder to extract into; the dataset reads its images from there.
        min_per_class (`int`, defaults to 2): fewest images per class (pass the number of folds).
        limits ([`UploadLimits`], *optional*): limits on the zip and its images.

    Returns:
        `datasets.Dataset` with `image` and `label` (`ClassLabel`) columns.

    Raises:
        UploadError: with a message that can be shown to the uploader as is; `dest` is left empty.
    """
    limits = limits or UploadLimits()
    hashes = extract_zip(zip_path, dest, limits)
    try:
        return image_folder_dataset(dest, min_per_class=min_per_class, limits=limits, hashes=hashes)
    except UploadError:
        _empty(Path(dest))
        raise


def class_counts(dataset: "datasets.Dataset", label_column: str = "label") -> dict[str, int]:
    """Rows per class, in class order (class names when the labels are a `ClassLabel`, else the label values)."""
    from .data import label_names

    values = dataset[label_column]
    counts = Counter(values)
    names = label_names(dataset, label_column)
    if names is not None:
        return {name: counts.get(i, 0) for i, name in enumerate(names)}
    return {str(k): counts[k] for k in sorted(counts)}


def _image_column(dataset: "datasets.Dataset", image_column: str | None) -> str | None:
    from .data import find_column

    return find_column(dataset, "image", image_column)


def _trusted_roots(allowed_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    import datasets
    from huggingface_hub import constants

    roots = [datasets.config.HF_DATASETS_CACHE, constants.HF_HUB_CACHE, *allowed_dirs]
    return [Path(r).resolve() for r in roots]


def _encoded_image(item: dict, roots: list[Path], name: str) -> bytes | Path:
    """The encoded bytes of one raw `datasets.Image` cell, or the file that holds them when that file lies inside
    one of `roots` (where `datasets` and `huggingface_hub` keep what they downloaded)."""
    if item.get("bytes"):
        return item["bytes"]
    path = item.get("path")
    if path:
        resolved = Path(path).resolve()
        if "://" not in str(path) and any(root == resolved or root in resolved.parents for root in roots):
            return resolved
        # A row may name any path or URL; datasets would open it. Only files of the dataset itself are read.
        raise UploadError(f"{name} points at a file outside the dataset instead of holding its image.")
    raise UploadError(f"{name} holds no image.")


def check_image_rows(dataset: "datasets.Dataset", limits: UploadLimits | None = None, *,
                     rows: Sequence[int] | None = None, image_column: str | None = None,
                     allowed_dirs: Iterable[str | os.PathLike] = (), max_reported: int = 3) -> int:
    """Decode the images of `dataset` (all rows, or `rows`) through [`open_image`] before anything else decodes them.

    A dataset from the Hub is as untrusted as an upload: each row is held to the same byte, pixel and decode-time
    limits. A row whose image is not embedded but names a file (or a URL) is accepted only when the file lies in the
    `datasets` / `huggingface_hub` caches (a downloaded image folder) or in `allowed_dirs`: `datasets` would otherwise
    open whatever path or URL a stranger's row names.

    Args:
        dataset (`datasets.Dataset`): with an image column (a dataset without one is left alone).
        limits ([`UploadLimits`], *optional*): defaults to `UploadLimits()`.
        rows (`Sequence[int]`, *optional*): the rows to check (e.g. the sample a run will use); default all.
        image_column (`str`, *optional*): default: the first `datasets.Image` column.
        allowed_dirs (`Iterable[str | os.PathLike]`): more folders whose files rows may name.
        max_reported (`int`, defaults to 3): stop after this many bad rows.

    Returns:
        `int`: the number of images checked.

    Raises:
        UploadError: which rows are unusable and why.
    """
    import datasets

    limits = limits or UploadLimits()
    column = _image_column(dataset, image_column)
    if column is None:
        return 0
    if not isinstance(dataset.features[column], datasets.Image):
        raise UploadError(f"The column {column!r} does not hold images; choose a dataset with an image column.")
    raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    indices = list(range(len(raw))) if rows is None else [int(r) for r in rows]
    roots = _trusted_roots(allowed_dirs)
    bad: list[str] = []
    for start in range(0, len(indices), 256):
        chunk = indices[start:start + 256]
        for row, item in zip(chunk, raw.select(chunk)[column]):
            name = f"Row {row}"
            try:
                open_image(_encoded_image(item or {}, roots, name), limits, name=name, exif_transpose=False)
            except UploadError as exc:
                bad.append(str(exc))
                if len(bad) >= max_reported:
                    break
        if len(bad) >= max_reported:
            break
    if bad:
        raise UploadError(f"The dataset holds images that cannot be used ({len(bad)}"
                          f"{'+' if len(bad) >= max_reported else ''} found). {_list_sentences(bad)} Choose another "
                          "dataset or split.")
    return len(indices)


def preview_samples(dataset: "datasets.Dataset", per_class: int = 4, label_column: str = "label",
                    image_column: str | None = None, limits: UploadLimits | None = None,
                    allowed_dirs: Iterable[str | os.PathLike] = ()) -> list[tuple[object, str]]:
    """The first `per_class` images of each class as `(PIL image, class name)` pairs, class by class.

    Only the chosen rows are decoded, so this is cheap on large datasets.

    Args:
        dataset (`datasets.Dataset`): an image dataset (an empty list comes back for one without images).
        per_class (`int`, defaults to 4): images per class.
        label_column (`str`, defaults to `"label"`): the class column.
        image_column (`str`, *optional*): default: the first `datasets.Image` column.
        limits ([`UploadLimits`], *optional*): when given, the images are decoded through [`open_image`] within
            these limits (for data from strangers), with file references restricted as in [`check_image_rows`];
            when `None`, `datasets` decodes them.
        allowed_dirs (`Iterable[str | os.PathLike]`): with `limits`, more folders whose files rows may name.
    """
    import datasets

    from .data import label_names

    column = _image_column(dataset, image_column)
    if column is None:
        return []
    labels = dataset[label_column]
    names = label_names(dataset, label_column)
    picked: dict[object, list[int]] = {}
    for row, label in enumerate(labels):
        rows = picked.setdefault(label, [])
        if len(rows) < per_class:
            rows.append(row)
    order = sorted(picked, key=lambda v: (str(type(v)), v))
    if limits is not None:
        raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        roots = _trusted_roots(allowed_dirs)
        mode = getattr(dataset.features[column], "mode", None)

        def image(row):
            decoded = open_image(_encoded_image(raw[row][column] or {}, roots, f"Row {row}"), limits,
                                 name=f"Row {row}")
            return decoded.convert(mode) if mode and decoded.mode != mode else decoded
    else:
        def image(row):
            return dataset[row][column]
    out = []
    for label in order:
        caption = names[label] if names is not None else str(label)
        for row in picked[label]:
            out.append((image(row), caption))
    return out
