"""Hyperparameter search on cross-validation (hf_tlcv.search): the space, the objective, the study's bookkeeping, and
searches on a tiny ViT: pruning on fold-level reports, a search killed with SIGKILL mid-trial that resumes to the
trials of an uninterrupted one, and a nested search whose trials never see their outer eval rows."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import image_dataset, make_config, tiny_model
from transformers import TrainerCallback

import hf_tlcv.trainer
from hf_tlcv import KFoldConfig, KFoldTrainer
from hf_tlcv.fold_job import fold_settings
from hf_tlcv.folds import load_folds
from hf_tlcv.hub.card import CVCardData, build_model_card
from hf_tlcv.results import CVResults
from hf_tlcv.search.run import (
    INTERRUPTED_ATTR,
    OWNER_ATTR,
    RUN_ATTR,
    SearchObjective,
    TrialRunner,
    default_hp_space,
    make_storage,
    open_study,
    owner,
    recover_trials,
    resolve_objective,
    seeded_sampler,
    trial_settings,
)
from hf_tlcv.search.report import SearchReport

# The search's backend (hf_tlcv[tune]); every test here runs it.
optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.integration


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "search_run.py"


def _search_run():
    spec = importlib.util.spec_from_file_location("search_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _feature_cache_here(tmp_path, monkeypatch):
    # Trials share their frozen-feature caches on disk: keep this test's caches in its own folder.
    monkeypatch.setenv("HF_TLCV_FEATURE_CACHE", str(tmp_path / "feature_cache"))


# ---- the space ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_blocks, strategies", [
    (12, ("linear_probe", "freeze", "lora", "full")),
    (2, ("linear_probe", "freeze", "lora", "full")),  # freeze depth 1 of 2
    (1, ("linear_probe", "lora", "full")),  # no depth to choose below the top block: freeze is not searched
    (None, ("lora", "full")),  # no block stack: nothing to freeze or decay
])
def test_default_space_is_conditional_valid_and_bounded_by_the_blocks(n_blocks, strategies, tmp_path):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        settings = default_hp_space(trial, n_blocks)
        study.tell(trial, 0.0)
        strategy = settings["finetune_strategy"]
        seen.add(strategy)
        KFoldConfig(output_dir=str(tmp_path), report_to="none", **settings)  # every trial is a valid config
        assert 1e-5 <= settings["learning_rate"] <= 1e-2 and 1 <= settings["num_train_epochs"] <= 5
        if strategy == "freeze":
            assert 1 <= settings["freeze_layers"] <= n_blocks - 1 and "freeze_layers" in trial.params
        else:
            assert settings["freeze_layers"] == 0 and "freeze_layers" not in trial.params
        assert ("lora_r" in trial.params) == (strategy == "lora")
        decays = settings["layerwise_lr_decay"] is not None
        assert decays == (n_blocks is not None and strategy != "linear_probe")
    assert seen == set(strategies)


@pytest.mark.parametrize("space, error, match", [
    (lambda t: {"lr": 1e-3}, ValueError, "'lr'.*not a KFoldConfig setting"),
    (lambda t: {"n_folds": 3}, ValueError, "same folds"),
    (lambda t: {"output_dir": "x"}, ValueError, "own folder"),
    (lambda t: [1e-3], TypeError, "must return a dict"),
])
def test_a_bad_space_is_refused_with_what_to_do(space, error, match):
    with pytest.raises(error, match=match):
        trial_settings(space, optuna.trial.FixedTrial({}))


# ---- the objective -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, kwargs, expected", [
    ({}, {}, ("accuracy", "maximize")),
    ({"metrics": ["f1", "recall"]}, {}, ("f1", "maximize")),
    ({"metric_for_best_model": "eval_loss"}, {}, ("loss", "minimize")),
    ({"metric_for_best_model": "f1"}, {}, ("f1", "maximize")),
    ({}, {"direction": "maximize"}, ("accuracy", "maximize")),
    ({}, {"compute_objective": sum, "direction": "minimize"}, ("accuracy", "minimize")),
])
def test_the_objective_and_its_direction_follow_the_metric(settings, kwargs, expected, tmp_path):
    objective = resolve_objective(make_config(tmp_path, **settings), **kwargs)
    assert (objective.metric, objective.direction) == expected


@pytest.mark.parametrize("kwargs, match", [
    ({"direction": "minimize"}, "would pick the worst accuracy"),
    ({"compute_objective": sum}, "say which way it improves"),
    ({"direction": ["maximize", "minimize"]}, "one objective"),
    ({"direction": "max"}, "'maximize' or 'minimize'"),
])
def test_a_contradictory_objective_is_refused(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        resolve_objective(make_config(tmp_path), **kwargs)


@pytest.mark.parametrize("space, ci_method", [({"learning_rate": 1e-3}, "corrected"),
                                               ({"learning_rate": 1e-3, "ci_method": "nested"}, "nested")])
def test_a_trial_is_the_base_config_with_its_settings_in_its_own_folder(space, ci_method, tmp_path):
    base = make_config(tmp_path, ci_method="nested", feature_cache="auto", push_to_hub=False, run_name="cv")
    runner = TrialRunner(inputs=None, base_settings=fold_settings(base), output_dir=str(tmp_path), hp_space=None,
                         objective=SearchObjective("accuracy", "maximize"), n_folds=3)
    args = runner.config(space, 7, None)
    assert args.output_dir == str(tmp_path / "trials" / "7") and args.run_name == "cv-trial_7"
    assert args.learning_rate == 1e-3 and args.n_folds == base.n_folds and args.fold_seed == base.fold_seed
    # trials share one on-disk frozen-feature cache; the nested interval's extra fits only when the space asks
    assert args.feature_cache == "disk" and args.ci_method == ci_method


def test_the_objective_is_the_mean_of_the_folds_metric():
    folds = [{"accuracy": 0.5, "loss": 1.0, "f1": 0.4}, {"accuracy": 0.75, "loss": 0.5, "f1": 0.7}]
    assert SearchObjective("accuracy", "maximize")(folds) == pytest.approx(0.625)
    # Trainer's compute_objective receives the means under Trainer.evaluate's names
    custom = SearchObjective("accuracy", "maximize", lambda m: m["eval_f1"] - m["eval_loss"])
    assert custom(folds) == pytest.approx((0.4 + 0.7) / 2 - (1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="'recall', which the folds do not report"):
        SearchObjective("recall", "maximize")(folds)


# ---- the study's bookkeeping ---------------------------------------------------------------------------------------
def _space(trial):
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True),
            "finetune_strategy": trial.suggest_categorical("finetune_strategy", ["full", "lora"])}


def test_the_seeded_sampler_draws_the_same_trials_whatever_failed_in_between():
    def run(fail_at):
        study = optuna.create_study(sampler=seeded_sampler(7))
        drawn = []
        for i in range(5):
            trial = study.ask()
            _space(trial)
            if i == fail_at:  # an interrupted trial: the next one is drawn as if it never happened
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                trial = study.ask()
                _space(trial)
            study.tell(trial, float(i))
            drawn.append(trial.params)
        return drawn

    assert run(None) == run(2)
    assert len({json.dumps(p, sort_keys=True) for p in run(None)}) == 5  # and they do differ between trials


def test_interrupted_and_orphaned_trials_are_retried_in_their_own_folder(tmp_path):
    study = open_study(make_storage(None, tmp_path), "s", "maximize")
    me = owner()
    specs = [("dead", {**me, "started": 0.0}, None),  # RUNNING, its process gone (start time differs): retried
             ("alive", me, None),  # RUNNING in this process: left alone
             ("interrupted", me, optuna.trial.TrialState.FAIL),  # Ctrl-C: retried
             ("failed", me, optuna.trial.TrialState.FAIL)]  # an error: not retried (a new trial is drawn instead)
    for name, record, state in specs:
        trial = study.ask()
        _space(trial)
        trial.set_user_attr(RUN_ATTR, trial.number)
        trial.set_user_attr(OWNER_ATTR, record)
        if name == "interrupted":
            trial.set_user_attr(INTERRUPTED_ATTR, True)
        if state is not None:
            study.tell(trial, state=state)
    assert recover_trials(study) == [0, 2]
    trials = study.get_trials()
    assert [t.state.name for t in trials[:4]] == ["FAIL", "RUNNING", "FAIL", "FAIL"]
    waiting = trials[4:]
    assert [t.state.name for t in waiting] == ["WAITING", "WAITING"]
    for retry, original in zip(waiting, (trials[0], trials[2])):
        assert retry.params == original.params and retry.user_attrs[RUN_ATTR] == original.number
        assert retry.system_attrs["failed_trial"] == original.number
    assert recover_trials(study) == []  # a trial is retried once


@pytest.mark.parametrize("storage, expected", [(None, "search.db"), ("journal", "search.journal")])
def test_the_study_lives_in_the_output_dir(storage, expected, tmp_path):
    study = open_study(make_storage(storage, tmp_path), "s", "maximize")
    study.enqueue_trial({"x": 1})
    assert (tmp_path / expected).exists()
    with pytest.raises(ValueError, match="started with direction='maximize'"):
        open_study(make_storage(storage, tmp_path), "s", "minimize")


def test_bad_search_arguments_are_refused_before_training(tmp_path, monkeypatch):
    trainer = KFoldTrainer(tiny_model("vit"), make_config(tmp_path / "cv"), train_dataset=image_dataset())
    monkeypatch.setattr(hf_tlcv.trainer, "run_fold", _no_training)
    with pytest.raises(TypeError, match="unknown arguments: n_trails"):
        trainer.hyperparameter_search(n_trails=3)
    with pytest.raises(ValueError, match="one at a time"):
        trainer.hyperparameter_search(n_trials=2, n_jobs=2)
    with pytest.raises(ValueError, match="'wandb' is not supported"):
        trainer.hyperparameter_search(n_trials=2, backend="wandb")
    with pytest.raises(ValueError, match="'lr'.*not a KFoldConfig setting"):
        trainer.hyperparameter_search(hp_space=lambda t: {"lr": t.suggest_float("lr", 1e-4, 1e-2)}, n_trials=2)
    assert not list((tmp_path / "cv").glob("trials/*/fold_*"))


def _no_training(job):
    raise AssertionError(f"{job.fold.name} was trained")


# ---- searches on a tiny model --------------------------------------------------------------------------------------
def _fold_mean(run_dir: Path, metric: str = "accuracy") -> tuple[float, int]:
    """A trial's mean score and finished fold count, read from its fold files (an independent computation)."""
    scores = [json.loads(p.read_text())["eval_metrics"][metric] for p in run_dir.glob("fold_*/fold_result.json")]
    return float(np.mean(scores)), len(scores)


