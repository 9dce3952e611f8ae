"""KFoldTrainer end to end on tiny models: every strategy, identical fold starts, outputs, resume, bad input."""

from __future__ import annotations

import json
import weakref

import datasets
import numpy as np
import pandas as pd
import pytest
from conftest import (N_CLASSES, TINY_MODELS, dataset_for, image_dataset, load_recipe, make_config, oof_cross_entropy,
                      tiny_model)
from datasets import ClassLabel, Dataset
from PIL import Image
from peft import LoraConfig
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from transformers import TrainerCallback

from hf_tlcv import CVResults, KFoldConfig, KFoldTrainer
from hf_tlcv.modeling import state_fingerprint
from hf_tlcv.strategies import discover_layout

STRATEGIES = {
    "full": {},
    "freeze": {"freeze_layers": 1},
    "linear_probe": {},
    "lora": {},
    "full+llrd": {"layerwise_lr_decay": 0.5},
}


class Recorder(TrainerCallback):
    """What every fold started from and ended with, and whether the previous fold's model was still alive."""

    def __init__(self):
        self.starts, self.ends, self.run_names, self.output_dirs = [], [], [], []
        self.start_params, self.end_params, self.previous_alive = [], [], []
        self._last = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.previous_alive.append(self._last is not None and self._last() is not None)
        self._last = weakref.ref(model)
        self.starts.append(state_fingerprint(model))
        self.start_params.append({n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()})
        self.run_names.append(args.run_name)
        self.output_dirs.append(args.output_dir)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.ends.append(state_fingerprint(model))
        self.end_params.append({n: p.detach().clone() for n, p in model.named_parameters()})


