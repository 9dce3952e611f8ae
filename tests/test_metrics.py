"""Shipped evaluate metrics (offline) and the compute_metrics factory."""

import os
import socket
import textwrap
import warnings

import evaluate
import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from transformers import EvalPrediction

import hf_tlcv.metrics as metrics_module
from hf_tlcv.metrics import BUILTIN_METRICS, build_compute_metrics, builtin_metric_path, load_metric

SKLEARN = {"precision": precision_score, "recall": recall_score, "f1": f1_score}


def block_network(monkeypatch):
    """Make every attempt to open a connection fail, and record it."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a, **k))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def no_network(monkeypatch):
    """HF_HUB_OFFLINE=1 plus a socket guard: the test fails if anything still tries to connect."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = block_network(monkeypatch)
    yield attempts
    assert attempts == [], f"network was used: {attempts}"


def test_network_guard_sees_hub_lookups(monkeypatch):
    # The guard is worth something only if a Hub load trips it: evaluate.load("accuracy") looks the name
    # up on the Hub (even with HF_HUB_OFFLINE=1), which is exactly what load_metric must avoid.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(os.path.dirname(__file__))  # no ./accuracy folder here to shadow the name
    attempts = block_network(monkeypatch)
    try:
        evaluate.load("accuracy")
    except Exception:  # fails here; a machine with a cached Hub copy may fall back to it
        pass
    assert attempts


@pytest.fixture(scope="module")
def builtin():
    return {name: load_metric(name, keep_in_memory=True) for name in BUILTIN_METRICS}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    references = rng.integers(0, 4, size=300)
    # correlated with the references so the scores are not all near chance
    predictions = np.where(rng.random(300) < 0.6, references, rng.integers(0, 4, size=300))
    return predictions, references


# ----------------------------------------------------------------------------------------------------
# The shipped modules


@pytest.mark.parametrize("name", BUILTIN_METRICS)
def test_builtin_metrics_load_without_network(name, no_network):
    path = builtin_metric_path(name)
    assert os.path.isabs(path) and os.path.isfile(os.path.join(path, f"{name}.py"))
    for module in (load_metric(name), evaluate.load(path)):
        assert isinstance(module, evaluate.Metric)
        assert module.name == name
    result = load_metric(name).compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    assert set(result) == {name} and type(result[name]) is float


@pytest.mark.parametrize("name", BUILTIN_METRICS)
def test_metric_scripts_have_one_import_per_line(name):
    # evaluate's import scanner misreads "import a, b".
    with open(os.path.join(builtin_metric_path(name), f"{name}.py"), encoding="utf-8") as f:
        imports = [line for line in f if line.startswith("import ")]
    assert imports and not any("," in line for line in imports)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_averaged_metrics_agree_with_sklearn(name, average, builtin, data):
    predictions, references = data
    result = builtin[name].compute(predictions=predictions, references=references, average=average)
    assert type(result[name]) is float
    assert result[name] == pytest.approx(SKLEARN[name](references, predictions, average=average), abs=1e-12)


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_per_class_scores_are_lists_of_floats(name, builtin, data):
    predictions, references = data
    result = builtin[name].compute(predictions=predictions, references=references, average=None, labels=[3, 1])
    assert isinstance(result[name], list) and all(type(x) is float for x in result[name])
    expected = SKLEARN[name](references, predictions, average=None, labels=[3, 1])
    np.testing.assert_allclose(result[name], expected, atol=1e-12)


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_binary_options_are_passed_through(name, builtin):
    rng = np.random.default_rng(1)
    references = rng.integers(0, 2, size=100)
    predictions = rng.integers(0, 2, size=100)
    weights = rng.random(100)
    for kwargs in ({}, {"pos_label": 0}, {"sample_weight": weights}):
        result = builtin[name].compute(predictions=predictions, references=references, **kwargs)
        assert result[name] == pytest.approx(SKLEARN[name](references, predictions, **kwargs), abs=1e-12)


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_zero_division_is_passed_through(name, builtin):
    # Class 2 is never predicted (precision 0/0), class 3 never present (recall 0/0), class 4 neither (f1 0/0).
    references, predictions = [0, 1, 2, 1, 2], [0, 1, 0, 1, 3]
    kwargs = {"predictions": predictions, "references": references, "average": "macro", "labels": [0, 1, 2, 3, 4]}
    scores = {}
    for zero_division in (0, 1):
        scores[zero_division] = builtin[name].compute(**kwargs, zero_division=zero_division)[name]
        expected = SKLEARN[name](
            references, predictions, average="macro", labels=kwargs["labels"], zero_division=zero_division
        )
        assert scores[zero_division] == pytest.approx(expected), zero_division
    assert scores[0] < scores[1]


def test_accuracy_options_agree_with_sklearn(builtin, data):
    predictions, references = data
    weights = np.linspace(0.1, 1.0, len(references))
    assert builtin["accuracy"].compute(predictions=predictions, references=references)["accuracy"] == pytest.approx(
        accuracy_score(references, predictions)
    )
    count = builtin["accuracy"].compute(predictions=predictions, references=references, normalize=False)["accuracy"]
    assert count == float(np.sum(predictions == references))
    weighted = builtin["accuracy"].compute(predictions=predictions, references=references, sample_weight=weights)
    assert weighted["accuracy"] == pytest.approx(accuracy_score(references, predictions, sample_weight=weights))


# ----------------------------------------------------------------------------------------------------
# load_metric routing


