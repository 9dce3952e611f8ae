"""The fold as a unit of work, and Trainer's contract: a fold job gives the same result here and in a fresh process;
arguments in Trainer's order; eval_dataset as a held-out test set; a plain TrainingArguments; a processor-less model
folder; a callback class per fold."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pandas as pd
import pytest
from conftest import image_dataset, make_config, tiny_model
from sklearn.metrics import accuracy_score, f1_score
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_tlcv import CVResults, KFoldConfig, KFoldTrainer, run_fold
from hf_tlcv.execution import run_in_worker


def _assert_same_fold(a, b, atol=1e-6):
    assert (a.repeat, a.fold, a.n_train, a.n_eval) == (b.repeat, b.fold, b.n_train, b.n_eval)
    assert a.eval_metrics.keys() == b.eval_metrics.keys()
    for key in a.eval_metrics:
        assert a.eval_metrics[key] == pytest.approx(b.eval_metrics[key], abs=atol), key
    for key in a.train_metrics:
        assert a.train_metrics[key] == pytest.approx(b.train_metrics[key], abs=atol), key
    pd.testing.assert_frame_equal(a.predictions, b.predictions, atol=atol, rtol=0)
    losses = lambda r: [h["loss"] for h in r.log_history if "loss" in h]  # noqa: E731
    assert losses(a) and np.allclose(losses(a), losses(b), atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "linear_probe"])  # linear_probe: the job carries the feature cache
def test_a_fold_job_gives_the_same_result_in_a_fresh_process(strategy, tmp_path):
    args = make_config(tmp_path / "cv", finetune_strategy=strategy, n_folds=3, num_train_epochs=2)
    trainer = KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset())
    jobs = trainer.fold_jobs()
    assert [job.fold.name for job in jobs] == ["fold_0_0", "fold_0_1", "fold_0_2"]
    assert (jobs[0].features is not None) == (strategy == "linear_probe")
    here = run_fold(jobs[1])
    there = run_in_worker(jobs[1])  # spawned interpreter: nothing of this process's live state
    _assert_same_fold(here, there)
    # and both equal the fold as cross_validate() runs it
    results = trainer.cross_validate()
    _assert_same_fold(results.folds[1], there)


def test_arguments_follow_trainer_order():
    ours = list(inspect.signature(KFoldTrainer.__init__).parameters)[1:]
    theirs = list(inspect.signature(Trainer.__init__).parameters)[1:]
    assert ours[:len(theirs)] == theirs  # model, args, data_collator, train_dataset, eval_dataset, processing_class...
    assert ours[len(theirs):] == ["peft_config"]


def test_eval_dataset_is_a_held_out_test_set_scored_by_every_fold_and_the_ensemble(tmp_path):
    train, test = image_dataset(n_per_class=10, seed=0), image_dataset(n_per_class=5, seed=7)
    args = make_config(tmp_path / "cv", n_folds=3, finetune_strategy="linear_probe", eval_strategy="epoch")
    trainer = KFoldTrainer(tiny_model("vit"), args, train_dataset=train, eval_dataset=test)
    results = trainer.cross_validate()
    labels = np.asarray(test["label"])
    frames = results.test_predictions
    assert sorted(frames["row"].unique()) == list(range(len(test))) and len(frames) == 3 * len(test)
    for fold in results.folds:
        mine = fold.test_predictions
        assert np.array_equal(mine["label"].to_numpy(), labels)
        assert fold.test_metrics["accuracy"] == pytest.approx(accuracy_score(labels, mine["prediction"]))
        # the fold's eval during training used its own eval rows, never the test set
        evals = [h for h in fold.log_history if "eval_loss" in h]
        assert evals and evals[-1]["eval_loss"] == pytest.approx(fold.eval_metrics["loss"], rel=1e-5)
    # the ensemble: the mean of the fold models' probabilities, recomputed here
    probs = np.mean([f.test_predictions.filter(like="prob_").to_numpy() for f in results.folds], axis=0)
    assert results.test_metrics["accuracy"] == pytest.approx(accuracy_score(labels, probs.argmax(1)))
    assert results.test_metrics["f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))
    mean = np.mean([f.test_metrics["accuracy"] for f in results.folds])
    assert results.test_summary["accuracy"]["mean"] == pytest.approx(mean)
    table = results.format_table()
    assert f"Held-out test set ({len(test)} rows" in table
    # saved and read back
    loaded = CVResults.load(tmp_path / "cv")
    assert loaded.test_metrics == results.test_metrics and loaded.test_summary == results.test_summary
    assert "## Held-out test set" in (tmp_path / "cv" / "README.md").read_text()
    # Trainer's meaning: evaluate() of the model train() produced runs on eval_dataset
    trainer.train()
    assert set(trainer.evaluate()) >= {"eval_loss", "eval_accuracy"}


def test_a_plain_training_arguments_is_converted_with_its_token(tmp_path):
    plain = TrainingArguments(output_dir=str(tmp_path / "cv"), learning_rate=5e-3, num_train_epochs=1,
                              per_device_train_batch_size=8, report_to="none", use_cpu=True, hub_token="hf_secret",
                              disable_tqdm=True, save_strategy="no")
    trainer = KFoldTrainer(tiny_model("vit"), plain, train_dataset=image_dataset(), )
    assert isinstance(trainer.args, KFoldConfig)
    assert trainer.args.hub_token == "hf_secret" and trainer.args.learning_rate == 5e-3
    assert trainer.args.n_folds == 5 and trainer.args.finetune_strategy == "full"  # cross-validation defaults
    converted = KFoldConfig.from_training_arguments(plain, n_folds=3)
    assert converted.n_folds == 3 and converted.per_device_train_batch_size == 8
    with pytest.raises(TypeError, match="Not KFoldConfig settings: learning_rat"):
        KFoldConfig.from_training_arguments(plain, learning_rat=1.0)


def test_a_model_folder_without_a_processor_works_on_model_inputs(tmp_path):
    folder = tmp_path / "bare"
    tiny_model("vit").save_pretrained(folder)  # config + weights, no preprocessor_config.json
    args = make_config(tmp_path / "cv", n_folds=2, num_train_epochs=1)
    results = KFoldTrainer(str(folder), args, train_dataset=image_dataset()).cross_validate()
    assert len(results.folds) == 2
    # raw images do need the processor: then its absence is an error that says so
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    raw = Dataset.from_dict({"image": [PILImage.new("RGB", (8, 8))] * 6, "label": [0, 1, 2] * 2},
                            features=Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])}))
    with pytest.raises(OSError, match=r"Can't load image processor for '.*bare'.*containing a preprocessor_config\.json"):
        KFoldTrainer(str(folder), make_config(tmp_path / "raw", n_folds=2), train_dataset=raw)


def test_an_optimizer_instance_is_refused_for_folds(tmp_path):
    import torch

    model = tiny_model("vit")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer_cls_and_kwargs"):
        KFoldTrainer(model, make_config(tmp_path / "cv"), train_dataset=image_dataset(), optimizers=(optimizer, None))
    # the optimizer class and its arguments are what every fold gets: a new SGD over that fold's own model
    class OptimizerSeen(TrainerCallback):
        seen = []

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            trainable = {id(p) for p in model.parameters() if p.requires_grad}
            params = {id(p) for group in optimizer.param_groups for p in group["params"]}
            optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
            self.seen.append((type(optimizer), [g["initial_lr"] for g in optimizer.param_groups],
                              params == trainable, optimizer))

    trainer = KFoldTrainer(model, make_config(tmp_path / "sgd", n_folds=2, num_train_epochs=1),
                           train_dataset=image_dataset(), optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1}),
                           callbacks=[OptimizerSeen()])
    assert len(trainer.cross_validate().folds) == 2
    seen = OptimizerSeen.seen
    assert [(kind, set(lrs), own) for kind, lrs, own, _ in seen] == [(torch.optim.SGD, {0.1}, True)] * 2
    assert seen[0][3] is not seen[1][3]


def test_fold_config_is_a_copy_with_the_fold_folder(tmp_path):
    args = make_config(tmp_path / "cv", run_name="exp", push_to_hub=False)
    trainer = KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset())
    job = trainer.fold_jobs()[2]
    config = job.fold_config()
    assert config is not args and config.output_dir == str(tmp_path / "cv" / "fold_0_2")
    assert config.run_name == "exp-fold_0_2" and args.run_name == "exp" and args.output_dir == str(tmp_path / "cv")
    changed = {f.name for f in dataclasses.fields(args)
               if f.init and getattr(config, f.name) != getattr(args, f.name)}
    assert changed <= {"output_dir", "run_name", "dataloader_pin_memory", "push_to_hub"}