def _strategy_args(name: str) -> dict:
    base = name.split("+")[0]
    return {"finetune_strategy": base, **STRATEGIES[name]}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_cross_validate_every_strategy(strategy, tmp_path):
    recorder = Recorder()
    data = image_dataset()
    args = make_config(tmp_path / "cv", **_strategy_args(strategy))
    trainer = KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=data, callbacks=[recorder])
    results = trainer.cross_validate()

    # one fresh model per fold, all from the same weights (pretrained body and seeded head)
    assert len(recorder.starts) == 3
    assert len(set(recorder.starts)) == 1
    assert recorder.ends[0] != recorder.starts[0]
    # the previous fold's model is gone before the next one starts
    assert recorder.previous_alive == [False, False, False]
    # frozen parameters do not move; trainable ones do
    for start, end in zip(recorder.start_params, recorder.end_params):
        moved = {n for n, (p, _) in start.items() if not np.allclose(p.numpy(), end[n].numpy())}
        frozen = {n for n, (_, trainable) in start.items() if not trainable}
        assert moved and not (moved & frozen)
    # each fold is its own run for trackers
    assert len(set(recorder.run_names)) == 3 and all("fold_0_" in n for n in recorder.run_names)
    assert [d.rsplit("/", 1)[-1] for d in recorder.output_dirs] == ["fold_0_0", "fold_0_1", "fold_0_2"]

    out = tmp_path / "cv"
    for name in ("cv_results.json", "folds.json", "oof_predictions.parquet", "plots/fold_scores.png",
                 "plots/train_vs_eval.png", "plots/confusion_matrix.png"):
        assert (out / name).exists(), name
    with Image.open(out / "plots" / "confusion_matrix.png") as picture:
        assert picture.size[0] > 200 and picture.size[1] > 200
    assert sorted(p.name for p in out.glob("fold_*")) == ["fold_0_0", "fold_0_1", "fold_0_2"]

    # out-of-fold predictions: every row exactly once, metrics equal to sklearn's on the saved file
    oof = pd.read_parquet(out / "oof_predictions.parquet")
    assert sorted(oof["row"]) == list(range(len(data)))
    assert np.array_equal(oof["label"].to_numpy(), np.asarray(data["label"])[oof["row"].to_numpy()])
    probs = oof.filter(like="prob_").to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.array_equal(probs.argmax(axis=1), oof["prediction"].to_numpy())
    y, p = oof["label"], oof["prediction"]
    assert results.oof_metrics["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert results.oof_metrics["f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert results.oof_metrics["precision"] == pytest.approx(precision_score(y, p, average="macro", zero_division=0))
    assert results.oof_metrics["recall"] == pytest.approx(recall_score(y, p, average="macro"))
    for fold in results.folds:
        rows = oof[oof["fold"] == fold.fold]
        assert fold.eval_metrics["accuracy"] == pytest.approx(accuracy_score(rows["label"], rows["prediction"]))
        assert set(fold.train_metrics) >= {"accuracy", "f1", "loss"}

    # summary and persistence
    summary = results.summary["accuracy"]
    accs = [f.eval_metrics["accuracy"] for f in results.folds]
    assert summary["mean"] == pytest.approx(np.mean(accs))
    assert summary["std"] == pytest.approx(np.std(accs, ddof=1))
    low, high = summary["ci95"]
    assert low <= summary["mean"] <= high
    loaded = CVResults.load(out)
    assert loaded.summary == results.summary
    assert loaded.oof_metrics == results.oof_metrics
    pd.testing.assert_frame_equal(loaded.to_pandas(), results.to_pandas())
    saved = json.loads((out / "cv_results.json").read_text())
    assert saved["summary"]["accuracy"]["mean"] == pytest.approx(summary["mean"])
    assert saved["config"]["finetune_strategy"] == args.finetune_strategy

    # where each fold's time went: one entry per pass, training at least the Trainer's own measure of it
    for fold in results.folds:
        assert set(fold.seconds) == {"train", "eval", "train_eval"}
        train_runtime = next(e["train_runtime"] for e in fold.log_history if "train_runtime" in e)
        assert fold.seconds["train"] >= train_runtime - 1e-3
    assert results.seconds["train_eval"] == pytest.approx(sum(f.seconds["train_eval"] for f in results.folds))
    assert loaded.seconds == pytest.approx(results.seconds)
    assert "eval on the training rows (eval_on_train)" in results.format_table()


@pytest.mark.parametrize("name", sorted(set(TINY_MODELS) - {"vit"}))
def test_cross_validate_other_architectures(name, tmp_path):
    args = make_config(tmp_path / name, finetune_strategy="freeze", freeze_layers=1, n_folds=2, num_train_epochs=1)
    recorder = Recorder()
    results = KFoldTrainer(model=tiny_model(name), args=args, train_dataset=dataset_for(name),
                           callbacks=[recorder]).cross_validate()
    assert [f.fold for f in results.folds] == [0, 1] and len(set(recorder.starts)) == 1
    data = dataset_for(name)
    oof = results.oof_predictions
    assert sorted(oof["row"]) == list(range(len(data)))
    assert np.array_equal(oof["label"].to_numpy(), np.asarray(data["label"])[oof["row"].to_numpy()])
    # freeze_layers=1: the embeddings and the first block, as this architecture's layout names them, and nothing else
    layout = discover_layout(tiny_model(name))
    expected = {n for n, _ in tiny_model(name).named_parameters() if layout.depth_of(n) in (0, 1)}
    assert expected and layout.head
    for start, end in zip(recorder.start_params, recorder.end_params):
        frozen = {n for n, (_, trainable) in start.items() if not trainable}
        moved = {n for n, (p, _) in start.items() if not np.allclose(p.numpy(), end[n].numpy())}
        assert frozen == expected and not (moved & frozen)
        assert any(n.startswith(layout.head) for n in moved)  # the new head trained
    # each fold's metrics are those of its saved predictions
    entropy = oof_cross_entropy(oof)
    for fold in results.folds:
        rows = fold.predictions
        assert fold.eval_metrics["accuracy"] == pytest.approx(accuracy_score(rows["label"], rows["prediction"]))
        assert fold.eval_metrics["loss"] == pytest.approx(entropy[(0, fold.fold)], rel=1e-4)


def test_model_init_gives_identical_starts(tmp_path):
    recorder = Recorder()
    args = make_config(tmp_path / "cv", n_folds=2, num_train_epochs=1)
    KFoldTrainer(model_init=lambda: tiny_model("vit", seed=np.random.randint(1 << 30)), args=args,
                 train_dataset=image_dataset(), callbacks=[recorder]).cross_validate()
    # the Trainer seeds before every model_init call, so even a randomly seeded init repeats itself
    assert len(recorder.starts) == 2 and len(set(recorder.starts)) == 1


class FoldEvents(TrainerCallback):
    """The cross-validation events, with what was on disk when each arrived."""

    def __init__(self):
        self.events = []

    def on_fold_end(self, args, state, control, fold, fold_dir, result, resumed, trainer, **kwargs):
        saved = json.loads((fold_dir / "fold_result.json").read_text())
        self.events.append(("fold", fold.name, resumed, saved["eval_metrics"] == result.eval_metrics))

    def on_cross_validation_end(self, args, state, control, results, output_dir, trainer, **kwargs):
        # the run's reports (plots, card) are callbacks registered before the user's: written by now
        self.events.append(("end", len(results.folds), (output_dir / "cv_results.json").exists(),
                            (output_dir / "README.md").exists() and (output_dir / "plots").is_dir()))


def test_resume_skips_finished_folds_and_refuses_changed_settings(tmp_path):
    out = tmp_path / "cv"
    events = FoldEvents()
    first = KFoldTrainer(model=tiny_model("vit"), args=make_config(out), train_dataset=image_dataset(),
                         callbacks=[events])
    first_results = first.cross_validate()
    assert events.events == [("fold", f"fold_0_{i}", False, True) for i in range(3)] + [("end", 3, True, True)]

    recorder, events = Recorder(), FoldEvents()
    again = KFoldTrainer(model=tiny_model("vit"), args=make_config(out), train_dataset=image_dataset(),
                         callbacks=[recorder, events])
    resumed = again.cross_validate()
    assert recorder.starts == []  # nothing trained
    assert resumed.summary == first_results.summary
    assert [e[2] for e in events.events[:3]] == [True, True, True]

    with pytest.raises(ValueError, match=r"learning_rate.*overwrite_output_dir"):
        KFoldTrainer(model=tiny_model("vit"), args=make_config(out, learning_rate=1e-2),
                     train_dataset=image_dataset()).cross_validate()
    with pytest.raises(ValueError, match="data_fingerprint"):
        KFoldTrainer(model=tiny_model("vit"), args=make_config(out),
                     train_dataset=image_dataset(seed=1)).cross_validate()

    recorder = Recorder()
    KFoldTrainer(model=tiny_model("vit"), args=make_config(out, learning_rate=1e-2, overwrite_output_dir=True),
                 train_dataset=image_dataset(), callbacks=[recorder]).cross_validate()
    assert len(recorder.starts) == 3


def test_a_report_that_fails_is_a_warning_and_the_run_and_other_reports_stand(tmp_path, monkeypatch, caplog):
    import logging

    import hf_tlcv.plots.cv

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(hf_tlcv.plots.cv, "save_plots", broken)
    caplog.set_level(logging.WARNING, logger="hf_tlcv")
    events = FoldEvents()
    results = KFoldTrainer(model=tiny_model("vit"), args=make_config(tmp_path / "cv"), train_dataset=image_dataset(),
                           callbacks=[events]).cross_validate()
    assert len(results.folds) == 3 and events.events[-1][:3] == ("end", 3, True)
    assert "Could not write the cross-validation plots into" in caplog.text and "no display" in caplog.text
    assert (tmp_path / "cv" / "README.md").exists() and not (tmp_path / "cv" / "plots").exists()


def test_settings_fingerprint_survives_a_json_round_trip(tmp_path):
    config = make_config(tmp_path, debug="underflow_overflow", lr_scheduler_type="cosine",
                         lr_scheduler_kwargs={"num_cycles": 0.5}, eval_strategy="epoch",
                         metrics=["accuracy", "f1"])
    record = config.result_fingerprint_dict()
    assert json.loads(json.dumps(record)) == record
    assert record["lr_scheduler_type"] == "cosine" and record["eval_strategy"] == "epoch"
    assert record["lr_scheduler_kwargs"] == {"num_cycles": 0.5} and record["metrics"] == ["accuracy", "f1"]
    assert "output_dir" not in record and "hub_token" not in record and record["learning_rate"] == 5e-3
    # an allow-list: settings that cannot change results (debug output, logging) are not recorded
    assert "debug" not in record and "logging_steps" not in record


def test_layerwise_lr_decay_reaches_the_optimizer(tmp_path):
    args = make_config(tmp_path / "cv", layerwise_lr_decay=0.5, learning_rate=1.0, weight_decay=0.1)
    trainer = KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=image_dataset())
    optimizer = trainer.create_optimizer()
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    assert lrs == [0.125, 0.25, 0.5, 1.0]  # embeddings, block 0, block 1, head (2 blocks)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.1}


