"""Pushing cross-validation runs to the Hub and loading them back, with the real huggingface_hub client against
the local Hub of tests/hub_server.py: round trip, per-fold pushes, failures, token hygiene, card, fold-model forms."""

from __future__ import annotations

import gc
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import dataset_for, load_recipe, make_config
from huggingface_hub import (CommitOperationAdd, EvalResult, HfApi, ModelCard, RepoCard, constants,
                             snapshot_download)
from huggingface_hub.repocard_data import model_index_to_eval_results
from hub_server import validate_card_metadata
from PIL import Image
from test_ensemble import save_base
from transformers import TrainerCallback

from hf_tlcv import CVResults, KFoldEnsemble, KFoldTrainer
from hf_tlcv.hub.push import HubPushCallback, HubPushError, repo_files
from hf_tlcv.hub.card import eval_results_for

TOKEN = "hf_TESTtokenDoNotLeak0123456789"


@pytest.fixture(autouse=True)
def no_full_gc(monkeypatch):
    """See tests/test_ensemble.py: skip the per-fold gc.collect (~0.6 s each), irrelevant to what is tested."""
    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two finished 2-fold linear-probe runs on a named tiny ViT: fold models saved as their trained part, and in
    full. Tests copy them before pushing (a push writes README.md into the run)."""
    root = tmp_path_factory.mktemp("runs")
    base = save_base(root / "base", "vit")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gc, "collect", lambda *args, **kwargs: 0)
        for form in ("trainable", "full"):
            args = make_config(root / form, finetune_strategy="linear_probe", n_folds=2, save_fold_models=True,
                               push_fold_models=form)
            KFoldTrainer(base, args, train_dataset=dataset_for("vit")).cross_validate()
            runs[form] = root / form
    return runs


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


def _digests(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _local_repo(run: Path, push_fold_models: str = "trainable") -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in repo_files(run, push_fold_models)}


def test_round_trip_push_download_and_ensemble(local_hub, finished_runs, tmp_path):
    run = _copy(finished_runs["trainable"], tmp_path)
    # Things a push must never upload: Trainer checkpoints, the pickled arguments, tracker logs.
    (run / "fold_0_0" / "checkpoint-3").mkdir()
    (run / "fold_0_0" / "checkpoint-3" / "model.safetensors").write_bytes(b"x" * 100)
    (run / "fold_0_0" / "training_args.bin").write_bytes(b"secret")
    (run / "runs").mkdir()
    (run / "runs" / "events").write_bytes(b"log")

    info = CVResults.load(run).push_to_hub("me/vit-cv", token=TOKEN)
    assert info.repo_url.repo_id == "me/vit-cv"
    on_hub = local_hub.files("me/vit-cv")
    assert on_hub == _local_repo(run)
    assert {"README.md", "cv_results.json", "folds.json", "oof_predictions.parquet", "plots/fold_scores.png",
            "fold_0_1/model/trainable.safetensors", "fold_0_1/predictions.parquet"} <= set(on_hub)
    assert not any("checkpoint" in p or "training_args" in p or p.startswith("runs/") for p in on_hub)

    download = Path(snapshot_download("me/vit-cv", token=TOKEN))
    assert _digests(download) == {p: hashlib.sha256(c).hexdigest() for p, c in on_hub.items()}
    data = dataset_for("vit")
    from_hub = KFoldEnsemble.from_pretrained("me/vit-cv", token=TOKEN).predict(data)
    from_dir = KFoldEnsemble.from_pretrained(run).predict(data)
    np.testing.assert_array_equal(from_hub.fold_probabilities, from_dir.fold_probabilities)
    assert from_hub.labels == from_dir.labels and from_hub.fold_names == ["fold_0_0", "fold_0_1"]
    for fold in CVResults.load(download).folds:  # the downloaded results are the run's, and so are the models
        rows = fold.predictions["row"].to_numpy()
        index = from_hub.fold_names.index(f"fold_{fold.repeat}_{fold.fold}")
        np.testing.assert_allclose(from_hub.fold_probabilities[index][rows],
                                   fold.predictions.filter(like="prob_").to_numpy(), atol=1e-6)


def test_model_card_metadata_validates_and_model_index_round_trips(local_hub, finished_runs, tmp_path):
    run = _copy(finished_runs["trainable"], tmp_path)
    results = CVResults.load(run)
    results.push_to_hub("me/card", study_report="### Pretrained vs scratch\nPretraining wins by 0.3.")
    card = ModelCard.load(run / "README.md")
    # the push sent the card through the Hub's metadata check (create_commit validates README.md first) and it
    # passed; huggingface_hub's own card check (POST /api/validate-yaml, text/plain) passes too
    checks = [r for r in local_hub.requests if r.path == "/api/validate-yaml"]
    assert [json.loads(r.body)["content"] for r in checks] == [(run / "README.md").read_text()]
    assert validate_card_metadata(card.content) == ([], [])
    card.validate()
    data = card.data
    assert data.library_name == "hf_tlcv" and data.pipeline_tag == "image-classification"
    assert {"hf_tlcv", "cross-validation", "k-fold", "linear_probe"} <= set(data.tags)
    expected = eval_results_for(results, "image-classification", None)
    assert [r.metric_type for r in expected] == ["accuracy", "precision", "recall", "f1"]
    assert data.eval_results == expected
    assert [r.metric_value for r in expected] == [results.summary[m]["mean"] for m in ("accuracy", "precision",
                                                                                        "recall", "f1")]
    raw = yaml.safe_load(card.content.split("---")[1])
    name, parsed = model_index_to_eval_results(raw["model-index"])
    assert name == "card" and parsed == expected and all(isinstance(r, EvalResult) for r in parsed)
    assert all(type(m["value"]) is float for m in raw["model-index"][0]["results"][0]["metrics"])
    body = card.text
    for needle in ("stratified", "k = 2", "| 0 | 1 |", "95% interval", "Pooled out-of-fold", "plots/fold_scores.png",
                   "learning_rate", "KFoldEnsemble.from_pretrained(\"me/card\")", "## Study", "Pretraining wins"):
        assert needle in body, needle
    assert (local_hub.files("me/card")["README.md"]).decode() == (run / "README.md").read_text()


def _card(change=None) -> str:
    """A README whose metadata has the structure the project's cards have, after `change(metadata)`."""
    metadata = {"license": "apache-2.0", "library_name": "hf_tlcv", "tags": ["hf_tlcv", "k-fold"],
                "model-index": [{"name": "run", "results": [{
                    "task": {"type": "image-classification"},
                    "dataset": {"type": "custom", "name": "custom", "split": "train"},
                    "metrics": [{"type": "accuracy", "value": 0.75, "name": "accuracy (mean of 2-fold)"}]}]}]}
    if change is not None:
        change(metadata)
    return f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n# A run\n"