@pytest.mark.slow
def test_pruned_trials_are_never_scored_and_shared_caches_are_reused(tmp_path):
    out = tmp_path / "search"
    trainer = KFoldTrainer(tiny_model("vit"), make_config(out, n_folds=3, eval_on_train=False),
                           train_dataset=image_dataset())
    # The trials, in this order: a linear probe, full fine-tuning, a trial the pruner stops after its first fold, and
    # a linear probe sharing the first trial's frozen part.
    study = optuna.create_study(storage=f"sqlite:///{out / 'search.db'}", study_name="hf_tlcv", direction="maximize")
    for params in ({"finetune_strategy": "linear_probe", "learning_rate": 3e-2},
                   {"finetune_strategy": "full", "learning_rate": 5e-3},
                   {"finetune_strategy": "full", "learning_rate": 1e-7},
                   {"finetune_strategy": "linear_probe", "learning_rate": 1e-2}):
        study.enqueue_trial(params)

    def space(trial):
        return {"finetune_strategy": trial.suggest_categorical("finetune_strategy", ["linear_probe", "full"]),
                "learning_rate": trial.suggest_float("learning_rate", 1e-8, 1e-1, log=True)}

    best = trainer.hyperparameter_search(hp_space=space, n_trials=4, pruner=PruneTrial(2))
    report: SearchReport = best.run_summary
    # the reports: after fold i (step i, folds in the same order for every trial), the mean of folds 0..i
    for t in optuna.load_study(storage=f"sqlite:///{out / 'search.db'}", study_name="hf_tlcv").get_trials():
        scores = _scores(out / "trials" / str(t.number))
        assert t.intermediate_values == pytest.approx({i: np.mean(scores[:i + 1]) for i in range(len(scores))})
    states = [r["state"] for r in report.trials]
    assert states == ["complete", "complete", "pruned", "complete"]
    pruned = report.trials[2]
    assert pruned["value"] is None and pruned["summary"] is None
    assert _fold_mean(out / "trials" / "2")[1] == 1 and not (out / "trials" / "2" / "cv_results.json").exists()
    assert report.pruning == {"n_pruned": 1, "fold_trainings": 10, "fold_trainings_unpruned": 12,
                              "fold_trainings_saved": 2, "pruner": "PruneTrial()"}
    # every complete trial's value is the mean of its folds; the best is the highest of them
    means = {r["trial"]: _fold_mean(out / "trials" / str(r["run"]))[0] for r in report.trials
             if r["state"] == "complete"}
    for r in report.trials:
        if r["state"] == "complete":
            assert r["value"] == pytest.approx(means[r["trial"]])
    top = max(means, key=lambda n: (means[n], -n))
    assert best.run_id == str(top) and best.objective == pytest.approx(means[top])
    assert best.hyperparameters == report.trials[top]["settings"]
    # every trial ran on the search's folds
    base, _ = load_folds(out / "folds.json")
    for run in ("0", "1", "2", "3"):
        folds, _ = load_folds(out / "trials" / run / "folds.json")
        assert all(np.array_equal(a.eval_indices, b.eval_indices) for a, b in zip(folds, base))
    assert report.same_folds
    # the two linear probes share one frozen-feature cache: computed by the first, reused by the second
    assert report.trials[0]["feature_cache"]["reused"] is False
    assert report.trials[3]["feature_cache"]["reused"] is True
    assert report.trials[3]["feature_cache"]["key"] == report.trials[0]["feature_cache"]["key"]
    assert report.feature_cache == {"computed": 1, "reused": 1}
    # the best against the runner-up, paired on their folds
    ranked = sorted(means, key=lambda n: (-means[n], n))
    assert (report.comparison["best"], report.comparison["runner_up"]) == tuple(ranked[:2])
    diffs = [a - b for a, b in zip(*(_scores(out / "trials" / str(n)) for n in ranked[:2]))]
    assert report.comparison["fold_diffs"] == pytest.approx(diffs)
    # the report on disk
    text = (out / "search_report.md").read_text()
    assert "| 2 | pruned | – |" in text and "2 saved" in text
    assert (out / "plots" / "search_history.png").stat().st_size > 1000
    assert SearchReport.load(out).to_dict() == report.to_dict()
    # in the winner's card: the report under "Study", its headings one level down, without the search's plots
    winner = CVResults.load(out / "trials" / str(report.best["run"]))
    card = str(build_model_card(winner, CVCardData(study_report=report.card_section()), winner.directory))
    assert "## Study\n\n## Hyperparameter search on cross-validation" in card and "\n### Best trial\n" in card
    assert "| 2 | pruned | – |" in card and "search_history.png" not in card


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial at its first report: pruning's bookkeeping, whatever the scores."""

    def __init__(self, number: int):
        self.number = number

    def prune(self, study, trial) -> bool:
        return trial.number == self.number


