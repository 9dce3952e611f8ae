"""The Space's default run in a real browser: how long the page says it took, and the two screenshots in docs/.

Starts `spaces/app.py` in its own process (its Hub pointed at the local stand-in of `tests/hub_server.py`, with
`--mock-login` so the page shows "Sign in with Hugging Face" as on a Space), opens it in Debian's headless Chromium,
presses *Run* with the page's defaults (the demo's recipe: linear probe, 1,000 Animal-MNIST images at 128 px, lr 3e-3,
5 folds, 3 epochs) and waits for the finished status. Then it types a repo id on the Push tab of a visitor who has not
signed in and presses Push. Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/space_default_run.py            # prints the status line and the load
    OMP_NUM_THREADS=1 python benchmarks/space_default_run.py --docs     # also writes docs/space_*.png

One run, one number: the wall time depends on what else the machine runs (the load average is printed beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from hub_server import HubServer  # noqa: E402
from space_harness import browser_page, expect, running_app  # noqa: E402

OWNER_TOKEN = "hf_DocsOwnerToken0123456789abcdefghij"
DOCS_WIDTH = 1100  # the docs' screenshots are taken at 1400 px (the layout the tests check) and scaled down to this


def save_for_docs(png: bytes, name: str) -> None:
    """A screenshot scaled to `DOCS_WIDTH` and written to docs/ as a 256-colour PNG."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((DOCS_WIDTH, round(image.height * DOCS_WIDTH / image.width)), Image.Resampling.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(REPO / "docs" / name, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", action="store_true", help="write docs/space_cross_validate.png and "
                                                            "docs/space_push_identity.png")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="space-default-run-") as tmp, HubServer() as hub:
        # Gradio's local sign-in stand-in needs a login on the machine (the owner's, as a Space secret would be) and
        # hands visitors a placeholder token.
        hub.add_user("owner", OWNER_TOKEN)
        hub.add_user("mock-visitor", "mock-oauth-token-for-local-dev")
        with running_app(Path(tmp), hub.url, env={"HF_TOKEN": OWNER_TOKEN}, args=("--mock-login",)) as app, \
                browser_page(app.url) as page:
            expect(page.locator("#data-status")).to_contain_text("images in", timeout=180_000)
            load = os.getloadavg()
            started = time.time()
            page.locator("#run-button").click()
            expect(page.locator("#run-status")).to_contain_text("5 folds in", timeout=900_000)
            wall = time.time() - started
            status = page.locator("#run-status").inner_text()
            summary = page.locator("#summary").inner_text()
            if args.docs:
                save_for_docs(page.screenshot(full_page=True), "space_cross_validate.png")
                page.get_by_role("tab", name="Push").click()
                page.get_by_label("Repository id").fill("owner/important-model")
                page.get_by_role("button", name="Push to the Hub").click()
                expect(page.locator("#push-status")).to_contain_text("Sign in with Hugging Face or paste")
                box = page.locator("#push-status").bounding_box()
                save_for_docs(page.screenshot(clip={"x": 0, "y": 0, "width": page.viewport_size["width"],
                                                    "height": box["y"] + box["height"] + 24}), "space_push_identity.png")
    print(json.dumps({"wall_s_click_to_done": round(wall, 1), "loadavg_at_click": [round(x, 2) for x in load]}))
    print(status)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
