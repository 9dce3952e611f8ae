"""The image recipe's command line (`recipes/vit_kfold.py`) with Ctrl-C pressed from inside a fold, for tests.

    python tests/scripts/interrupted_recipe.py FOLD STEP [recipe options ...]

At the end of training step STEP of fold FOLD (`fold_0_1 1`: the second fold's first step) the run sends SIGINT to
its own process, as Ctrl-C in a terminal does, so the interrupt lands in that fold however fast or loaded the machine
is. Everything else is the recipe: same parser, same run, same exit status.
"""

import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

import hf_tlcv.recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes"))

import vit_kfold  # noqa: E402


class CtrlCAt(TrainerCallback):
    def __init__(self, fold: str, step: int):
        self.fold, self.step = fold, step

    def on_step_end(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == self.fold and state.global_step == self.step:
            signal.raise_signal(signal.SIGINT)  # in this thread (the one training), before the call returns


def with_callback(trainer_cls, callback):
    """`trainer_cls` whose instances also get `callback` (the recipe builds its trainer without callbacks)."""

    class Trainer(trainer_cls):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), callback], **kwargs)

    return Trainer


if __name__ == "__main__":
    # A terminal's Ctrl-C reaches a process with Python's handler. A test suite started in the background by a
    # non-interactive shell (`make test &`, a CI runner) has SIGINT ignored (POSIX), and an ignored signal stays ignored
    # in every child, so this script would never see it: put Python's handler back, as a terminal session has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fold, step, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    hf_tlcv.recipe.KFoldTrainer = with_callback(hf_tlcv.recipe.KFoldTrainer, CtrlCAt(fold, step))
    sys.exit(hf_tlcv.recipe.cli(vit_kfold.make_parser, argv))
