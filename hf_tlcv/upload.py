"""Untrusted uploads: a zip of an image folder (one sub-folder per class) turned into an image-classification dataset.

Everything a stranger's zip can do wrong is caught here, at the boundary, with one sentence that says what was
wrong and what to do, before a file is written or a model is loaded: not a zip, encrypted members, paths that
escape the extraction folder (``../``, absolute paths, drive letters), symbolic links, more files or more bytes
than [`UploadLimits`] allow (checked on the declared sizes first, then enforced while streaming, so a zip bomb
that lies about its sizes is cut off), files that are not images or are too large to decode, a single class,
and classes with fewer images than folds. The Space uses it for its uploads; scripts can use it too.

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
import os
import shutil
import stat
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

__all__ = [
    "IMAGE_EXTENSIONS",
    "UploadError",
    "UploadLimits",
    "class_counts",
    "extract_zip",
    "image_folder_dataset",
    "load_image_zip",
    "preview_samples",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Operating-system litter that zip tools add; skipped silently rather than reported as "not an image".
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}
_IGNORED_DIRS = {"__macosx"}
_CHUNK = 1 << 16


class UploadError(ValueError):
    """An upload that cannot be used; the message says why and what to do, and is safe to show to the uploader."""


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


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

    Example:
    ```python
    >>> UploadLimits(max_files=500).describe()
    'at most 500 files, 1,024 MB unpacked (32 MB per file), a 200 MB zip, 40 megapixels per image'
    ```
    """

    max_zip_bytes: int = 200 * 2**20
    max_files: int = 20_000
    max_total_bytes: int = 1024 * 2**20
    max_file_bytes: int = 32 * 2**20
    max_image_pixels: int = 40_000_000

    def __post_init__(self):
        for name in ("max_zip_bytes", "max_files", "max_total_bytes", "max_file_bytes", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"UploadLimits.{name} must be positive (got {getattr(self, name)}).")

    def describe(self) -> str:
        """The limits in words, for the page that asks for an upload."""
        return (f"at most {self.max_files:,} files, {_mib(self.max_total_bytes)} unpacked "
                f"({_mib(self.max_file_bytes)} per file), a {_mib(self.max_zip_bytes)} zip, "
                f"{self.max_image_pixels / 1e6:,.0f} megapixels per image")


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

    Each image is opened (header only) and verified, so unreadable files and images too large to decode are
    reported now rather than as a crash in the middle of a fold.

    Args:
        folder (`str` or `os.PathLike`): holds `class_a/...`, `class_b/...` (optionally inside one wrapping folder).
        min_per_class (`int`, defaults to 2): fewest images a class may have; pass the number of folds, since
            stratified k-fold puts at least one image of every class in each fold.
        limits ([`UploadLimits`], *optional*): `max_image_pixels` applies here.
        hashes (`dict[str, str]`, *optional*): relative path -> content hash (as [`extract_zip`] returns), used
            for a fingerprint that is the same for the same upload; computed when not given.

    Returns:
        `datasets.Dataset` with columns `image` (`datasets.Image`, decoded as RGB, read from `folder`, which
        must therefore stay) and `label` (`datasets.ClassLabel`, classes in sorted order).

    Raises:
        UploadError: no images, an image outside a class folder, unreadable images, one class only, or a class
            with fewer than `min_per_class` images.
    """
    from PIL import Image, UnidentifiedImageError

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
            with Image.open(root / rel) as image:
                if image.width * image.height > limits.max_image_pixels:
                    unreadable.append(f"{rel} ({image.width}x{image.height} pixels, over the limit)")
                    continue
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            unreadable.append(f"{rel} ({type(exc).__name__})")
    if unreadable:
        raise UploadError(f"{len(unreadable)} file(s) are not readable images: {_list_some(unreadable)}; remove or "
                          "re-save them as PNG or JPEG.")
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


def preview_samples(dataset: "datasets.Dataset", per_class: int = 4, label_column: str = "label",
                    image_column: str | None = None) -> list[tuple[object, str]]:
    """The first `per_class` images of each class as `(PIL image, class name)` pairs, class by class.

    Only the chosen rows are decoded, so this is cheap on large datasets.
    """
    from .data import find_column, label_names

    column = find_column(dataset, "image", image_column)
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
    out = []
    for label in order:
        caption = names[label] if names is not None else str(label)
        for row in picked[label]:
            out.append((dataset[row][column], caption))
    return out