def _scores(run_dir: Path) -> list[float]:
    paths = sorted(run_dir.glob("fold_*/fold_result.json"))
    return [json.loads(p.read_text())["eval_metrics"]["accuracy"] for p in paths]


def _study_rows(out: Path) -> list[tuple]:
    study = optuna.load_study(storage=f"sqlite:///{out / 'search.db'}", study_name="hf_tlcv")
    return [(t.state.name, t.params, t.value) for t in study.get_trials() if t.state.name != "FAIL"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_search_killed_mid_trial_resumes_to_the_trials_of_an_uninterrupted_one(tmp_path, monkeypatch):
    search_run = _search_run()
    # the reference: the same search, uninterrupted
    reference = search_run.search(search_run.make_trainer(tmp_path / "reference"))
    ref_rows = _study_rows(tmp_path / "reference")
    states = [r[0] for r in ref_rows]
    assert len(ref_rows) == search_run.N_TRIALS and "PRUNED" in states  # fold-level pruning stopped some trials
    # a complete trial late enough that others finished (and some were pruned) before it: killed in its 2nd fold
    victim = max(i for i, s in enumerate(states) if s == "COMPLETE" and i >= 2)
    out, ready = tmp_path / "killed", tmp_path / "ready"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--output_dir", str(out), "--pause_at",
                             f"trials/{victim}/fold_0_1", "--ready", str(ready)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 1200
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert ready.exists(), proc.communicate()[0].decode()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_fold = out / "trials" / str(victim) / "fold_0_0" / "fold_result.json"
    assert first_fold.exists() and not (out / "trials" / str(victim) / "fold_0_1" / "fold_result.json").exists()
    before = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/fold_*/fold_result.json")}
    # resume in this process: only the missing folds train
    trained = []
    real_run_fold = hf_tlcv.trainer.run_fold
    monkeypatch.setattr(hf_tlcv.trainer, "run_fold", lambda job: trained.append(job.fold_dir) or real_run_fold(job))
    resumed = search_run.search(search_run.make_trainer(out))
    expected = reference.run_summary.pruning["fold_trainings"] - len(before)
    assert len(trained) == expected
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in before.items())  # the killed trial's fold 0 reused
    # the same trials (parameters, states, values) as the uninterrupted search, and the same best
    rows = _study_rows(out)
    assert [(s, p) for s, p, _ in rows] == [(s, p) for s, p, _ in ref_rows]
    assert [v for *_, v in rows] == pytest.approx([v for *_, v in ref_rows], nan_ok=True)
    assert resumed.hyperparameters == reference.hyperparameters
    assert resumed.objective == pytest.approx(reference.objective)
    # and the same trial numbers: rows, folders and the best's (the killed attempt shown apart, as interrupted)
    def numbered(report):
        return [(r["trial"], r["run"], r["state"]) for r in report.trials if r["state"] != "interrupted"]

    assert numbered(resumed.run_summary) == numbered(reference.run_summary) and resumed.run_id == reference.run_id
    assert sorted(int(p.name) for p in (out / "trials").iterdir()) == list(range(search_run.N_TRIALS))
    retried = next(r for r in resumed.run_summary.trials if r["retry_of"] is not None)
    assert retried["retry_of"] == victim and retried["run"] == victim and retried["state"] == "complete"
    # complete: the same call returns the same best trial without training anything
    monkeypatch.setattr(hf_tlcv.trainer, "run_fold", _no_training)
    again = search_run.search(search_run.make_trainer(out))
    assert (again.run_id, again.objective, again.hyperparameters) == (resumed.run_id, resumed.objective,
                                                                      resumed.hyperparameters)


