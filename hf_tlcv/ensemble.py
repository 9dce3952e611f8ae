"""`KFoldEnsemble`: the fold models of a cross-validation run, used together as one classifier."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .fold_models import FOLD_MODEL_INFO, load_fold_model, read_fold_model_info
from .run_dir import FOLD_DIR_GLOB, FOLD_MODEL_DIR, FOLD_PREDICTIONS_FILE, RESULTS_FILE, read_json
from .utils import softmax


@dataclass
class EnsemblePrediction:
    """What [`KFoldEnsemble.predict`] returns.

    Attributes:
        probabilities: `(n, n_classes)` mean of the fold models' class probabilities.
        predictions: `(n,)` class index of the highest mean probability.
        labels: class names of `predictions` (indices as strings when the run had no class names).
        fold_probabilities: `(n_folds, n, n_classes)` each fold model's probabilities.
        votes: `(n_folds, n)` each fold model's predicted class.
        fold_names: `fold_{repeat}_{fold}` of each fold model, in the order of the first axis above.
    """

    probabilities: np.ndarray
    predictions: np.ndarray
    labels: list[str]
    fold_probabilities: np.ndarray
    votes: np.ndarray
    fold_names: list[str]

    @property
    def agreement(self) -> np.ndarray:
        """`(n,)` share of fold models voting for the ensemble's prediction."""
        return (self.votes == self.predictions[None, :]).mean(axis=0)


