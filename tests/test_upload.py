"""Uploaded zips of image folders: the good layout becomes a dataset, every bad kind is an UploadError that says why."""

from __future__ import annotations

import io
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from hf_tlcv.upload import UploadError, UploadLimits, class_counts, extract_zip, load_image_zip, preview_samples


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
                      "not readable images"),
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


def test_zip_bomb_lying_about_its_size_is_cut_off_while_streaming(tmp_path):
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
    with pytest.raises(UploadError):
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
