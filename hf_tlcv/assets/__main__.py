"""``python -m hf_tlcv.assets``: convert/cache every builtin model and dataset (used by ``make install``)."""

from __future__ import annotations

import argparse
import sys
import time

from . import BUILTIN_DATASETS, BUILTIN_MODELS, BUILTIN_PREFIX, cache_dir, prepare_assets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_tlcv.assets",
        description="Prepare the embedded offline assets (no network needed) in the hf_tlcv cache folder "
        "($HF_TLCV_CACHE, else ~/.cache/hf_tlcv). Already prepared assets are reused.",
    )
    parser.add_argument("--list", action="store_true", help="only list the builtin names and exit")
    args = parser.parse_args(argv)

    if args.list:
        for kind, table in (("model", BUILTIN_MODELS), ("dataset", BUILTIN_DATASETS)):
            for key, description in table.items():
                print(f"{kind:<8} {BUILTIN_PREFIX + key:<28} {description}")
        return 0

    print(f"hf_tlcv assets cache: {cache_dir()}", flush=True)
    start = time.perf_counter()
    try:
        prepared = prepare_assets(verbose=True)
    except ModuleNotFoundError as exc:  # a weights/data package is missing: its message says what to install
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(prepared)} builtin assets ready in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
