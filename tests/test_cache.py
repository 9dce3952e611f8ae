"""The frozen-feature cache gives the results of the uncached path, turns itself off where it could not, and the
pretrained weights are read from disk once per run."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import transformers as tf
from conftest import dataset_for, image_dataset, make_config, tiny_model
from datasets import ClassLabel, Dataset

from hf_tlcv import KFoldTrainer
from hf_tlcv.cache import FeatureCache, plan_feature_cache, remove_bypass
from hf_tlcv.strategies import apply_strategy

ARCHITECTURES = ["vit", "bert", "efficientnet", "convnext", "resnet"]
CASES = [(arch, "linear_probe", {}) for arch in ARCHITECTURES] + [
    (arch, "freeze", {"freeze_layers": 1}) for arch in ARCHITECTURES
] + [("vit", "freeze", {"freeze_layers": 0}), ("vit", "freeze", {"freeze_layers": 2}),
      ("bert-padded", "freeze", {"freeze_layers": 1}), ("bert-padded", "linear_probe", {})]


@pytest.fixture(autouse=True)
def _fast_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TLCV_FEATURE_CACHE", str(tmp_path / "feature_cache"))
    # These tests compare numbers, not memory release or plots: a full gc.collect costs ~0.8 s in a pytest process
    # (every imported module is on the heap) and is called several times per fold, plots take 2 s per run.
    monkeypatch.setattr(gc, "collect", lambda generation=2: 0)
    monkeypatch.setattr("hf_tlcv.plots.cv.save_plots", lambda cv, directory: {})


def _padded_text():
    """Raw text of different lengths and a word-level tokenizer: rows are padded per batch, differently in each
    batch, so the cache must keep each row's own tokens and pad them again."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "was", "very"]
    backend = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}},
                                         unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    rng = np.random.default_rng(0)
    texts = [" ".join(["the", "film"] + list(rng.choice(words[:3] if i % 3 else words[3:6], size=1 + i % 5)))
             for i in range(18)]
    labels = [int(i % 3 > 0) + int(i % 3 > 1) for i in range(18)]
    data = Dataset.from_dict({"text": texts, "label": labels}).cast_column("label", ClassLabel(names=["a", "b", "c"]))
    return data, tokenizer


def _run(tmp_path, name, arch, strategy, feature_cache, **overrides):
    settings = dict(finetune_strategy=strategy, feature_cache=feature_cache, eval_strategy="epoch",
                    n_folds=2, num_train_epochs=2, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                    logging_steps=1)
    settings.update(overrides)
    args = make_config(tmp_path / name, **settings)
    if arch == "bert-padded":
        data, tokenizer = _padded_text()
        trainer = KFoldTrainer(model=tiny_model("bert"), args=args, train_dataset=data, processing_class=tokenizer)
    else:
        trainer = KFoldTrainer(model=tiny_model(arch), args=args, train_dataset=dataset_for(arch, n_per_class=8))
    return trainer, trainer.cross_validate()


def _assert_same_results(cached, plain):
    for a, b in zip(cached.folds, plain.folds):
        for part in ("eval_metrics", "train_metrics"):
            got, want = getattr(a, part), getattr(b, part)
            assert got.keys() == want.keys()
            for key in want:
                assert got[key] == pytest.approx(want[key], abs=1e-5), (part, key)
        # eval during training (eval_strategy="epoch") saw the same losses
        evals = lambda r: [h["eval_loss"] for h in r.log_history if "eval_loss" in h]  # noqa: E731
        assert evals(a) and np.allclose(evals(a), evals(b), atol=1e-5)
        losses = lambda r: [h["loss"] for h in r.log_history if "loss" in h]  # noqa: E731
        assert np.allclose(losses(a), losses(b), atol=1e-5)
    prob = lambda r: r.oof_predictions.filter(like="prob_").to_numpy()  # noqa: E731
    np.testing.assert_allclose(prob(cached), prob(plain), atol=1e-5)


# The fast tier keeps one case per kind of input (image and padded text, linear probe and freeze); the whole table
# of architectures and depths runs in the integration tier.
FAST_CASES = {("vit", "linear_probe"), ("vit", "freeze"), ("bert-padded", "freeze")}
CASE_PARAMS = [pytest.param(arch, strategy, extra, id=f"{arch}-{strategy}-{extra}",
                            marks=() if (arch, strategy) in FAST_CASES and extra.get("freeze_layers", 1) == 1
                            else pytest.mark.integration)
               for arch, strategy, extra in CASES]