class RowsSeen(TrainerCallback):
    """The rows each fold of each run trained on and predicted, read from the tensors themselves: every image carries
    its row id in its first pixel (see `_marked_dataset`)."""

    def __init__(self):
        self.trained: dict[str, set] = {}
        self.predicted: dict[str, set] = {}

    @staticmethod
    def _ids(dataloader) -> set:
        pixels = np.asarray(dataloader.dataset.with_format("numpy")["pixel_values"])
        return {int(round(float(v))) for v in pixels[:, 0, 0, 0]}

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.trained.setdefault(args.output_dir, set()).update(self._ids(train_dataloader))

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        self.predicted.setdefault(args.output_dir, set()).update(self._ids(eval_dataloader))


def _marked_dataset():
    dataset = image_dataset(n_per_class=8)
    pixels = np.asarray(dataset.with_format("numpy")["pixel_values"], dtype=np.float32)
    pixels[:, 0, 0, 0] = 1000 + np.arange(len(pixels))
    return dataset.map(lambda row, i: {"pixel_values": pixels[i]}, with_indices=True).with_format("torch")


@pytest.mark.slow
def test_a_nested_search_never_lets_a_trial_see_its_outer_eval_rows(tmp_path):
    out = tmp_path / "nested"
    rows = RowsSeen()
    args = make_config(out, n_folds=2, num_train_epochs=1, finetune_strategy="full")
    trainer = KFoldTrainer(tiny_model("vit"), args, train_dataset=_marked_dataset(), callbacks=[rows])
    space = functools.partial(default_hp_space, n_blocks=None, strategies=("full",), layerwise_lr_decay=None,
                              num_train_epochs=(1, 1))
    best = trainer.hyperparameter_search(hp_space=space, n_trials=2, nested=True, inner_folds=2)
    nested = best.run_summary.nested
    outer_folds, _ = load_folds(out / "folds.json")
    assert [r["fold"] for r in nested["outer_folds"]] == [f.name for f in outer_folds]
    for fold, row in zip(outer_folds, nested["outer_folds"]):
        outer_eval = {1000 + int(i) for i in fold.eval_indices}
        outer_train = {1000 + int(i) for i in fold.train_indices}
        inner = [d for d in rows.trained if f"/nested/{fold.name}/trials/" in d]
        assert len(inner) == 2 * 2  # 2 trials x 2 inner folds, all recorded
        for fold_dir in inner:  # what every inner trial trained on and predicted: outer-train rows only
            assert rows.trained[fold_dir] <= outer_train and not rows.trained[fold_dir] & outer_eval
            assert rows.predicted[fold_dir] <= outer_train
        # the recorded row sets say the same
        record = json.loads((out / "nested" / fold.name / "rows.json").read_text())
        assert record["isolated"] and all(not set(r) & set(fold.eval_indices.tolist())
                                          for r in record["trials"].values())
        # the winner trained on the outer-train rows and was scored on the outer-eval rows
        winner = str(out / "nested" / fold.name / "winner" / fold.name)
        assert rows.trained[winner] == outer_train and rows.predicted[winner] >= outer_eval
        result = json.loads((Path(winner) / "fold_result.json").read_text())
        assert row["outer_score"] == pytest.approx(result["eval_metrics"]["accuracy"])
        inner_best = optuna.load_study(storage=f"sqlite:///{out / 'search.db'}",
                                       study_name=f"hf_tlcv/nested/{fold.name}").best_value
        assert row["inner_best"] == pytest.approx(inner_best)
    scores = [r["outer_score"] for r in nested["outer_folds"]]
    assert nested["estimate"]["mean"] == pytest.approx(np.mean(scores))
    assert nested["optimism"] == pytest.approx(best.objective - np.mean(scores))
    assert "## Nested search" in (out / "search_report.md").read_text()


