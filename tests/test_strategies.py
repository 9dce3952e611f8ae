"""Block discovery, freezing, linear probing, LoRA and layer-wise learning rates on tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import IMAGE_SIZE, TINY_MODELS, make_config, tiny_model
from peft import LoraConfig, PeftModel
from torch import nn

from hf_tlcv.strategies import apply_strategy, default_lora_targets, discover_layout, layerwise_lr_groups

# name -> (number of blocks, a module that must be among the embeddings, the LoRA targets' last name part)
EXPECTED_LAYOUT = {
    "vit": (2, "vit.embeddings.patch_embeddings.projection", {"q_proj", "v_proj"}),
    "bert": (2, "bert.embeddings.word_embeddings", {"query", "value"}),
    "efficientnet": (None, "efficientnet.embeddings.convolution", {"expand_conv", "project_conv"}),
    "convnext": (4, "convnext.embeddings.patch_embeddings", {"pwconv1", "pwconv2"}),
    "resnet": (4, "resnet.embedder.embedder.convolution", {"convolution"}),
}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_layout_is_found_for_every_architecture(name):
    model = tiny_model(name)
    layout = discover_layout(model)
    n_blocks, embedding, lora_suffixes = EXPECTED_LAYOUT[name]
    if n_blocks is not None:
        assert layout.n_blocks == n_blocks
    assert layout.n_blocks >= 2
    assert embedding in layout.embeddings
    assert layout.head == ("classifier",)
    # every parameter belongs to exactly one part
    for pname, _ in model.named_parameters():
        assert layout.depth_of(pname) is not None, pname
    targets = default_lora_targets(model, layout)
    assert {t.rsplit(".", 1)[-1] for t in targets} == lora_suffixes
    assert all(any(t.startswith(b + ".") for b in layout.blocks) for t in targets)


def test_unknown_model_error_names_the_class():
    class Plain(nn.Module):
        base_model_prefix = ""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

    with pytest.raises(ValueError, match="Plain"):
        discover_layout(Plain())


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_freeze_pins_embeddings_and_bottom_blocks(name, tmp_path):
    model = tiny_model(name)
    layout = discover_layout(model)
    args = make_config(tmp_path, finetune_strategy="freeze", freeze_layers=1)
    model = apply_strategy(model, args)
    frozen_prefixes = layout.embeddings + layout.blocks[:1]
    for pname, param in model.named_parameters():
        frozen = any(pname.startswith(p + ".") for p in frozen_prefixes)
        assert param.requires_grad is not frozen, pname
    model.train()  # what the Trainer does at every step
    for prefix in frozen_prefixes:
        assert all(not m.training for m in model.get_submodule(prefix).modules())
    assert model.get_submodule(layout.blocks[1]).training
    assert model.classifier.training


def test_freeze_more_layers_than_blocks_is_refused(tmp_path):
    args = make_config(tmp_path, finetune_strategy="freeze", freeze_layers=3)
    with pytest.raises(ValueError, match="has 2 blocks"):
        apply_strategy(tiny_model("vit"), args)


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_linear_probe_trains_only_the_head(name, tmp_path):
    model = apply_strategy(tiny_model(name), make_config(tmp_path, finetune_strategy="linear_probe"))
    assert _trainable(model) and all(n.startswith("classifier") for n in _trainable(model))
    model.train()
    prefix = model.base_model_prefix
    assert not any(m.training for m in getattr(model, prefix).modules())


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_lora_defaults(name, tmp_path):
    model = apply_strategy(tiny_model(name), make_config(tmp_path, finetune_strategy="lora"))
    assert isinstance(model, PeftModel)
    trainable = _trainable(model)
    assert any("lora_" in n for n in trainable)
    # the head trains in full (modules_to_save), everything else that trains is an adapter
    assert any("classifier" in n and "modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    model.train()
    assert not any(m.training for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def test_user_peft_config_overrides_defaults(tmp_path):
    config = LoraConfig(r=2, target_modules=["k_proj"], modules_to_save=["classifier"])
    model = apply_strategy(tiny_model("vit"), make_config(tmp_path, finetune_strategy="lora"), config)
    lora_names = {n for n, _ in model.named_parameters() if "lora_A" in n}
    assert lora_names and all("k_proj" in n for n in lora_names)


def test_layerwise_lr_decay_groups(tmp_path):
    model = tiny_model("vit")
    layout = discover_layout(model)
    groups = layerwise_lr_groups(model, layout, learning_rate=1.0, decay=0.5, weight_decay=0.0)
    lr_of = {}
    for group in groups:
        for param in group["params"]:
            lr_of[id(param)] = group["lr"]
    params = dict(model.named_parameters())
    n = layout.n_blocks  # 2
    assert lr_of[id(params["vit.embeddings.patch_embeddings.projection.weight"])] == 0.5 ** (n + 1)
    assert lr_of[id(params["vit.layers.0.mlp.fc1.weight"])] == 0.5 ** (n - 0)
    assert lr_of[id(params["vit.layers.1.mlp.fc1.weight"])] == 0.5 ** (n - 1)
    assert lr_of[id(params["classifier.weight"])] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(params)


def test_frozen_parameters_do_not_change_in_a_step(tmp_path):
    model = apply_strategy(tiny_model("resnet"), make_config(tmp_path, finetune_strategy="freeze",
                                                                    freeze_layers=2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    out = model(pixel_values=torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    optimizer.step()
    layout = discover_layout(model)
    frozen = layout.embeddings + layout.blocks[:2]
    for n, p in model.named_parameters():
        if any(n.startswith(f + ".") for f in frozen):
            assert torch.equal(p, before[n]), n
    assert not torch.equal(dict(model.named_parameters())["classifier.1.weight"], before["classifier.1.weight"])
    for n, b in model.named_buffers():  # batch-norm statistics of frozen blocks stay put
        if any(n.startswith(f + ".") for f in frozen):
            assert torch.equal(b, buffers[n]), n