@pytest.mark.integration  # the embedded EfficientNet-Lite0 and builtin data
def test_preprocessing_runs_once_for_all_folds(tmp_path):
    """A real pretrained model by builtin: name, raw images, an image processor counted per image."""
    from hf_tlcv.assets import load_dataset
    from hf_tlcv.modeling import load_processor

    class CountingProcessor:
        def __init__(self, inner):
            self.inner, self.images = inner, 0

        def __call__(self, images, **kwargs):
            self.images += len(images)
            return self.inner(images=images, **kwargs)

    data = load_dataset("builtin:digits").select(range(60))
    processor = CountingProcessor(load_processor("builtin:efficientnet-lite0"))
    args = make_config(tmp_path / "cv", n_folds=3, n_repeats=2, num_train_epochs=1, image_size=32,
                       finetune_strategy="linear_probe")
    datasets.disable_caching()  # a cached map from an earlier test run would process nothing
    try:
        trainer = KFoldTrainer(model="builtin:efficientnet-lite0", args=args, train_dataset=data,
                               processing_class=processor)
        results = trainer.cross_validate()
    finally:
        datasets.enable_caching()
    assert processor.images == len(data)  # not 6 folds x 60
    assert len(results.folds) == 6
    assert trainer.model_name_or_path == "builtin:efficientnet-lite0"
    # the new head has the dataset's classes
    assert results.label_names == [str(i) for i in range(10)]
    assert results.oof_predictions.filter(like="prob_").shape[1] == 10