def _result(metadata: dict) -> dict:
    return metadata["model-index"][0]["results"][0]


BROKEN_CARDS = {
    "result without metrics": (_card(lambda m: _result(m).pop("metrics")),
                               '"model-index[0].results[0].metrics" is required'),
    "metric without value": (_card(lambda m: _result(m)["metrics"][0].pop("value")),
                             '"model-index[0].results[0].metrics[0].value" is required'),
    "metric value not a number": (_card(lambda m: _result(m)["metrics"][0].update(value=None)),
                                  '"model-index[0].results[0].metrics[0].value" must be a number'),
    "metric without type": (_card(lambda m: _result(m)["metrics"][0].pop("type")),
                            '"model-index[0].results[0].metrics[0].type" is required'),
    "task without type": (_card(lambda m: _result(m).update(task={"name": "Image Classification"})),
                          '"model-index[0].results[0].task.type" is required'),
    "dataset without name": (_card(lambda m: _result(m)["dataset"].pop("name")),
                             '"model-index[0].results[0].dataset.name" is required'),
    "entry without name": (_card(lambda m: m["model-index"][0].pop("name")), '"model-index[0].name" is required'),
    "model-index not a list": (_card(lambda m: m.update({"model-index": m["model-index"][0]})),
                               '"model-index" must be an array'),
    "license not a string": (_card(lambda m: m.update(license=["mit"])), '"license" must be a string'),
    "tags not strings": (_card(lambda m: m["tags"].append(3)), '"tags[2]" must be a string'),
    "metadata not a mapping": ("---\n- license\n- mit\n---\n\n# A run\n", '"metadata" must be of type object'),
    "metadata not YAML": ("---\nlicense: [mit\n---\n\n# A run\n", "YAML metadata does not parse"),
}