# ---- the recipes ---------------------------------------------------------------------------------------------------
def test_the_text_recipe_takes_the_tuning_options():
    from conftest import load_recipe

    script_args, config = load_recipe("text_kfold").make_parser().parse_args_into_dataclasses(args=[
        "--tune", "30", "--tune_backend", "ray", "--tune_nested", "true", "--tune_inner_folds", "4",
        "--tune_storage", "journal", "--tune_strategies", "linear_probe,lora"])
    assert (script_args.tune, script_args.tune_backend, script_args.tune_nested, script_args.tune_inner_folds) == (
        30, "ray", True, 4)
    assert script_args.tune_storage == "journal" and config.finetune_strategy == "linear_probe"


@pytest.mark.slow
def test_the_image_recipe_tunes_a_real_model_on_the_folds(tmp_path, capsys):
    from conftest import load_recipe

    recipe = load_recipe("vit_kfold")
    out = tmp_path / "tune"
    common = ["--dataset_name", "builtin:digits", "--max_samples", "60", "--n_folds", "2", "--image_size", "32",
              "--disable_tqdm", "true", "--tune", "3", "--tune_pruner", "none"]
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(
        args=[*common, "--output_dir", str(out), "--tune_strategies", "linear_probe,freeze"])
    best = recipe.main(script_args, config)
    printed = capsys.readouterr().out
    assert "each a 2-fold cross-validation on the same folds" in printed and f"Best: trial {best.run_id}" in printed
    report = json.loads((out / "search_report.json").read_text())
    assert [r["state"] for r in report["trials"]] == ["complete"] * 3
    for r in report["trials"]:  # the default space, bounded by EfficientNet-Lite0's 16 blocks
        assert r["settings"]["finetune_strategy"] in ("linear_probe", "freeze")
        assert 0 <= r["settings"]["freeze_layers"] <= 15
        assert (r["settings"]["freeze_layers"] > 0) == (r["settings"]["finetune_strategy"] == "freeze")
    assert best.objective == max(r["value"] for r in report["trials"])
    script_args, config = recipe.make_parser().parse_args_into_dataclasses(
        args=[*common, "--output_dir", str(tmp_path / "bad"), "--tune_strategies", "linear_probe,frozen"])
    with pytest.raises(ValueError, match="--tune_strategies must list strategies among"):
        recipe.main(script_args, config)


