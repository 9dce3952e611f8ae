"""`import hf_tlcv` changes nothing process-wide and loads no heavy library it does not need yet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


@pytest.mark.integration
def test_import_loads_no_plotting_or_statistics_library_and_leaves_the_matplotlib_backend_alone():
    # One interpreter for both checks (each fresh one costs seconds of imports): first what `import hf_tlcv` and its
    # public names load, then, with matplotlib imported and a backend chosen, the plotting modules on top of them.
    out = _python(
        "import sys\n"
        "import hf_tlcv\n"
        "from hf_tlcv import KFoldConfig, KFoldTrainer, CVResults, KFoldEnsemble, TransferStudy\n"
        # (pandas, datasets and peft come with `from transformers import Trainer` itself)
        "heavy = ['matplotlib', 'sklearn', 'scipy.stats', 'hf_tlcv.assets', 'evaluate']\n"
        "print('loaded:' + ','.join(m for m in heavy if m in sys.modules))\n"
        "import matplotlib; matplotlib.use('svg')\n"
        "import hf_tlcv.plots.cv, hf_tlcv.studies.plots\n"
        "print('backend:' + matplotlib.get_backend())"
    )
    loaded, backend = out.splitlines()
    assert loaded == "loaded:"
    assert backend.lower() == "backend:svg"  # a notebook user's choice survives; plots draw on Figure objects


def test_the_public_names_are_exactly_the_lazily_loaded_ones():
    import hf_tlcv

    assert sorted(hf_tlcv.__all__) == sorted([*hf_tlcv._PUBLIC, "__version__"])
    for name in hf_tlcv._PUBLIC:
        assert getattr(hf_tlcv, name).__name__ == name


def test_one_version_source():
    # pyproject.toml reads the version from hf_tlcv.__version__ (runs record it), so the installed metadata agrees.
    from importlib.metadata import version

    import hf_tlcv

    assert version("hf_tlcv") == hf_tlcv.__version__


def test_the_old_import_paths_of_moved_modules_warn_once_and_give_the_same_objects():
    # hf_tlcv 0.3's paths (hf_tlcv.study, hf_tlcv.model_card, ...) keep working for one release.
    import importlib
    import sys
    import warnings

    from hf_tlcv._imports import MOVED, REMOVED_IN

    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == [
            f"{old} moved to {new} in hf_tlcv 0.4; the old path works until {REMOVED_IN}. Import from {new} instead."]
        assert caught[0].filename == __file__  # the warning names the line that imported the old path
        target = importlib.import_module(new)
        for name in target.__all__:
            assert getattr(module, name) is getattr(target, name)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("hf_tlcv.no_such_module")
    # The subpackages keep the 0.3 module paths that became packages: hf_tlcv.search, .audit, .hub, .plots
    from hf_tlcv.audit import audit
    from hf_tlcv.hub import HubPushCallback, push_run
    from hf_tlcv.plots import save_plots
    from hf_tlcv.search import default_hp_space

    assert all(callable(f) for f in (audit, HubPushCallback, push_run, save_plots, default_hp_space))