class KFoldEnsemble:
    r"""
    The k fold models of a cross-validation run as one classifier: class probabilities are averaged over folds.

    Each fold model is rebuilt as the pretrained base model (loaded once, from `model_name_or_path` in
    `cv_results.json`) plus the part the fold saved: a LoRA adapter, the trained parameters of `freeze` /
    `linear_probe`, or full weights. Inputs are preprocessed with the run's settings (`image_size`,
    `max_length`) through the base model's processor, as during cross-validation.

    Args:
        models: the fold models, in eval mode.
        fold_names: their `fold_{repeat}_{fold}` names.
        processing_class: image processor or tokenizer for raw inputs (`None`: only model inputs accepted).
        config: the run's configuration record (`cv_results.json`'s `config`).
        label_names: class names.

    Example:
    ```python
    >>> from hf_tlcv import KFoldEnsemble
    >>> ensemble = KFoldEnsemble.from_pretrained("outputs/vit_kfold")   # or a Hub repo id
    >>> out = ensemble.predict(images)                                   # PIL images, texts or a datasets.Dataset
    >>> out.labels[:3], out.votes.shape

    ```
    """

    def __init__(self, models: list[nn.Module], fold_names: list[str], processing_class=None,
                 config: dict | None = None, label_names: list[str] | None = None):
        if not models:
            raise ValueError("KFoldEnsemble needs at least one fold model.")
        self.models = [m.eval() for m in models]
        self.fold_names = list(fold_names)
        self.processing_class = processing_class
        self.config = dict(config or {})
        self.label_names = label_names

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        base = self.config.get("model_name_or_path")
        return f"KFoldEnsemble({len(self)} folds of {base or 'a built model'}, {self.config.get('finetune_strategy')})"

    # ---- loading -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, repo_id_or_path: str | os.PathLike, *, revision: str | None = None,
                        token: str | None = None, folds: list[str] | None = None,
                        device: str | torch.device | None = None) -> "KFoldEnsemble":
        """Load the fold models of a run from its local `output_dir` or from a Hub repository.

        Args:
            repo_id_or_path: a local directory (a run's `output_dir` or a downloaded repo) or a Hub repo id.
            revision, token: for a Hub repo (`token=None`: `HF_TOKEN` or the login cache).
            folds: load only these fold folders (e.g. `["fold_0_0"]`); default: every fold with a saved model.
            device: where the models run (default: CPU).

        Raises:
            FileNotFoundError: no `cv_results.json`, or no fold has a saved model (run with `save_fold_models=True`
                and `push_fold_models` other than `"none"`).
        """
        directory = Path(repo_id_or_path)
        if not directory.is_dir():
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(str(repo_id_or_path), revision=revision, token=token))
        results_path = directory / RESULTS_FILE
        if not results_path.exists():
            raise FileNotFoundError(f"No {RESULTS_FILE} in {repo_id_or_path}: KFoldEnsemble loads the output_dir of a "
                                    "finished cross-validation run, or a Hub repository pushed by hf_tlcv.")
        saved = read_json(results_path)
        config, label_names = saved.get("config", {}), saved.get("label_names")
        fold_dirs = sorted(p for p in directory.glob(FOLD_DIR_GLOB) if (p / FOLD_MODEL_DIR / FOLD_MODEL_INFO).exists())
        if folds is not None:
            fold_dirs = [p for p in fold_dirs if p.name in set(folds)]
        if not fold_dirs:
            raise FileNotFoundError(
                f"{repo_id_or_path} holds no fold models (fold_*/{FOLD_MODEL_DIR}/{FOLD_MODEL_INFO}): the run was "
                "made with save_fold_models=False or pushed with push_fold_models='none'. Run it again with fold "
                "models saved to build an ensemble."
            )
        n_labels = len(label_names) if label_names else _n_labels_from_predictions(fold_dirs[0])
        base_name = config.get("model_name_or_path")
        base, processor = None, None
        infos = [read_fold_model_info(p) for p in fold_dirs]
        if any(info["format"] != "full" for info in infos):
            if not base_name:
                raise ValueError(f"{repo_id_or_path} saves fold models as parts of a base model, but its "
                                 "cv_results.json names no model_name_or_path to load that base from.")
            from .modeling import load_classifier

            # Runs saved before text_pooling existed read BERT's pooler. Each fold's trained head is loaded over the
            # base's head, so the base's head is not "new" to anyone (new_head=False: no such line).
            base = load_classifier(base_name, label_names, n_labels,
                                   text_pooling=config.get("text_pooling", "pooler"), new_head=False)
        models = [load_fold_model(p / FOLD_MODEL_DIR, info, base, label_names, n_labels)
                  for p, info in zip(fold_dirs, infos)]
        from .modeling import load_processor

        for source in ([base_name] if base_name else []) + [str(p / FOLD_MODEL_DIR) for p in fold_dirs[:1]]:
            try:
                processor = load_processor(source)
                break
            except Exception:  # noqa: BLE001 - without a processor only model inputs are accepted
                continue
        if device is not None:
            models = [m.to(device) for m in models]
        return cls(models, [p.name for p in fold_dirs], processor, config, label_names)

    # ---- prediction ----------------------------------------------------------------------------------------
    def preprocess(self, inputs):
        """Model inputs (a `datasets.Dataset` with `pixel_values` or `input_ids`) from PIL images, texts, or a
        dataset, with the run's preprocessing settings (through `hf_tlcv.data.preprocess`)."""
        import datasets
        from PIL import Image as PILImage

        from .data import preprocess
        from .validation import validate_dataset

        if isinstance(inputs, (str, PILImage.Image)):
            inputs = [inputs]
        if not isinstance(inputs, datasets.Dataset):
            inputs = list(inputs)
            if inputs and isinstance(inputs[0], PILImage.Image):
                inputs = datasets.Dataset.from_dict({"image": inputs},
                                                    features=datasets.Features({"image": datasets.Image()}))
            elif inputs and isinstance(inputs[0], str):
                inputs = datasets.Dataset.from_dict({"text": inputs})
            else:
                raise TypeError("KFoldEnsemble.predict takes PIL images, strings or a datasets.Dataset.")
            image_column = text_column = None
        else:
            image_column, text_column = self.config.get("image_column"), self.config.get("text_column")
            image_column = image_column if image_column in inputs.column_names else None
            text_column = text_column if text_column in inputs.column_names else None
        # Empty texts and images that do not decode are named here, before a fold model runs.
        inputs = validate_dataset(inputs, labels="none", text_column=text_column, image_column=image_column,
                                  name="the rows to predict")
        label_column = self.config.get("label_column", "label")
        if label_column not in inputs.column_names:
            label_column = "label"
        return preprocess(inputs, self.processing_class, label_column=label_column, image_column=image_column,
                          text_column=text_column, image_size=self.config.get("image_size"),
                          max_length=self.config.get("max_length"), desc="Preprocessing the rows to predict")

    @torch.no_grad()
    def predict(self, inputs, batch_size: int = 32, share_frozen: bool = True) -> EnsemblePrediction:
        """Class probabilities averaged over the fold models, with each fold's probabilities and votes.

        Args:
            inputs: PIL images, strings, or a `datasets.Dataset` (raw, or already holding model inputs).
            batch_size: rows per forward pass.
            share_frozen: with `linear_probe` / `freeze` fold models, run their frozen part (identical in every fold
                model: checked) once and each fold's trained part on its output, as cross-validation trained them
                (see [`hf_tlcv.cache`]); about the cost of one model instead of k. `False` runs each fold model
                whole; the probabilities are the same.
        """
        from transformers import DataCollatorWithPadding, default_data_collator

        data = self.preprocess(inputs)
        keep = [c for c in data.column_names if c in ("pixel_values", "input_ids", "attention_mask", "token_type_ids")]
        data = data.select_columns(keep)
        text = "input_ids" in keep
        collate = DataCollatorWithPadding(self.processing_class) if text and self.processing_class is not None \
            else default_data_collator
        if text and self.processing_class is None:
            collate = _pad_collate
        rows = data.with_format(None) if text else data
        fold_probs = self._shared_frozen_probabilities(rows, collate, batch_size) if share_frozen else None
        if fold_probs is None:
            batches = [collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
                       for start in range(0, len(rows), batch_size)]
            fold_probs = [self._probabilities(model, batches) for model in self.models]
        fold_probs = np.stack(fold_probs)
        mean = fold_probs.mean(axis=0)
        predictions = mean.argmax(axis=-1)
        names = self.label_names or [str(i) for i in range(mean.shape[-1])]
        return EnsemblePrediction(probabilities=mean, predictions=predictions,
                                  labels=[names[i] for i in predictions], fold_probabilities=fold_probs,
                                  votes=fold_probs.argmax(axis=-1), fold_names=self.fold_names)

    @staticmethod
    def _probabilities(model: nn.Module, batches: list[dict]) -> np.ndarray:
        device = next(model.parameters()).device
        logits = [model(**{k: torch.as_tensor(v).to(device) for k, v in batch.items()}).logits for batch in batches]
        return softmax(torch.cat(logits).double().cpu().numpy())

    def _shared_frozen_probabilities(self, rows, collate, batch_size: int) -> list[np.ndarray] | None:
        """Each fold model's probabilities with the frozen part run once for all of them, or `None` when the fold
        models have no frozen part in common (strategy, differing weights, or a cut the cache cannot take exactly).

        The frozen part's output is computed by the frozen-feature cache of cross-validation (same cut, same exactness
        check against the whole model, same batches, so text is padded as the whole model would pad it), then every
        fold model reads it through the cache's bypass."""
        from types import SimpleNamespace

        from .cache import FeatureCache, bypassed, plan_feature_cache

        strategy = self.config.get("finetune_strategy")
        if strategy not in ("linear_probe", "freeze") or len(rows) == 0:
            return None
        first = self.models[0]
        settings = SimpleNamespace(feature_cache="memory", finetune_strategy=strategy,
                                   freeze_layers=self.config.get("freeze_layers") or 0)
        plan, _ = plan_feature_cache(first, settings, dataset=rows, data_collator=collate, user_model_init=False,
                                     inference=True)
        if plan is None or not all(_same_part(first, other, plan.bypass) for other in self.models[1:]):
            return None
        device = next(first.parameters()).device
        on_device = collate if device.type == "cpu" else (
            lambda batch: {k: torch.as_tensor(v).to(device) for k, v in collate(batch).items()})
        cache, _ = FeatureCache.build(first, plan, rows, model_fingerprint="ensemble", collator=on_device,
                                      batch_size=batch_size, mode="memory")
        if cache is None:
            return None
        features = cache.as_tensors(cache.dataset)
        batches = [cache.collate(features.__getitems__(range(start, min(start + batch_size, len(features)))))
                   for start in range(0, len(features), batch_size)]
        out = []
        for model in self.models:
            with bypassed(model, plan, cache.feature):
                out.append(self._probabilities(model, batches))
        return out

    __call__ = predict


def _same_part(a: nn.Module, b: nn.Module, modules: tuple[str, ...]) -> bool:
    """Whether modules `modules` of `a` and `b` hold equal parameters and buffers."""
    for name in modules:
        mine, theirs = a.get_submodule(name).state_dict(), b.get_submodule(name).state_dict()
        if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k]) for k in mine):
            return False
    return True


def _pad_collate(rows: list[dict]) -> dict:
    width = max(len(r["input_ids"]) for r in rows)
    out = {}
    for key in rows[0]:
        out[key] = torch.tensor([list(r[key]) + [0] * (width - len(r[key])) for r in rows])
    return out


def _n_labels_from_predictions(fold_dir: Path) -> int:
    """Number of classes of a run without class names: the probability columns of its predictions."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(fold_dir / FOLD_PREDICTIONS_FILE)
    return sum(1 for name in schema.names if name.startswith("prob_"))