def _labelled(labels) -> Dataset:
    n = len(labels)
    return Dataset.from_dict({"pixel_values": np.zeros((n, 3, 32, 32), np.float32).tolist(), "label": labels})


def _vit():
    return tiny_model("vit")


# (what KFoldTrainer gets, the words its error must contain)
BAD_INPUTS = {
    "model and model_init": (lambda: dict(model=_vit(), model_init=_vit, train_dataset=image_dataset()),
                             "not both"),
    "no model": (lambda: dict(model=None, train_dataset=image_dataset()), "model_init"),
    "peft_config without lora": (lambda: dict(model=_vit(), train_dataset=image_dataset(),
                                              peft_config=LoraConfig(target_modules=["q_proj"])),
                                 "finetune_strategy='lora'"),
    "peft_config of the wrong type": (lambda: dict(model=_vit(), train_dataset=image_dataset(),
                                                   peft_config={"r": 8}), "peft.PeftConfig"),
    "not a Dataset": (lambda: dict(model=_vit(), train_dataset={"label": [0, 1]}), "datasets.Dataset"),
    "empty dataset": (lambda: dict(model=_vit(), train_dataset=image_dataset().select([])), "empty"),
    "missing label column": (lambda: dict(model=_vit(),
                                          train_dataset=image_dataset().rename_column("label", "target")),
                             "pixel_values, target"),
    "head size mismatch": (lambda: dict(model=tiny_model("vit", num_labels=5), train_dataset=image_dataset()),
                           "num_labels=3"),
    "more folds than rows": (lambda: dict(model=_vit(), train_dataset=image_dataset(n_per_class=1)), "n_folds"),
    "float labels, stratified": (lambda: dict(model=_vit(), train_dataset=_labelled([0.5, 1.5, 2.5, 0.1, 0.2, 0.3]),
                                              stratified=True), "float|continuous"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_before_training(case, tmp_path):
    build, match = BAD_INPUTS[case]
    kwargs = build()
    strategy = "stratified" if kwargs.pop("stratified", False) else "auto"
    args = make_config(tmp_path / "cv", fold_strategy=strategy)
    with pytest.raises((ValueError, TypeError), match=match):
        KFoldTrainer(args=args, **kwargs)
    assert not (tmp_path / "cv").exists()


def test_config_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="n_folds must be an integer of at least 2"):
        KFoldConfig(output_dir=str(tmp_path), n_folds=1)
    with pytest.raises(ValueError, match="group_column"):
        KFoldConfig(output_dir=str(tmp_path), fold_strategy="group")
    with pytest.raises(ValueError, match="finetune_strategy='freeze'"):
        KFoldConfig(output_dir=str(tmp_path), freeze_layers=2)
    with pytest.raises(ValueError, match="n_repeats=1"):
        KFoldConfig(output_dir=str(tmp_path), fold_strategy="timeseries", n_repeats=2)


def test_config_parses_with_hf_argument_parser(tmp_path):
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(KFoldConfig).parse_args_into_dataclasses(
        args=["--output_dir", str(tmp_path), "--n_folds", "10", "--fold_strategy", "group", "--group_column", "g",
              "--finetune_strategy", "lora", "--lora_target_modules", "q_proj", "v_proj", "--metrics", "accuracy"]
    )
    assert (config.n_folds, config.fold_strategy, config.group_column) == (10, "group", "g")
    assert config.lora_target_modules == ["q_proj", "v_proj"] and config.metrics == ["accuracy"]
    assert config.save_strategy == "no"  # folds save their final model; mid-fold checkpoints are opt-in


def _assert_documented(help_output: str, fields: list) -> None:
    """Each field is an option of `help_output` with its whole help text, as argparse printed it (`%%` as `%`)."""
    shown = " ".join(help_output.split())
    for f in fields:
        text = f.metadata.get("help")
        assert text, f"{f.name} has no help text"
        assert f"--{f.name} " in help_output, f.name
        assert " ".join(text.replace("%%", "%").split()) in shown, f.name


def test_every_help_text_formats_as_help_prints_it(monkeypatch):
    """argparse formats each help text with `%` (a bare `95%` once crashed `--help` of both recipes): format the
    help of KFoldConfig alone and of each recipe's parser (ScriptArguments and KFoldConfig, the recipe's defaults)."""
    import dataclasses

    from transformers import HfArgumentParser, TrainingArguments

    from hf_tlcv.recipe import ScriptArguments

    monkeypatch.setenv("COLUMNS", "10000")  # argparse reads the width here: one line per text, compared unwrapped
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = [f for f in dataclasses.fields(KFoldConfig) if f.name not in inherited]
    assert {"n_folds", "finetune_strategy", "ci_method"} <= {f.name for f in own}
    _assert_documented(HfArgumentParser(KFoldConfig).format_help(), own)
    for name in ("vit_kfold", "text_kfold"):
        recipe = load_recipe(name)
        help_output = recipe.make_parser().format_help()
        _assert_documented(help_output, [*dataclasses.fields(ScriptArguments), *own])
        default = recipe.RECIPE_DEFAULTS["model_name_or_path"]
        assert f"(default: {default})" in help_output  # the recipe's own defaults are what --help shows


def test_each_fold_gets_fresh_tracker_callbacks(tmp_path):
    """Each fold is a fresh Trainer: a callback class (as report_to integrations are) is instantiated per fold, so a
    tracker never appends one fold to another's run."""

    class FakeTracker(TrainerCallback):
        instances = []

        def __init__(self):
            self.runs = []
            FakeTracker.instances.append(self)

        def on_train_begin(self, args, state, control, **kwargs):
            self.runs.append(args.run_name)

    args = make_config(tmp_path / "cv", n_folds=2, num_train_epochs=1, run_name="study")
    KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=image_dataset(),
                 callbacks=[FakeTracker]).cross_validate()
    used = [t for t in FakeTracker.instances if t.runs]
    assert [t.runs for t in used] == [["study-fold_0_0"], ["study-fold_0_1"]]
    assert args.run_name == "study"  # restored after the folds


