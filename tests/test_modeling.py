"""Loading classifiers by name: pretrained with a new head, or the same architecture from scratch."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from hf_tlcv.modeling import load_classifier, state_fingerprint


@pytest.fixture(scope="module")
def local_vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    tiny_model("vit", num_labels=7).save_pretrained(folder)
    return str(folder)


def test_pretrained_body_new_head(local_vit):
    torch.manual_seed(0)
    model = load_classifier(local_vit, ["a", "b", "c"], 3)
    saved = tiny_model("vit", num_labels=7)
    assert model.config.num_labels == 3 and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert torch.equal(model.vit.embeddings.patch_embeddings.projection.weight,
                       saved.vit.embeddings.patch_embeddings.projection.weight)
    assert model.classifier.weight.shape == (3, 16)


def test_from_scratch_is_the_same_architecture_with_random_weights(local_vit):
    torch.manual_seed(0)
    pretrained = load_classifier(local_vit, None, 3)
    torch.manual_seed(123)  # the saved "pretrained" tiny model was itself drawn from seed 0
    scratch = load_classifier(local_vit, None, 3, pretrained=False)
    torch.manual_seed(123)
    again = load_classifier(local_vit, None, 3, pretrained=False)
    shapes = {n: p.shape for n, p in pretrained.named_parameters()}
    assert {n: p.shape for n, p in scratch.named_parameters()} == shapes
    assert not torch.equal(scratch.vit.layers[0].mlp.fc1.weight, pretrained.vit.layers[0].mlp.fc1.weight)
    assert state_fingerprint(scratch) == state_fingerprint(again)  # seeded: reproducible
    assert scratch.config.num_labels == 3


def test_missing_local_folder_keeps_its_own_error(tmp_path):
    with pytest.raises(OSError) as info:
        load_classifier(str(tmp_path / "nowhere"), None, 2)
    assert "Hub" not in type(info.value).__name__