# ---- trial numbers across a resume, the default pruner's start-up, what pruning saved ------------------------------
@pytest.mark.parametrize("n_trials, startup", [(1, 1), (3, 1), (5, 1), (8, 2), (12, 3), (20, 5), (100, 5)])
def test_the_default_pruner_can_prune_in_a_small_search(n_trials, startup):
    from hf_tlcv.search.run import default_pruner, describe_pruner, startup_trials

    assert startup_trials(n_trials) == startup
    pruner = default_pruner(n_trials)
    assert isinstance(pruner, optuna.pruners.MedianPruner) and startup_trials(n_trials) == startup
    assert describe_pruner(pruner) == f"MedianPruner(n_startup_trials={startup}, n_warmup_steps=0)"
    assert n_trials < 4 or startup <= n_trials // 4  # three quarters of the budget can be pruned


def test_a_retry_keeps_its_trial_number_and_the_next_trials_theirs(tmp_path):
    from hf_tlcv.search.run import retry_trial, trial_run

    study = open_study(make_storage(None, tmp_path), "s", "maximize")
    for i in range(2):  # trials 0 and 1; trial 1 interrupted before recording its number
        trial = study.ask()
        _space(trial)
        if i == 0:
            trial.set_user_attr(RUN_ATTR, trial_run(study, trial))
            study.tell(trial, 0.5)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    retry_trial(study, study.get_trials()[1])  # optuna's trial 2, the retry of 1
    retry, fresh = study.ask(), study.ask()  # the retry runs first; optuna's trial 3 is the third trial users see
    runs = {t.number: trial_run(study, t) for t in study.get_trials()}
    assert runs == {0: 0, 1: 1, 2: 1, 3: 2}
    assert (retry.number, trial_run(study, retry), fresh.number, trial_run(study, fresh)) == (2, 1, 3, 2)


