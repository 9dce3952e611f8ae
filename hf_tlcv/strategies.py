"""What trains: full fine-tuning, partial freezing, linear probing, LoRA, and layer-wise learning rates.

Every strategy works from one generic picture of a classifier, the [`ModelLayout`]: the backbone
(`model.base_model_prefix`) cut into embeddings, a stack of repeated blocks, a neck (whatever follows the
blocks: final norm, pooler, top convolution) and, outside the backbone, the head. The block stack is the
largest `nn.ModuleList` of the backbone, which finds ViT layers, BERT encoder layers, EfficientNet blocks and
ConvNeXt / ResNet stages without naming any of them.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

from torch import nn

_ATTENTION_QV = ("query", "value", "q_proj", "v_proj", "q", "v", "q_lin", "v_lin")
# Modules whose output depends on training mode through running statistics (the lazy variants become these).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class ModelLayout:
    """Where the parts of a classifier live, as module names relative to the model.

    Attributes:
        backbone: name of the pretrained body (`model.base_model_prefix`, e.g. `"vit"`).
        embeddings: modules of the backbone that run before the first block.
        blocks: the repeated blocks, bottom first.
        neck: modules of the backbone that run after the last block.
        head: top-level modules outside the backbone that hold parameters (the new classifier).
    """

    backbone: str
    embeddings: tuple[str, ...]
    blocks: tuple[str, ...]
    neck: tuple[str, ...]
    head: tuple[str, ...]

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def depth_of(self, param_name: str) -> int | None:
        """0 for embeddings, i + 1 for block i, n_blocks + 1 for neck and head; `None` if not in the model."""
        name = _strip_peft_prefix(param_name)
        for i, block in enumerate(self.blocks):
            if name.startswith(block + "."):
                return i + 1
        if any(name.startswith(m + ".") for m in self.embeddings):
            return 0
        if any(name.startswith(m + ".") for m in self.neck + self.head):
            return self.n_blocks + 1
        return None


def _strip_peft_prefix(name: str) -> str:
    # PeftModel names parameters `base_model.model.<original name>`; LoRA wrappers add `.base_layer`.
    name = name.removeprefix("module.").removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def discover_layout(model: nn.Module) -> ModelLayout:
    """Find the embeddings, blocks, neck and head of a transformers classifier.

    Raises:
        ValueError: naming the model class, when the model has no backbone or no stack of blocks.
    """
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if prefix else None
    if not isinstance(backbone, nn.Module) or backbone is model:
        raise ValueError(
            f"hf_tlcv cannot find the pretrained backbone of {type(model).__name__}: it expects a transformers "
            "`...For<Task>` model whose `base_model_prefix` attribute names the backbone. Use "
            "finetune_strategy='full', or pass a standard transformers classification model."
        )
    candidates = [
        (name, module)
        for name, module in backbone.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and _n_params(module) > 0
    ]
    if not candidates:
        raise ValueError(
            f"hf_tlcv found no stack of repeated blocks (an nn.ModuleList) in {type(model).__name__}.{prefix}, so "
            "it cannot freeze layers or apply layer-wise learning rates to it; use finetune_strategy='full', "
            "'linear_probe' or 'lora' with explicit lora_target_modules."
        )
    stack_name, stack = max(candidates, key=lambda c: (_n_params(c[1]), len(c[1])))
    blocks = tuple(f"{prefix}.{stack_name}.{i}" for i in range(len(stack)))

    # Registration order follows execution order in transformers models: what is registered before the block
    # stack runs before it. Leaf modules with their own parameters or buffers are assigned to one part each.
    embeddings, neck = [], []
    seen_stack = False
    stack_path = f"{prefix}.{stack_name}"
    for name, module in backbone.named_modules():
        full = f"{prefix}.{name}" if name else prefix
        if full == stack_path or full.startswith(stack_path + "."):
            seen_stack = True
            continue
        has_state = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        )
        if not has_state or not name:
            continue
        (neck if seen_stack else embeddings).append(full)
    head = tuple(
        name for name, module in model.named_children() if name != prefix and _n_params(module) > 0
    )
    if not head:
        raise ValueError(f"{type(model).__name__} has no classification head outside its backbone {prefix!r}.")
    return ModelLayout(prefix, tuple(embeddings), blocks, tuple(neck), head)


def _always_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    # Every module below a pinned one is pinned too, so once this one is in eval mode its whole subtree is: the walk
    # is skipped (Trainer calls model.train() at every step; walking a frozen 300-module backbone costs ~2 ms, more
    # than a linear probe's step).
    return nn.Module.train(self, False) if self.training else self


def pin_eval(module: nn.Module) -> None:
    """Keep `module` in eval mode even when the Trainer calls `model.train()` at every step.

    Frozen layers must not update batch-norm statistics nor drop activations: a frozen EfficientNet in train
    mode normalises with batch statistics and loses most of its pretrained accuracy.
    """
    for sub in module.modules():
        sub.train = types.MethodType(_always_eval, sub)
    nn.Module.train(module, False)


def _freeze(model: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        module = model.get_submodule(name)
        module.requires_grad_(False)
        pin_eval(module)


def default_lora_targets(model: nn.Module, layout: ModelLayout, r: int = 8) -> list[str]:
    """LoRA targets inside the blocks: attention query/value projections when there are any (ViT, BERT),
    else the blocks' linear layers (ConvNeXt), else their pointwise convolutions (EfficientNet, ResNet
    bottlenecks), else their ungrouped convolutions (ResNet basic blocks). Full module names are returned so
    nothing outside the blocks (a patch embedding, the head) is matched by accident."""
    in_blocks = [
        (name, module)
        for name, module in model.named_modules()
        if any(name.startswith(b + ".") for b in layout.blocks)
    ]
    linears = [(n, m) for n, m in in_blocks if isinstance(m, nn.Linear)]
    attention = [n for n, _ in linears if n.rsplit(".", 1)[-1] in _ATTENTION_QV]
    if attention:
        return attention
    if linears:
        return [n for n, _ in linears]
    # Squeeze-excitation gates act on pooled 1x1 maps; adapting them changes attention, not features.
    convs = [
        (n, m)
        for n, m in in_blocks
        if isinstance(m, nn.Conv2d) and m.groups == 1 and min(m.in_channels, m.out_channels) >= r
        and "squeeze" not in n
    ]
    pointwise = [n for n, m in convs if m.kernel_size == (1, 1)]
    if pointwise:
        return pointwise
    if convs:
        return [n for n, _ in convs]
    raise ValueError(
        f"hf_tlcv found no linear or convolution layer in the blocks of {type(model).__name__} to adapt with "
        "LoRA; set lora_target_modules (or pass a peft_config) naming the modules to adapt."
    )


def build_lora_config(model: nn.Module, layout: ModelLayout, args) -> "peft.LoraConfig":  # noqa: F821
    """The LoRA configuration used when the user gives no `peft_config`: the head is trained in full
    (`modules_to_save`), the targets come from `args.lora_target_modules` or [`default_lora_targets`]."""
    from peft import LoraConfig

    targets = list(args.lora_target_modules) if args.lora_target_modules else default_lora_targets(
        model, layout, args.lora_r
    )
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=list(layout.head),
        bias="none",
    )


def apply_strategy(model: nn.Module, args, peft_config=None) -> nn.Module:
    """Prepare a fresh copy of the pretrained model for one fold according to `args.finetune_strategy`.

    Args:
        model: a freshly initialised transformers classifier (never one that another fold trained).
        args: a [`KFoldConfig`] (`finetune_strategy`, `freeze_layers`, LoRA settings).
        peft_config: a user `peft.PeftConfig` that replaces the default LoRA configuration.

    Returns:
        The model to train: the same module for `full`, `freeze` and `linear_probe`, a `PeftModel` for `lora`.
    """
    strategy = args.finetune_strategy
    if strategy == "full" and args.layerwise_lr_decay is None:
        return model
    layout = discover_layout(model)
    if strategy == "freeze":
        if args.freeze_layers > layout.n_blocks:
            raise ValueError(
                f"freeze_layers={args.freeze_layers} but {type(model).__name__} has {layout.n_blocks} blocks; "
                f"choose 0..{layout.n_blocks}, or finetune_strategy='linear_probe' to train only the head."
            )
        _freeze(model, layout.embeddings + layout.blocks[: args.freeze_layers])
    elif strategy == "linear_probe":
        _freeze(model, (layout.backbone,))
    elif strategy == "lora":
        from peft import get_peft_model

        config = peft_config if peft_config is not None else build_lora_config(model, layout, args)
        model = get_peft_model(model, config)
        # Batch-norm statistics live outside the adapters: updating them would make the saved adapter
        # disagree with the base model it is loaded onto, so they stay fixed as under freezing.
        for module in model.modules():
            if isinstance(module, BATCH_NORMS):
                pin_eval(module)
    return model


def layerwise_lr_groups(model: nn.Module, layout: ModelLayout, learning_rate: float, decay: float,
                        weight_decay: float, no_decay_names: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """Optimizer parameter groups with layer-wise learning-rate decay.

    Block `i` (0 = bottom) of `n` trains at `learning_rate * decay**(n - i)`, the embeddings at
    `learning_rate * decay**(n + 1)`, the neck and head at `learning_rate`. Parameters named in
    `no_decay_names` (biases, norms) get no weight decay, as in the Trainer's own grouping.
    """
    n = layout.n_blocks
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = layout.depth_of(name)
        depth = n + 1 if depth is None else depth
        groups.setdefault((depth, name in no_decay_names), []).append(param)
    return [
        {
            "params": params,
            "lr": learning_rate * decay ** (n + 1 - depth),
            "weight_decay": 0.0 if no_decay else weight_decay,
        }
        for (depth, no_decay), params in sorted(groups.items(), key=lambda kv: kv[0])
    ]
