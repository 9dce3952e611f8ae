"""Everything a user (or the Space) writes for a builtin model on builtin data, each as small as it runs, for
tests/test_artifact_paths.py to search for server paths:

    python tests/scripts/artifact_runs.py --output_dir OUT

OUT/cv        a cross-validation with fold models, plots and card, audited (label issues, near-duplicates) and
              cross-validated again grouped by the near-duplicates (OUT/cv-grouped)
OUT/study     a TransferStudy: pretrained against random initial weights
OUT/search    a two-trial hyperparameter search

Run it with HOME, HF_HOME and XDG_CACHE_HOME pointed at folders the test knows: the builtin assets, `datasets`'
cache files and the frozen-feature caches then live there, and no artifact may name them.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import make_config  # noqa: E402

from hf_tlcv import KFoldTrainer, TransferStudy, load_data  # noqa: E402
from hf_tlcv.audit.checks import audit_run  # noqa: E402
from hf_tlcv.audit.injection import inject_near_duplicates  # noqa: E402
from hf_tlcv.data import subsample  # noqa: E402

MODEL = "builtin:efficientnet-lite0"
DATA = "builtin:animal-mnist"


def main(out: Path) -> None:
    # 40 rows, 4 per class; 8 exact copies, so the audit finds near-duplicates that straddle the folds and regroups
    data = subsample(load_data(DATA), 40, "label", seed=0)
    data, _, _ = inject_near_duplicates(data, 8, column="image", augmentations={"copy": lambda v, rng: v}, seed=0)
    settings = dict(n_folds=3, num_train_epochs=1, image_size=32, finetune_strategy="linear_probe", learning_rate=1e-2,
                    eval_on_train=False)

    config = make_config(out / "cv", save_fold_models=True, **settings)
    trainer = KFoldTrainer(MODEL, config, train_dataset=data)
    trainer.cross_validate()
    audit_run(trainer, regroup=True)

    TransferStudy(MODEL, data, make_config(out / "study", **settings), questions="pretrained").run()

    space = lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)}  # noqa: E731
    KFoldTrainer(MODEL, make_config(out / "search", **settings), train_dataset=data).hyperparameter_search(
        hp_space=space, n_trials=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True, type=Path)
    main(parser.parse_args().output_dir)