def test_the_local_hub_accepts_the_reference_card(local_hub):
    """The card the broken ones are made from passes both checks: what they fail on is their one change."""
    card = _card()
    assert validate_card_metadata(card) == ([], [])
    ModelCard(card).validate()
    api = HfApi(token=TOKEN)
    api.create_repo("me/ok")
    api.create_commit("me/ok", [CommitOperationAdd("README.md", card.encode())], commit_message="card")
    assert local_hub.files("me/ok") == {"README.md": card.encode()}


@pytest.mark.parametrize("case", list(BROKEN_CARDS))
def test_the_local_hub_rejects_broken_card_metadata_as_the_hub_does(case, local_hub):
    content, error = BROKEN_CARDS[case]
    errors, warnings = validate_card_metadata(content)
    assert len(errors) == 1 and errors[0].startswith(error) and warnings == []
    if case not in ("metadata not a mapping", "metadata not YAML"):  # those the client refuses to load as a card
        # RepoCard.validate asks for text/plain and raises the reply's text (a plain RepoCard sends its metadata as
        # written; a ModelCard would drop a model-index it cannot read before sending)
        card = RepoCard(content)
        assert str(card) == content
        with pytest.raises(ValueError, match=re.escape(f"- Error: {error}")):
            card.validate(repo_type="model")
    # an upload of README.md (hf_tlcv's pushes use create_commit) is refused before anything is committed
    api = HfApi(token=TOKEN)
    api.create_repo("me/broken")
    with pytest.raises(ValueError, match=re.escape(f"Invalid metadata in README.md.\n- {error}")):
        api.create_commit("me/broken", [CommitOperationAdd("README.md", content.encode())], commit_message="card")
    assert local_hub.commits("me/broken") == []


@pytest.mark.parametrize("push_fold_models", ["none", "trainable", "full"])
def test_push_fold_models_pushes_what_it_says(push_fold_models, local_hub, finished_runs, tmp_path):
    form = "full" if push_fold_models == "full" else "trainable"
    run = _copy(finished_runs[form], tmp_path)
    CVResults.load(run).push_to_hub("me/forms", push_fold_models=push_fold_models)
    models = {p: len(c) for p, c in local_hub.files("me/forms").items() if "/model/" in p}
    if push_fold_models == "none":
        assert models == {}
        return
    names = {p.split("/model/")[1] for p in models}
    if push_fold_models == "trainable":
        assert names == {"fold_model.json", "trainable.safetensors"}
    else:
        assert {"config.json", "model.safetensors", "preprocessor_config.json", "fold_model.json"} <= names
    # trainable (the head) vs full: compare with the other run's full weights
    full = sum(p.stat().st_size for p in finished_runs["full"].glob("fold_*/model/model.safetensors"))
    part = sum(p.stat().st_size for p in finished_runs["trainable"].glob("fold_*/model/trainable.safetensors"))
    assert part * 20 < full
    assert KFoldEnsemble.from_pretrained("me/forms").predict(dataset_for("vit")).votes.shape == (2, 36)


def test_trainable_push_leaves_out_full_weights_saved_on_request(local_hub, finished_runs, tmp_path, caplog):
    run = _copy(finished_runs["full"], tmp_path)
    CVResults.load(run).push_to_hub("me/no-full", push_fold_models="trainable")
    assert not any("/model/" in p for p in local_hub.files("me/no-full"))
    assert "push_fold_models='full' to include it" in caplog.text


class CrashOnFold(TrainerCallback):
    """Kills the run when the given fold starts training (0-based count of trained folds)."""

    def __init__(self, fold: int):
        self.fold, self.started = fold, 0

    def on_train_begin(self, args, state, control, **kwargs):
        if self.started == self.fold:
            raise RuntimeError("simulated crash")
        self.started += 1


