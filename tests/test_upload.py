"""Uploaded zips of image folders: the good layout becomes a dataset, every bad kind is an UploadError that says why."""

from __future__ import annotations

import functools
import io
import stat
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from hf_tlcv.upload import (
    UploadError,
    UploadLimits,
    check_image_rows,
    class_counts,
    extract_zip,
    load_image_zip,
    open_image,
    preview_samples,
)

# The 144-megapixel bomb makes PIL warn at open (above its own 89 MP guard); our limits refuse it before decoding.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def png_bytes(value: int = 0, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def folder_entries(classes=("cat", "dog"), per_class=3, prefix="") -> dict[str, bytes]:
    return {f"{prefix}{c}/{i}.png": png_bytes(40 * k + i) for k, c in enumerate(classes) for i in range(per_class)}


def test_good_zip_becomes_a_dataset_with_sorted_classes(tmp_path):
    entries = folder_entries(("dog", "cat"), 3, prefix="pets/")  # one wrapping folder, as `zip -r pets.zip pets`
    entries["pets/.DS_Store"] = b"junk"
    entries["__MACOSX/pets/._cat"] = b"junk"
    ds = load_image_zip(make_zip(tmp_path / "pets.zip", entries), tmp_path / "out", min_per_class=3)
    assert ds.features["label"].names == ["cat", "dog"]
    assert class_counts(ds) == {"cat": 3, "dog": 3}
    assert ds[0]["image"].mode == "RGB" and ds[0]["image"].size == (8, 8)
    preview = preview_samples(ds, per_class=2)
    assert [caption for _, caption in preview] == ["cat", "cat", "dog", "dog"]
    again = load_image_zip(tmp_path / "pets.zip", tmp_path / "out2", min_per_class=3)
    assert again._fingerprint == ds._fingerprint  # the same upload gives the same fingerprint (resumable runs)