def test_raw_text_is_tokenised_once_and_padded_per_batch(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "was", "very"]
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()

    class CountingTokenizer(PreTrainedTokenizerFast):
        texts = 0

        def __call__(self, text, *args, **kwargs):
            CountingTokenizer.texts += len(text) if isinstance(text, list) else 1
            return super().__call__(text, *args, **kwargs)

    tokenizer = CountingTokenizer(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for i in range(30):
        label = i % 2
        pool = words[:3] if label else words[3:6]
        texts.append(" ".join(["the", "film", "was"] + list(rng.choice(pool, size=1 + i % 4))))
        labels.append(label)
    data = Dataset.from_dict({"text": texts, "label": labels}).cast_column("label", ClassLabel(names=["neg", "pos"]))
    args = make_config(tmp_path / "cv", n_folds=3, num_train_epochs=2, learning_rate=1e-2)
    datasets.disable_caching()
    try:
        trainer = KFoldTrainer(model=tiny_model("bert", num_labels=2), args=args, train_dataset=data,
                               processing_class=tokenizer)
        results = trainer.cross_validate()
    finally:
        datasets.enable_caching()
    assert CountingTokenizer.texts == len(texts)  # once, not once per fold
    assert set(trainer.cv_dataset.column_names) == {"input_ids", "attention_mask", "label"}
    lengths = {len(ids) for ids in trainer.cv_dataset["input_ids"]}
    assert len(lengths) > 1  # unpadded rows of different lengths: the collator pads each batch
    assert sorted(results.oof_predictions["row"]) == list(range(len(texts)))


def _with_groups(data: Dataset) -> Dataset:
    return data.add_column("patient", [f"p{i // 3}" for i in range(len(data))])


@pytest.mark.parametrize("fold_strategy", ["group", "stratified_group", "timeseries", "kfold"])
def test_other_fold_strategies_end_to_end(fold_strategy, tmp_path):
    data = _with_groups(image_dataset())
    grouped = "group" in fold_strategy
    args = make_config(tmp_path / "cv", fold_strategy=fold_strategy, num_train_epochs=1,
                       group_column="patient" if grouped else None)
    trainer = KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=data)
    results = trainer.cross_validate()
    oof = results.oof_predictions
    assert results.metadata["fold_strategy"] == fold_strategy
    patients = np.asarray(data["patient"])
    saved = json.loads((tmp_path / "cv" / "folds.json").read_text())["folds"]
    for fold in saved:
        train, evaluation = np.asarray(fold["train"]), np.asarray(fold["eval"])
        if grouped:
            assert not set(patients[train]) & set(patients[evaluation])
        if fold_strategy == "timeseries":
            assert train.max() < evaluation.min()
    if fold_strategy == "timeseries":  # the first block is only ever trained on
        assert len(oof) < len(data) and oof["row"].is_unique
    else:
        assert sorted(oof["row"]) == list(range(len(data)))