def test_folds_are_pushed_as_they_finish_and_the_token_never_leaks(local_hub, tmp_path, caplog, capsys):
    local_hub.require_token(TOKEN)
    base = save_base(tmp_path / "base", "vit")
    out = tmp_path / "cv"
    args = make_config(out, finetune_strategy="linear_probe", n_folds=3, push_to_hub=True, hub_model_id="me/live",
                       hub_token=TOKEN, hub_private_repo=True)
    trainer = KFoldTrainer(base, args, train_dataset=dataset_for("vit"), callbacks=[CrashOnFold(2)])
    assert any(isinstance(c, HubPushCallback) for c in trainer.callback_handler.callbacks)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.cross_validate()
    # a crash in fold 3 leaves folds 1-2 on the Hub, one commit each, and no summary yet
    commits = local_hub.commits("me/live")
    assert [c.message for c in commits] == ["Add cross-validation fold_0_0", "Add cross-validation fold_0_1"]
    assert {"fold_0_0/model/trainable.safetensors", "fold_0_1/fold_result.json"} <= set(local_hub.files("me/live"))
    assert "README.md" not in local_hub.files("me/live") and local_hub.repos[("model", "me/live")].private

    # running again resumes: fold 3 is pushed when it finishes, then the summary and card
    args = make_config(out, finetune_strategy="linear_probe", n_folds=3, push_to_hub=True, hub_model_id="me/live",
                       hub_token=TOKEN)
    trainer = KFoldTrainer(base, args, train_dataset=dataset_for("vit"))
    trainer.cross_validate()
    messages = [c.message for c in local_hub.commits("me/live")]
    assert messages[:3] == [f"Add cross-validation fold_0_{i}" for i in range(3)]
    assert len(messages) == 4 and messages[3].startswith("Cross-validation results (3 folds")
    assert local_hub.files("me/live") == _local_repo(out)
    # pushing again by hand is a no-op: nothing changed, so no new commit
    info = trainer.push_cross_validation_to_hub()
    assert info.oid == local_hub.commits("me/live")[-1].oid and len(local_hub.commits("me/live")) == 4

    # the token went only into Authorization headers, never into a file, a log line or the output
    assert local_hub.requests and all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in local_hub.requests)
    for r in local_hub.requests:
        other = {k: v for k, v in r.headers.items() if k != "authorization"}
        assert TOKEN not in r.path + str(r.query) + str(other) and TOKEN.encode() not in r.body
    download = Path(snapshot_download("me/live", token=TOKEN))
    captured = capsys.readouterr()
    for path in [*out.rglob("*"), *download.rglob("*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in caplog.text + captured.out + captured.err
    assert CVResults.load(out).config["hub_token"] == "<HUB_TOKEN>"


def test_failed_pushes_lose_nothing_and_pushing_again_completes_the_repo(local_hub, tmp_path, caplog):
    base = save_base(tmp_path / "base", "vit")
    out = tmp_path / "cv"
    local_hub.fail_next(100, status=503, path="/commit/")  # the Hub is down for the whole run
    args = make_config(out, finetune_strategy="linear_probe", n_folds=2, push_to_hub=True, hub_model_id="me/down",
                       hub_token=TOKEN)
    with pytest.raises(HubPushError) as error:
        KFoldTrainer(base, args, train_dataset=dataset_for("vit")).cross_validate()
    message = str(error.value)
    assert "server error (503)" in message and "me/down" in message and "intact" in message
    assert f"CVResults.load({str(out)!r}).push_to_hub('me/down')" in message and TOKEN not in message
    assert "fold_0_0" in caplog.text and "Training goes on" in caplog.text  # fold pushes warned, training went on
    results = CVResults.load(out)  # every result was saved before the push failed
    assert len(results.folds) == 2 and (out / "plots" / "fold_scores.png").exists()
    assert local_hub.commits("me/down") == []

    local_hub.clear_faults()
    results.push_to_hub("me/down", token=TOKEN)
    assert local_hub.files("me/down") == _local_repo(out)


def test_a_500_mid_push_keeps_local_files_and_the_retry_succeeds(local_hub, finished_runs, tmp_path):
    run = _copy(finished_runs["trainable"], tmp_path)
    results = CVResults.load(run)
    results.push_to_hub("me/flaky")  # README.md now exists locally: the state a retry starts from
    (run / "fold_0_0" / "fold_result.json").write_text((run / "fold_0_0" / "fold_result.json").read_text() + " ")
    before = _digests(run)
    local_hub.fail_next(1, status=500, path="/commit/")
    with pytest.raises(HubPushError, match="server error \\(500\\)"):
        results.push_to_hub("me/flaky")
    assert _digests(run) == before
    assert local_hub.files("me/flaky") != _local_repo(run)
    results.push_to_hub("me/flaky")
    assert local_hub.files("me/flaky") == _local_repo(run)
    assert len(local_hub.commits("me/flaky")) == 2  # the retry uploaded only the changed file
    assert local_hub.commits("me/flaky")[1].files == ["fold_0_0/fold_result.json"]


@pytest.mark.parametrize("status, expected", [(401, "rejected the token"), (403, "may not write"),
                                              (None, "could not be reached")])
def test_push_errors_say_what_failed_without_the_token(status, expected, local_hub, finished_runs, tmp_path,
                                                       monkeypatch):
    run = _copy(finished_runs["trainable"], tmp_path)
    if status is None:
        import socket

        with socket.socket() as sock:  # a port nobody listens on: the network is down
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    else:
        local_hub.fail_next(1, status=status)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the token resolved by huggingface_hub, as from a login
    with pytest.raises(HubPushError) as error:
        CVResults.load(run).push_to_hub("me/denied")
    message = str(error.value)
    assert expected in message and "intact" in message and TOKEN not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no chained client error to leak


@pytest.fixture
def recipe():
    return load_recipe("vit_kfold")


@pytest.mark.integration  # a one-process recipe run
def test_recipe_push_to_hub_then_ensemble_on_raw_images(recipe, local_hub, tmp_path):
    base = save_base(tmp_path / "base", "vit")
    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "images" / f"class{c}").mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.normal(60 + 60 * c, 30, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"class{c}" / f"{i}.png")
    out = tmp_path / "cv"
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(args=[
        "--model_name_or_path", base, "--dataset_name", str(tmp_path / "images"), "--max_samples", "0",
        "--n_folds", "2", "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--image_size", "32",
        "--use_cpu", "--disable_tqdm", "true", "--output_dir", str(out),
        "--push_to_hub", "--hub_model_id", "me/recipe", "--hub_token", TOKEN,
    ])
    assert config.push_to_hub and config.hub_model_id == "me/recipe" and config.push_fold_models == "trainable"
    results = recipe.main(script_args, config)
    files = local_hub.files("me/recipe")
    assert files == _local_repo(out) and "fold_0_1/model/trainable.safetensors" in files
    assert b"pipeline_tag: image-classification" in files["README.md"]

    from hf_tlcv.assets import load_dataset

    images = load_dataset(str(tmp_path / "images"))
    ensemble = KFoldEnsemble.from_pretrained("me/recipe", token=TOKEN)
    prediction = ensemble.predict(images)  # raw PIL images, preprocessed with the run's image_size
    for fold in results.folds:
        rows = fold.predictions["row"].to_numpy()
        np.testing.assert_allclose(prediction.fold_probabilities[fold.fold][rows],
                                   fold.predictions.filter(like="prob_").to_numpy(), atol=1e-6)
    single = ensemble.predict(images[0]["image"])
    np.testing.assert_allclose(single.probabilities[0], prediction.probabilities[0], atol=1e-6)


def test_scrub_masks_tokens_and_authorization_values_but_not_paths():
    from hf_tlcv.hub.push import scrub

    text = f"401 for hf_tlcv_output/fold_0_0 with Bearer {TOKEN}; Authorization: abc; hf_{'x' * 34}; {TOKEN}"
    clean = scrub(text, TOKEN)
    assert TOKEN not in clean and "abc" not in clean and "x" * 34 not in clean
    assert "hf_tlcv_output/fold_0_0" in clean