class InterruptAt(TrainerCallback):
    """Ctrl-C (a KeyboardInterrupt) once, when the fold whose folder ends with `suffix` starts training."""

    def __init__(self, suffix: str):
        self.suffix, self.fired = suffix, False

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.fired and args.output_dir.endswith(self.suffix):
            self.fired = True
            raise KeyboardInterrupt


def _probe_space(trial):
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True),
            "finetune_strategy": "linear_probe"}


def _small_search(out, callbacks=(), n_trials=3, config=None, **kwargs):
    args = make_config(out, n_folds=2, num_train_epochs=1, eval_on_train=False, **(config or {}))
    trainer = KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset(n_per_class=8),
                           callbacks=list(callbacks))
    return trainer.hyperparameter_search(hp_space=kwargs.pop("hp_space", _probe_space), n_trials=n_trials, **kwargs)


def test_an_interrupted_and_resumed_search_numbers_its_trials_as_an_uninterrupted_one(tmp_path):
    nop = optuna.pruners.NopPruner()
    reference = _small_search(tmp_path / "reference", pruner=nop)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in trial 1's second fold
        _small_search(out, [InterruptAt("trials/1/fold_0_1")], pruner=nop)
    resumed = _small_search(out, pruner=nop)

    def seen(report):
        return [(r["trial"], r["state"], r["run"], len(r["fold_scores"]), r["params"]) for r in report.trials
                if r["state"] != "interrupted"]

    ref, res = reference.run_summary, resumed.run_summary
    assert seen(res) == seen(ref) and [r["trial"] for r in ref.trials] == [0, 1, 2]
    assert [r["value"] for r in res.trials if r["state"] == "complete"] == pytest.approx(
        [r["value"] for r in ref.trials if r["state"] == "complete"])
    assert (resumed.run_id, resumed.hyperparameters) == (reference.run_id, reference.hyperparameters)
    assert res.best["trial"] == ref.best["trial"] == int(resumed.run_id)
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1", "2"]
    # the interrupted attempt as what it was: trial 1 with its one finished fold, retried as trial 1 (optuna's 2);
    # the trial after it is trial 2 in its folder trials/2, though optuna counts it as its fourth attempt
    (attempt,) = [r for r in res.trials if r["state"] == "interrupted"]
    assert (attempt["trial"], attempt["study_trial"], len(attempt["fold_scores"])) == (1, 1, 1)
    retry = next(r for r in res.trials if r["retry_of"] is not None)
    assert (retry["trial"], retry["study_trial"], retry["state"]) == (1, 2, "complete")
    assert [(r["trial"], r["study_trial"]) for r in res.trials][-1] == (2, 3)
    table = res.trial_table
    assert table["folds"].tolist() == [2, 1, 2, 2] and table["trial"].tolist() == [0, 1, 1, 2]
    text = (out / "search_report.md").read_text()
    assert "| 1 | interrupted, retried as trial 1 | – | – | 1/2 |" in text
    assert f"Trial {resumed.run_id}:" in text