def test_eval_during_training_uses_the_fold_eval_rows(tmp_path):
    args = make_config(tmp_path / "cv", n_folds=2, eval_strategy="epoch", num_train_epochs=2)
    results = KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=image_dataset()).cross_validate()
    for fold in results.folds:
        evals = [entry for entry in fold.log_history if "eval_loss" in entry]
        assert [e["epoch"] for e in evals] == [1.0, 2.0]
        # the last epoch's evaluation is the fold's final eval score
        assert evals[-1]["eval_loss"] == pytest.approx(fold.eval_metrics["loss"], rel=1e-5)


def test_train_fits_one_model_on_all_rows_with_the_strategy(tmp_path):
    recorder = Recorder()
    args = make_config(tmp_path / "final", finetune_strategy="linear_probe", num_train_epochs=1, hub_token="secret")
    trainer = KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=image_dataset(), callbacks=[recorder])
    output = trainer.train()
    assert output.global_step == 5  # 36 rows, batch 8, one epoch: every row, not a fold's share
    trainable = {n for n, (_, grad) in recorder.start_params[0].items() if grad}
    assert trainable and all(n.startswith("classifier") for n in trainable)
    results = trainer.cross_validate()  # and cross-validation still starts each fold afresh
    assert len(results.folds) == 3 and set(recorder.starts[1:]) == {recorder.starts[0]}
    assert "secret" not in (tmp_path / "final" / "cv_results.json").read_text()


