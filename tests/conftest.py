"""Tiny models built from configs, tiny learnable datasets, a KFoldConfig sized for tests, and the test tiers.

Tiers, gated by environment variables as transformers gates `RUN_SLOW`:
- unmarked (the fast tier, `make test-fast`): pure functions and tiny models in this process; no subprocess, browser,
  Gradio app or embedded real model. Always runs.
- `@pytest.mark.integration`: one-process recipes and subprocesses, the embedded real models, optional backends
  (Optuna, cleanlab) on tiny runs, the Space's functions without a browser. Runs with `RUN_INTEGRATION=1`.
- `@pytest.mark.slow`: several processes (DDP, workers, Ray), the browser, kill/interrupt/resume end to end. Runs with
  `RUN_SLOW=1`, which also runs the integration tier. `make test` (CI) sets both.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers as tf  # noqa: E402
from datasets import ClassLabel, Dataset, Features, Sequence, Value  # noqa: E402

from hf_tlcv import KFoldConfig  # noqa: E402

N_CLASSES = 3
IMAGE_SIZE = 32

# name -> (config factory, model class, input kind)
TINY_MODELS = {
    "vit": (lambda n: tf.ViTConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=32, num_labels=n),
            tf.ViTForImageClassification, "image"),
    "bert": (lambda n: tf.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, num_labels=n),
             tf.BertForSequenceClassification, "text"),
    "efficientnet": (lambda n: tf.EfficientNetConfig(image_size=IMAGE_SIZE, width_coefficient=0.1,
                                                     depth_coefficient=0.1, hidden_dim=128, num_labels=n),
                     tf.EfficientNetForImageClassification, "image"),
    "convnext": (lambda n: tf.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=n),
                 tf.ConvNextForImageClassification, "image"),
    "resnet": (lambda n: tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                         layer_type="basic", num_labels=n),
               tf.ResNetForImageClassification, "image"),
}


RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def load_script(path: str | Path, name: str):
    """A script of the repository (a recipe, a benchmark, a test script) imported as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@functools.cache
def load_recipe(name: str):
    """`recipes/<name>.py` imported as module `<name>` (once per test session)."""
    return load_script(RECIPES_DIR / f"{name}.py", name)


def tiny_model(name: str, num_labels: int = N_CLASSES, seed: int = 0):
    config_fn, cls, _ = TINY_MODELS[name]
    torch.manual_seed(seed)
    return cls(config_fn(num_labels))


def image_dataset(n_per_class: int = 12, seed: int = 0) -> Dataset:
    """pixel_values whose mean depends on the class: learnable in a few steps, not trivially."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), n_per_class)
    rng.shuffle(labels)
    pixels = rng.normal(size=(len(labels), 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    pixels += labels[:, None, None, None].astype(np.float32) * 0.8
    features = Features({
        "pixel_values": Sequence(Sequence(Sequence(Value("float32")))),
        "label": ClassLabel(names=[f"c{i}" for i in range(N_CLASSES)]),
    })
    return Dataset.from_dict({"pixel_values": pixels, "label": labels}, features=features).with_format("torch")


def text_dataset(n_per_class: int = 12, seed: int = 0, length: int = 8) -> Dataset:
    """Token sequences whose tokens come from a class-specific range."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), n_per_class)
    rng.shuffle(labels)
    ids = np.stack([rng.integers(5 + 15 * c, 20 + 15 * c, size=length) for c in labels])
    features = Features({
        "input_ids": Sequence(Value("int64")),
        "attention_mask": Sequence(Value("int64")),
        "label": ClassLabel(names=[f"c{i}" for i in range(N_CLASSES)]),
    })
    return Dataset.from_dict({"input_ids": ids, "attention_mask": np.ones_like(ids), "label": labels},
                             features=features)


def dataset_for(name: str, **kwargs) -> Dataset:
    return text_dataset(**kwargs) if TINY_MODELS[name][2] == "text" else image_dataset(**kwargs)


def make_config(output_dir, **overrides) -> KFoldConfig:
    settings = dict(
        output_dir=str(output_dir), n_folds=3, num_train_epochs=2, per_device_train_batch_size=8,
        per_device_eval_batch_size=16, learning_rate=5e-3, report_to="none", disable_tqdm=True, use_cpu=True,
        save_strategy="no", logging_steps=2, seed=0, save_fold_models=False,
    )
    settings.update(overrides)
    return KFoldConfig(**settings)


CV_RUN = Path(__file__).resolve().parent / "scripts" / "cv_run.py"


def subprocess_env() -> dict:
    """The environment of a run the tests start in its own process: one thread, offline, unbuffered output."""
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="session")
def one_process_cv_run(tmp_path_factory) -> dict:
    """The digest of `tests/scripts/cv_run.py` with its defaults in one plain process (see that script): the
    reference that a run killed and resumed, or split over processes, must reproduce. Run once per session; the tests
    only read it."""
    out = tmp_path_factory.mktemp("one_process_cv_run")
    proc = subprocess.run([sys.executable, str(CV_RUN), "--output_dir", str(out / "cv"), "--digest_dir",
                           str(out / "digest")], cwd=CV_RUN.parents[2], env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "digest" / "rank_0.json").read_text())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def pytest_collection_modifyitems(config, items):
    run_slow = _env_flag("RUN_SLOW")
    run_integration = run_slow or _env_flag("RUN_INTEGRATION")
    skip_slow = pytest.mark.skip(reason="slow tier: set RUN_SLOW=1 (make test) to run it")
    skip_integration = pytest.mark.skip(reason="integration tier: set RUN_INTEGRATION=1 or RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        elif "integration" in item.keywords and not run_integration:
            item.add_marker(skip_integration)


@pytest.fixture
def tiny_image_data():
    return image_dataset()


@pytest.fixture
def tiny_text_data():
    return text_dataset()


# The browser tests' visitors (tests/space_harness.py): one headless Chromium per module, and a new visitor's page on
# the module's app (its `space` fixture), the built-in data previewed; they leave at the end of the test.
@pytest.fixture(scope="module")
def browser():
    from space_harness import chromium

    with chromium() as chrome:
        yield chrome


@pytest.fixture
def visitor(browser, space):
    from space_harness import open_visitor

    page = open_visitor(browser, space.url)
    yield page
    page.close()


# A local Hub for tests that push and download (tests/hub_server.py).
from hub_server import local_hub  # noqa: E402,F401


def oof_cross_entropy(predictions) -> dict[tuple[int, int], float]:
    """Per fold, the cross-entropy of the saved out-of-fold probabilities: -mean log p(label), in float64. An
    independent recomputation of each fold's reported eval loss."""
    out = {}
    for (repeat, fold), rows in predictions.groupby(["repeat", "fold"]):
        probs = rows.filter(like="prob_").to_numpy(dtype=np.float64)
        picked = probs[np.arange(len(rows)), rows["label"].to_numpy()]
        out[(int(repeat), int(fold))] = float(-np.mean(np.log(picked)))
    return out
