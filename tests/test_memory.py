"""Many cross-validations in one process (a study, a Space serving visitors): each run frees its trainer, its
template model, its datasets and its feature cache, and leaves the garbage collector as it found it."""

from __future__ import annotations

import gc
import weakref

import psutil
import pytest
import transformers as tf
from conftest import IMAGE_SIZE, image_dataset, make_config

from hf_tlcv import KFoldTrainer

# One process, but six cross-validations of a 12 MB model: not the fast tier's tiny in-process runs.
pytestmark = pytest.mark.integration


def _model():
    # ~12 MB of weights: a leak of one model per run stands far above the allocator's noise
    config = tf.ViTConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=256, num_hidden_layers=4,
                          num_attention_heads=4, intermediate_size=1024, num_labels=3)
    return tf.ViTForImageClassification(config)


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def test_six_runs_in_one_process_leave_rss_flat_and_the_trainer_collected(tmp_path):
    model_mb = sum(p.numel() for p in _model().parameters()) * 4 / 2**20
    assert model_mb > 10
    frozen_before = gc.get_freeze_count()
    sizes, refs = [], []
    for run in range(6):
        strategy = "linear_probe" if run % 2 else "full"  # with and without a feature cache
        args = make_config(tmp_path / f"cv{run}", n_folds=2, num_train_epochs=1, finetune_strategy=strategy)
        trainer = KFoldTrainer(_model(), args, train_dataset=image_dataset())
        trainer.cross_validate()
        refs.append(weakref.ref(trainer))
        del trainer
        sizes.append(_rss_mb())
        assert refs[-1]() is None, f"run {run}: the trainer is still referenced after del"
        assert gc.get_freeze_count() == frozen_before  # the run's gc.freeze was undone
    # from the third run on: the first two warm the allocator and the imports of both paths (cached, uncached)
    growth = (sizes[-1] - sizes[2]) / 3
    assert growth < 0.25 * model_mb, f"RSS grew {growth:.1f} MB per run ({sizes}); the model is {model_mb:.1f} MB"