@pytest.mark.parametrize("arch,strategy,extra", CASE_PARAMS)
def test_cached_results_equal_the_uncached_path(arch, strategy, extra, tmp_path):
    cached_trainer, cached = _run(tmp_path, "cached", arch, strategy, "memory", **extra)
    plain_trainer, plain = _run(tmp_path, "plain", arch, strategy, "off", **extra)
    assert cached_trainer.feature_cache is not None, cached_trainer.feature_cache_reason
    assert plain_trainer.feature_cache is None
    _assert_same_results(cached, plain)


def test_disk_cache_is_reused_and_the_fold_model_is_a_normal_model(tmp_path):
    trainer, disk = _run(tmp_path, "disk", "vit", "freeze", "disk", freeze_layers=1, save_fold_models=True)
    cache = trainer.feature_cache
    assert cache.location != "memory" and cache.nbytes > 0 and not cache.reused
    # the saved fold model is the complete model: it loads and predicts from pixels like the uncached one
    saved = tf.ViTForImageClassification.from_pretrained(str(tmp_path / "disk" / "fold_0_0" / "model"))
    assert {n for n, _ in saved.named_parameters()} == {n for n, _ in tiny_model("vit").named_parameters()}
    pixels = torch.as_tensor(np.asarray(image_dataset()["pixel_values"][:4]))
    assert saved.eval()(pixel_values=pixels).logits.shape == (4, 3)

    again, rerun = _run(tmp_path, "disk2", "vit", "freeze", "disk", freeze_layers=1)
    assert again.feature_cache.reused and again.feature_cache.location == cache.location
    _assert_same_results(rerun, disk)


def test_bypass_leaves_names_and_forward_untouched(tmp_path):
    args = make_config(tmp_path, finetune_strategy="freeze", freeze_layers=1)
    model = apply_strategy(tiny_model("vit"), args)
    data = image_dataset()
    plan, reason = plan_feature_cache(model, args, dataset=data, data_collator=None, user_model_init=False)
    assert plan is not None, reason
    assert plan.bypass == ("vit.embeddings", "vit.layers.0") and plan.input_column == "pixel_values"
    cache, reason = FeatureCache.build(model, plan, data, model_fingerprint="x", mode="memory")
    assert reason == "" and len(cache.dataset) == len(data)
    assert tuple(cache.dataset[0]["pixel_values"].shape) == (17, 16)  # 16 patches + CLS, hidden 16
    names = [n for n, _ in model.named_parameters()]
    cache.install(model)
    assert [n for n, _ in model.named_parameters()] == names
    assert "forward" in vars(model.vit.embeddings)
    remove_bypass(model)
    assert "forward" not in vars(model.vit.embeddings) and "forward" not in vars(model.vit.layers[0])


class _Augment:
    def __call__(self, features):
        return tf.default_data_collator(features)


