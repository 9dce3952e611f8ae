"""Pins the transformers behaviour hf_tlcv relies on without a public API (`hf_tlcv.compat`): if an upgrade changes
it, these fail and say what to revisit."""

from __future__ import annotations

import logging

from conftest import image_dataset, make_config, tiny_model
from transformers import AutoModelForImageClassification, Trainer

from hf_tlcv.compat import LOAD_REPORT_LOGGER, held_load_report, use_mean_loss


def test_trainer_treats_kwargs_models_as_summed_losses_until_told_otherwise(tmp_path):
    args = make_config(tmp_path)
    trainer = Trainer(model=tiny_model("vit"), args=args, train_dataset=image_dataset())
    # transformers: a model whose forward takes **kwargs gets num_items_in_batch and a loss scaled by the process
    # count; if this stops being True, use_mean_loss may no longer be needed
    assert trainer.model_accepts_loss_kwargs is True
    use_mean_loss(trainer)
    assert trainer.model_accepts_loss_kwargs is False


def test_a_replaced_head_is_reported_through_the_logger_we_hold(tmp_path):
    tiny_model("vit", num_labels=5).save_pretrained(tmp_path / "base")
    with held_load_report() as hold:
        AutoModelForImageClassification.from_pretrained(tmp_path / "base", num_labels=3, ignore_mismatched_sizes=True)
    assert hold.held and hold.held[0].name == LOAD_REPORT_LOGGER
    assert "LOAD REPORT" in hold.held[0].getMessage() and "classifier.weight" in hold.held[0].getMessage()
    # outside the block nothing is held back
    assert hold not in logging.getLogger(LOAD_REPORT_LOGGER).filters