def test_preprocessed_images_are_fixed_shape_arrays_with_the_processor_values():
    from datasets import Array3D, Features
    from datasets import Image as ImageFeature
    from transformers import ViTImageProcessor

    from hf_tlcv.data import preprocess

    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((20 + i, 30, 3)) * 255).astype("uint8")) for i in range(5)]
    raw = Dataset.from_dict({"image": images, "label": [0, 1, 0, 1, 0]},
                            features=Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])}))
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    processed = preprocess(raw, processor)
    assert isinstance(processed.features["pixel_values"], Array3D)
    expected = processor(images=[im.convert("RGB") for im in images], return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(np.stack([row["pixel_values"].numpy() for row in processed]), expected)


def test_derive_builds_a_trainer_of_the_same_inputs_with_other_settings(tmp_path):
    # derive() is how studies, searches and audits build a trainer like another one: same class, model (loaded once:
    # the same object, so the same weights and seeded head), rows, metrics and callbacks; only the settings differ.
    class Own(KFoldTrainer):
        pass

    recorder, data = Recorder(), image_dataset()
    metrics = (lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())})
    trainer = Own(model=tiny_model("vit"), args=make_config(tmp_path / "base"), train_dataset=data,
                  eval_dataset=image_dataset(seed=1), callbacks=[recorder], compute_metrics=metrics)
    derived = trainer.derive(output_dir=str(tmp_path / "lr"), learning_rate=3e-3, finetune_strategy="linear_probe")
    assert type(derived) is Own
    assert derived.model_source.template is trainer.model_source.template
    assert derived.model_fingerprint == trainer.model_fingerprint
    assert derived.raw_dataset is trainer.raw_dataset and derived.raw_test_dataset is trainer.raw_test_dataset
    assert derived.compute_metrics is metrics and recorder in derived.callback_handler.callbacks
    assert (derived.cv_args.learning_rate, derived.cv_args.finetune_strategy) == (3e-3, "linear_probe")
    assert trainer.cv_args.learning_rate != 3e-3 and derived.cv_args.output_dir == str(tmp_path / "lr")
    # every other setting is the base trainer's
    changed = {k for k, v in derived.cv_args.to_dict().items() if trainer.cv_args.to_dict()[k] != v}
    assert changed == {"output_dir", "learning_rate", "finetune_strategy"}

    # inputs replaced one by one: no test set, other rows, another model
    other = tiny_model("vit", seed=5)
    scratch = trainer.derive(model=other, train_dataset=data.select(range(24)), eval_dataset=None)
    assert scratch.model_source.template is other and scratch.model_name_or_path is None
    assert len(scratch.raw_dataset) == 24 and scratch.raw_test_dataset is None
    assert scratch.model_fingerprint != trainer.model_fingerprint

    with pytest.raises(ValueError, match="derive\\(\\) got 'lr', which is not a KFoldConfig setting"):
        trainer.derive(lr=1e-3)


def test_derive_reuses_a_named_model_and_loads_it_again_only_for_another_seed(tmp_path):
    path = tmp_path / "vit"
    tiny_model("vit", num_labels=N_CLASSES + 2).save_pretrained(path)  # another head: the run draws its own
    trainer = KFoldTrainer(model=str(path), args=make_config(tmp_path / "cv"), train_dataset=image_dataset())
    same = trainer.derive(learning_rate=1e-2)
    assert same.model_source.template is trainer.model_source.template and same.model_name_or_path == str(path)
    reseeded = trainer.derive(seed=trainer.cv_args.seed + 1)  # the new head is drawn from the seed: drawn again
    assert reseeded.model_source.template is not trainer.model_source.template
    assert reseeded.model_fingerprint != trainer.model_fingerprint and reseeded.model_name_or_path == str(path)
    assert reseeded.model_source.loaded_with == (trainer.cv_args.seed + 1, trainer.cv_args.text_pooling)