FALLBACKS = {
    "full": (dict(finetune_strategy="full"), {}, "nothing is frozen"),
    "lora": (dict(finetune_strategy="lora"), {}, "LoRA adapters sit inside every block"),
    "off": (dict(finetune_strategy="linear_probe", feature_cache="off"), {}, "feature_cache='off'"),
    "collator": (dict(finetune_strategy="linear_probe"), {"data_collator": _Augment()}, "custom data_collator"),
    "model_init": (dict(finetune_strategy="linear_probe"), {"model_init": lambda: tiny_model("vit")},
                   "user model_init"),
    "transform": (dict(finetune_strategy="linear_probe"), {"transform": True}, "on-the-fly transform"),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_cache_turns_itself_off_and_says_why(case, tmp_path):
    settings, kwargs, message = FALLBACKS[case]
    data = image_dataset(n_per_class=4)
    if kwargs.pop("transform", False):
        data = data.with_transform(lambda batch: {"pixel_values": [torch.as_tensor(np.asarray(p)) for p in
                                                                   batch["pixel_values"]], "label": batch["label"]})
    model = None if "model_init" in kwargs else tiny_model("vit")
    trainer = KFoldTrainer(model=model, args=make_config(tmp_path, **settings), train_dataset=data, **kwargs)
    assert trainer.feature_cache is None
    assert message in trainer.feature_cache_reason


def test_cache_off_when_a_layer_below_the_cut_trains(tmp_path):
    args = make_config(tmp_path, finetune_strategy="freeze", freeze_layers=1)
    model = apply_strategy(tiny_model("vit"), args)
    model.vit.layers[0].attention.requires_grad_(True)
    plan, reason = plan_feature_cache(model, args, dataset=image_dataset(), data_collator=None,
                                      user_model_init=False)
    assert plan is None and "trainable layers below the cut" in reason


def test_pretrained_weights_are_read_once_per_run(tmp_path, monkeypatch):
    saved_dir = tmp_path / "pretrained"
    tiny_model("vit").save_pretrained(saved_dir)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(saved_dir)
    calls = []
    original = tf.ViTForImageClassification.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("pretrained_model_name_or_path"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(tf.ViTForImageClassification, "from_pretrained", classmethod(counting))
    args = make_config(tmp_path / "cv", finetune_strategy="full", n_folds=3, num_train_epochs=1)
    results = KFoldTrainer(model=str(saved_dir), args=args, train_dataset=image_dataset()).cross_validate()
    assert len(results.folds) == 3
    assert calls == [str(saved_dir)]


def test_auto_writes_a_large_cache_to_disk(tmp_path, monkeypatch):
    args = make_config(tmp_path, finetune_strategy="freeze", freeze_layers=1)
    model = apply_strategy(tiny_model("vit"), args)
    data = image_dataset()
    plan, _ = plan_feature_cache(model, args, dataset=data, data_collator=None, user_model_init=False)
    small, _ = FeatureCache.build(model, plan, data, model_fingerprint="x", mode="auto", cache_root=tmp_path / "c")
    assert small.location == "memory" and small.nbytes == len(data) * 17 * 16 * 4
    monkeypatch.setattr("hf_tlcv.cache._memory_budget", lambda: 1024)  # "larger than memory allows"
    large, _ = FeatureCache.build(model, plan, data, model_fingerprint="x", mode="auto", cache_root=tmp_path / "c")
    assert large.location.startswith(str(tmp_path / "c")) and large.nbytes == small.nbytes
    np.testing.assert_array_equal(np.asarray(large.dataset["pixel_values"]), np.asarray(small.dataset["pixel_values"]))


def test_config_rejects_an_unknown_cache_mode(tmp_path):
    with pytest.raises(ValueError, match="feature_cache must be one of auto, memory, disk, off"):
        make_config(tmp_path, feature_cache="gpu")


@pytest.mark.parametrize("strategy,extra", [("linear_probe", {}), ("freeze", {"freeze_layers": 1})])
def test_fold_models_read_the_bypassed_part_from_the_template(strategy, extra, tmp_path):
    """Cached folds share the frozen part's memory with the template instead of copying it, and leave the template
    as it was: its weights and its requires_grad flags."""
    from hf_tlcv.fold_job import run_fold

    args = make_config(tmp_path / "cv", finetune_strategy=strategy, feature_cache="memory", n_folds=3, **extra)
    trainer = KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=image_dataset())
    template = trainer.model_source.template
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in template.named_parameters()}
    features = trainer._feature_cache()
    frozen = features[0].plan.bypass
    shared = {n for name in frozen for n, _ in template.get_submodule(name).named_parameters(prefix=name)}
    assert shared

    models = []
    monkey = pytest.MonkeyPatch()
    monkey.setattr("hf_tlcv.fold_job._train_and_score", lambda trainer, *a: models.append(trainer.model))
    try:
        for job in trainer.fold_jobs():
            run_fold(job)
    finally:
        monkey.undo()
    assert len(models) == 3
    for model in models:
        mine = dict(model.named_parameters())
        for name, param in template.named_parameters():
            same_memory = mine[name].data_ptr() == param.data_ptr()
            assert same_memory == (name in shared), name
            if name in shared:
                assert not mine[name].requires_grad
    # the template is untouched: the strategies' flags were set on the copies' own Parameter objects
    for name, param in template.named_parameters():
        assert torch.equal(param, before[name][0]) and param.requires_grad == before[name][1], name