def test_other_names_go_to_evaluate_load_unchanged(monkeypatch):
    calls = []
    monkeypatch.setattr(evaluate, "load", lambda path, **kwargs: calls.append((path, kwargs)) or path)
    load_metric("matthews_correlation", config_name="default")
    load_metric("./my_metrics/custom")
    load_metric("f1", keep_in_memory=True)
    assert calls[0] == ("matthews_correlation", {"config_name": "default"})
    assert calls[1] == ("./my_metrics/custom", {})
    assert calls[2] == (builtin_metric_path("f1"), {"keep_in_memory": True}) and os.path.isabs(calls[2][0])


ERROR_RATE = '''
import datasets
import evaluate
import numpy as np


class ErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of wrong predictions, and their count.",
            citation="",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        wrong = np.asarray(predictions) != np.asarray(references)
        return {"error_rate": np.float32(wrong.mean()), "n_errors": np.int64(wrong.sum())}
'''


@pytest.fixture
def error_rate_path(tmp_path):
    folder = tmp_path / "error_rate"
    folder.mkdir()
    (folder / "error_rate.py").write_text(textwrap.dedent(ERROR_RATE))
    return str(folder)


def test_local_metric_by_path_is_loaded_the_normal_way(error_rate_path, no_network):
    module = load_metric(error_rate_path)
    assert isinstance(module, evaluate.Metric) and module.name == "error_rate"

    compute_metrics = build_compute_metrics(("accuracy", error_rate_path))
    logits = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    labels = np.array([0, 1, 1, 1, 0])  # argmax 0, 1, 0, 1, 1 -> 3 right, 2 wrong
    result = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert result == pytest.approx({"accuracy": 0.6, "error_rate": 0.4, "n_errors": 2.0})
    assert all(type(v) is float for v in result.values())


# ----------------------------------------------------------------------------------------------------
# build_compute_metrics


@pytest.fixture(scope="module")
def macro_metrics():
    return build_compute_metrics()


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_compute_metrics_on_logits(average, no_network):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(120, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=120)
    result = build_compute_metrics(average=average)(EvalPrediction(predictions=logits, label_ids=labels))

    class_ids = logits.argmax(-1)
    assert set(result) == {"accuracy", "precision", "recall", "f1"}
    assert all(type(v) is float for v in result.values())
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, class_ids))
    for name, score in SKLEARN.items():
        assert result[name] == pytest.approx(score(labels, class_ids, average=average, zero_division=0)), name


def test_binary_problems_use_the_configured_average(macro_metrics):
    labels = np.array([0, 0, 0, 0, 1, 1])
    class_ids = np.array([0, 0, 1, 1, 1, 0])
    result = macro_metrics(EvalPrediction(predictions=class_ids, label_ids=labels))  # 1-D: already class ids
    macro = f1_score(labels, class_ids, average="macro")
    assert macro != pytest.approx(f1_score(labels, class_ids))  # the case distinguishes macro from binary
    assert result["f1"] == pytest.approx(macro)
    assert result["accuracy"] == pytest.approx(3 / 6)


def test_extra_model_outputs_and_tuples_are_accepted(macro_metrics):
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    hidden = np.zeros((3, 5, 8))
    labels = np.array([0, 1, 1])
    from_tuple = macro_metrics((logits, labels))
    from_outputs = macro_metrics(EvalPrediction(predictions=(logits, hidden), label_ids=labels))
    assert from_tuple == from_outputs
    assert from_tuple["accuracy"] == pytest.approx(2 / 3)


def test_unpredicted_class_scores_zero_without_warning(macro_metrics):
    labels = np.array([0, 1, 2, 2])
    class_ids = np.array([0, 1, 1, 1])  # class 2 never predicted: its precision is 0/0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        result = macro_metrics(EvalPrediction(predictions=class_ids, label_ids=labels))
    assert result["precision"] == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_modules_are_loaded_once(monkeypatch):
    loads = []
    real = metrics_module.load_metric
    monkeypatch.setattr(metrics_module, "load_metric", lambda name, **kw: loads.append(name) or real(name, **kw))
    compute_metrics = build_compute_metrics(("accuracy", "f1"))
    for _ in range(3):
        compute_metrics(EvalPrediction(predictions=np.array([0, 1]), label_ids=np.array([0, 1])))
    assert loads == ["accuracy", "f1"]


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"average": None}, "average=None"),
        ({"average": "samples"}, "'macro'"),
        ({"metric_names": ()}, "at least one"),
        ({"metric_names": ("f1", "accuracy", "f1")}, "more than once"),
    ],
)
def test_bad_factory_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_compute_metrics(**kwargs)


@pytest.mark.parametrize(
    "predictions, word",
    [
        (np.array([[0.3], [0.9], [0.1]]), "single column"),
        (np.array([0.3, 0.9, 0.1]), "non-integer"),
        (np.zeros((2, 2)), "2 predictions for 3 labels"),
    ],
)
def test_bad_predictions(macro_metrics, predictions, word):
    with pytest.raises(ValueError, match=word):
        macro_metrics(EvalPrediction(predictions=predictions, label_ids=np.array([0, 1, 1])))


def test_colliding_metric_keys_are_reported(tmp_path, error_rate_path):
    folder = tmp_path / "my_accuracy"
    folder.mkdir()
    script = textwrap.dedent(ERROR_RATE).replace('"error_rate"', '"accuracy"')
    (folder / "my_accuracy.py").write_text(script)
    compute_metrics = build_compute_metrics(("accuracy", str(folder)))
    with pytest.raises(ValueError, match="both return 'accuracy'"):
        compute_metrics(EvalPrediction(predictions=np.array([0, 1]), label_ids=np.array([0, 1])))