def test_the_default_pruner_prunes_a_five_trial_search_and_the_report_says_what_it_saved(tmp_path):
    out = tmp_path / "search"
    out.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{out / 'search.db'}", study_name="hf_tlcv", direction="minimize")
    # The objective is the loss: a linear probe that barely moves from its start, then four whose learning rate
    # throws the head far off (confidently wrong: a loss far above the first trial's after their first fold).
    for lr in (1e-8, 20.0, 20.0, 20.0, 20.0):
        study.enqueue_trial({"learning_rate": lr})
    space = lambda t: {"learning_rate": t.suggest_float("learning_rate", 1e-9, 50.0, log=True),  # noqa: E731
                       "finetune_strategy": "linear_probe"}
    report: SearchReport = _small_search(out, n_trials=5, hp_space=space,
                                         config={"metric_for_best_model": "loss"}).run_summary
    assert report.pruning["pruner"].startswith("MedianPruner(n_startup_trials=1,")
    assert report.direction == "minimize" and report.trials[0]["state"] == "complete"
    assert report.pruning["n_pruned"] == 4  # Optuna's default (5 start-up trials) would prune none of 5
    # what pruning saved, recomputed from the trial folders
    trained = len(list(out.glob("trials/*/fold_*/fold_result.json")))
    assert report.pruning["fold_trainings"] == trained and report.pruning["fold_trainings_unpruned"] == 5 * 2
    assert report.pruning["fold_trainings_saved"] == 10 - trained == 4
    assert f"{trained} fold trainings instead of the 10 a search without pruning" in report.to_markdown()
    # saved and read back; a report written before the pruner was recorded still reads and says what was saved
    assert SearchReport.load(out).pruning == report.pruning
    old = json.loads((out / "search_report.json").read_text())
    del old["pruning"]["pruner"]
    for r in old["trials"]:
        del r["study_trial"]
    (out / "search_report.json").write_text(json.dumps(old))
    assert f"({10 - trained} saved" in SearchReport.load(out).to_markdown()