BAD_UPLOADS = {
    "not a zip": (lambda p: (p.write_bytes(b"just some text, not a zip"), p)[1], "not a zip file"),
    "parent escape": (lambda p: make_zip(p, {**folder_entries(), "../evil.png": png_bytes()}), "leaves the extraction"),
    "nested escape": (lambda p: make_zip(p, {**folder_entries(), "cat/../../evil.png": png_bytes()}),
                      "leaves the extraction"),
    "absolute path": (lambda p: make_zip(p, {**folder_entries(), "/tmp/evil.png": png_bytes()}), "absolute path"),
    "drive letter": (lambda p: make_zip(p, {**folder_entries(), "C:\\evil.png": png_bytes()}), "absolute path"),
    "symlink": (lambda p: make_zip(p, folder_entries(), symlinks={"cat/link.png": "/etc/passwd"}), "symbolic link"),
    "not images": (lambda p: make_zip(p, {**folder_entries(), "cat/notes.txt": b"hello"}), "not images"),
    "corrupt image": (lambda p: make_zip(p, {**folder_entries(), "cat/broken.png": b"\x89PNG not really"}),
                      "not usable images"),
    "single class": (lambda p: make_zip(p, folder_entries(("cat",), 5)), "single class"),
    "too few per class": (lambda p: make_zip(p, {**folder_entries(("cat",), 5), **folder_entries(("dog",), 2)}),
                          "at least 3 images"),
    "loose file": (lambda p: make_zip(p, {**folder_entries(), "top.png": png_bytes()}), "not inside a class folder"),
    "empty": (lambda p: make_zip(p, {"readme/": b""}), "no images"),
    "too many files": (lambda p: make_zip(p, folder_entries(per_class=6)), "over the limit of 10"),
    "declared too big": (lambda p: make_zip(p, {**folder_entries(), "cat/big.png": b"\0" * 300_000}), "over the"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_upload_is_rejected_with_a_reason_and_leaves_nothing(tmp_path, kind):
    build, message = BAD_UPLOADS[kind]
    upload = build(tmp_path / "upload.zip")
    limits = UploadLimits(max_files=10, max_total_bytes=200_000, max_file_bytes=400_000)
    dest = tmp_path / "out"
    with pytest.raises(UploadError, match=message):
        load_image_zip(upload, dest, min_per_class=3, limits=limits)
    assert not (tmp_path / "evil.png").exists()
    assert not dest.exists() or not any(dest.iterdir())


def test_zip_bomb_lying_about_its_size_is_refused_and_nothing_stays_extracted(tmp_path):
    upload = make_zip(tmp_path / "bomb.zip", {**folder_entries(), "cat/bomb.png": b"\0" * 2_000_000})
    # Rewrite the declared sizes of the big member in both headers to 10 bytes, as a malicious zip would.
    data = bytearray(upload.read_bytes())
    with zipfile.ZipFile(upload) as archive:
        info = archive.getinfo("cat/bomb.png")
    central = data.rfind(b"PK\x01\x02", 0, len(data))
    while central != -1:
        name_len = int.from_bytes(data[central + 28:central + 30], "little")
        if data[central + 46:central + 46 + name_len] == b"cat/bomb.png":
            data[central + 24:central + 28] = (10).to_bytes(4, "little")
            break
        central = data.rfind(b"PK\x01\x02", 0, central)
    data[info.header_offset + 22:info.header_offset + 26] = (10).to_bytes(4, "little")
    upload.write_bytes(bytes(data))
    # Python's zipfile stops at the declared 10 bytes, so the lie shows as a CRC mismatch of that member (the byte
    # count kept while streaming is the guard behind it): the user is told the zip is damaged and what to do.
    with pytest.raises(UploadError, match=r"The zip is damaged \(.*'cat/bomb\.png'\); create it again and re-upload"):
        extract_zip(upload, tmp_path / "out", UploadLimits(max_file_bytes=100_000, max_total_bytes=100_000))
    assert not any((tmp_path / "out").rglob("*.png"))


def test_image_larger_than_the_pixel_limit_is_refused_before_decoding(tmp_path):
    entries = folder_entries()
    entries["cat/huge.png"] = png_bytes(size=300)
    with pytest.raises(UploadError, match="over the limit"):
        load_image_zip(make_zip(tmp_path / "u.zip", entries), tmp_path / "out", limits=UploadLimits(max_image_pixels=10_000))


def test_limits_validate_and_describe_themselves():
    assert "at most 500 files" in UploadLimits(max_files=500).describe()
    with pytest.raises(ValueError, match="max_files must be positive"):
        UploadLimits(max_files=0)


# ---- one set of image limits for every image a stranger supplies ----------------------------------------------------
def encoded(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@functools.cache
def bomb_png() -> bytes:
    """A flat 12,000 x 12,000 PNG: about 140 KB that decode into 144 MB (the issue's example)."""
    return encoded(Image.new("L", (12_000, 12_000), 0), optimize=True)


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width` x `height` pixels (its IHDR rewritten, CRC included)."""
    data = bytearray(png_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[ihdr + 17:ihdr + 21] = zlib.crc32(bytes(data[ihdr:ihdr + 17])).to_bytes(4, "big")
    return bytes(data)


def test_open_image_decodes_within_the_limits_and_turns_photos_upright():
    photo = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3))  # 6 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show upright
    image = open_image(encoded(photo, "JPEG", exif=exif, quality=95), UploadLimits())
    assert image.size == (4, 6)  # as a browser shows it
    assert np.asarray(open_image(encoded(photo))).tolist() == np.asarray(photo).tolist()  # PNG: exact pixels


IMAGE_REFUSALS = {
    # name: (encoded bytes or a builder, limits, words the sentence must hold)
    "too many pixels (a small PNG bomb)": (lambda: bomb_png(), UploadLimits(), "12,000x12,000 pixels"),
    "past PIL's own bomb guard": (lambda: png_claiming(20_000, 20_000), UploadLimits(), "far more pixels"),
    "too many bytes": (lambda: png_bytes(size=64) + b"\0" * 200, UploadLimits(max_file_bytes=100), "larger than"),
    "too slow to decode": (lambda: encoded(Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (3000, 3000, 3), dtype=np.uint8)), "JPEG", quality=95),
        UploadLimits(max_decode_seconds=0.001), "took longer than"),
    "not an image": (lambda: b"hello, I am text", UploadLimits(), "not an image in a supported format"),
    "a format no visitor needs (EPS runs Ghostscript)": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
                                                         UploadLimits(), "not an image in a supported format"),
    "truncated": (lambda: encoded(Image.new("RGB", (300, 300), (200, 10, 10)), "JPEG")[:400], UploadLimits(),
                  "could not be decoded"),
}


@pytest.mark.parametrize("kind", list(IMAGE_REFUSALS))
def test_open_image_refuses_with_one_sentence(kind):
    build, limits, words = IMAGE_REFUSALS[kind]
    with pytest.raises(UploadError, match=words) as caught:
        open_image(build(), limits, name="photo.png")
    assert str(caught.value).startswith("photo.png") and "\n" not in str(caught.value)


def test_the_pixel_limit_is_checked_before_any_pixel_is_decoded(monkeypatch):
    from PIL import ImageFile

    def refuse(self):
        raise AssertionError("load() was called on an image over the pixel limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    with pytest.raises(UploadError, match="over the limit of 25 megapixels"):
        open_image(bomb_png(), UploadLimits(max_image_pixels=25_000_000))


def test_zip_names_longer_than_a_file_system_allows_are_refused_before_extracting(tmp_path):
    entries = {**folder_entries(), **{f"{'x' * 300}/{i}.png": png_bytes(i) for i in range(3)}}
    with pytest.raises(UploadError, match="longer than 255 bytes"):
        load_image_zip(make_zip(tmp_path / "u.zip", entries), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_images_in_a_zip_are_held_to_the_decode_time_limit(tmp_path):
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (2000, 2000, 3), dtype=np.uint8))
    entries = {**folder_entries(), "dog/noise.jpg": encoded(noise, "JPEG", quality=95)}
    with pytest.raises(UploadError, match="dog/noise.jpg took longer than"):
        load_image_zip(make_zip(tmp_path / "u.zip", entries), tmp_path / "out",
                       limits=UploadLimits(max_decode_seconds=0.001))


def image_rows(cells: list[dict], labels: list[int]):
    import datasets

    features = datasets.Features({"image": datasets.Image(decode=False),
                                  "label": datasets.ClassLabel(names=["a", "b"])})
    return datasets.Dataset.from_dict({"image": cells, "label": labels}, features=features).cast_column(
        "image", datasets.Image())


def test_rows_of_a_strangers_dataset_are_checked_like_uploads(tmp_path):
    good = {"bytes": png_bytes(7), "path": None}
    assert check_image_rows(image_rows([good, good], [0, 1])) == 2
    inside = tmp_path / "mine.png"
    inside.write_bytes(png_bytes(9))
    assert check_image_rows(image_rows([good, {"bytes": None, "path": str(inside)}], [0, 1]),
                            allowed_dirs=[tmp_path]) == 2

    bomb = image_rows([good, {"bytes": bomb_png(), "path": None}], [0, 1])
    with pytest.raises(UploadError, match="Row 1 is 12,000x12,000 pixels"):
        check_image_rows(bomb)
    assert check_image_rows(bomb, rows=[0]) == 1  # only the rows a run uses are decoded

    # A row may name any file or URL, and datasets would open it: only files of the dataset itself are read.
    secret = tmp_path / "elsewhere" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(png_bytes(3))
    for target in (str(secret), "/etc/hostname", "http://169.254.169.254/latest/meta-data.png"):
        with pytest.raises(UploadError, match="Row 0 points at a file outside the dataset"):
            check_image_rows(image_rows([{"bytes": None, "path": target}, good], [0, 1]), allowed_dirs=[tmp_path / "x"])


def test_preview_of_a_strangers_dataset_decodes_within_the_limits(tmp_path):
    cells = [{"bytes": png_bytes(10 * i), "path": None} for i in range(4)]
    shown = preview_samples(image_rows(cells, [0, 1, 0, 1]), per_class=1, limits=UploadLimits())
    assert [(im.size, caption) for im, caption in shown] == [((8, 8), "a"), ((8, 8), "b")]
    cells[1] = {"bytes": bomb_png(), "path": None}
    with pytest.raises(UploadError, match="Row 1 is 12,000x12,000"):
        preview_samples(image_rows(cells, [0, 1, 0, 1]), per_class=1, limits=UploadLimits())
