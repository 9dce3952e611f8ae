"""The Space's trust boundary, tried as a stranger would: in a real browser and through gradio_client.

The app runs as on a Space with its owner's secret: `HF_TOKEN` (the owner's token) is in its environment, and its Hub
is a local stand-in (`tests/hub_server.py`) that knows four accounts: the owner (that token), a visitor with their own
token, a visitor signed in through gradio_client's `oauth_token`, and the account Gradio's local sign-in stand-in
(`--mock-login`) hands out. The stand-in enforces namespaces and records every write attempt, so "nothing was
written with the owner's rights" is checked on the Hub's side, not trusted from the app.

The app's working folder holds decoys named like Hub ids (`outputs/demo`, a symlink `evil`, `~/run`): each is a
real, loadable run, so a Predict that read a server path would succeed where it must be refused. Every message a
visitor sees in these tests is collected and checked at the end for the temporary root, server paths and tokens.
"""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")
from hub_server import HubServer  # noqa: E402
from space_harness import (  # noqa: E402
    HUB,
    REPO,
    VIEWPORT,
    ZIP,
    browser_page,
    expect,
    png,
    requires_chromium,
    run_args,
    running_app,
    shot,
    small_run,
    upload_zip,
    wait_for_start,
)

OWNER_TOKEN = "hf_OwnerSpaceSecret0123456789abcdefXYZ"
VISITOR_TOKEN = "hf_VisitorOwnToken0123456789abcdefghij"
OAUTH_TOKEN = "hf_OAuthVisitorToken0123456789abcdefgh"
MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # what Gradio's local sign-in stand-in puts in the session
TOKENS = (OWNER_TOKEN, VISITOR_TOKEN, OAUTH_TOKEN, MOCK_OAUTH_TOKEN)
OWNER_REPO = "owner/important-model"
OWNER_FILES = {"README.md": b"# The owner's model\n", "config.json": b"{}"}
HOSTILE_CLASSES = ("[click me](javascript:alert(1))", "<img src=x onerror=alert(1)>")
SAID: list[str] = []  # every visitor-facing message of these tests, checked at the end

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), requires_chromium]


def said(text: str) -> str:
    SAID.append(text)
    return text


def png_bytes(value: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12_000, 12_000), 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()  # 140 KB that decode into 144 megapixels


def image_dataset_parquet(cells: list[dict], labels: list[int]) -> bytes:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    buffer = io.BytesIO()
    datasets.Dataset.from_dict({"image": cells, "label": labels}, features=features).to_parquet(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hub():
    server = HubServer().start()
    for name, token in (("owner", OWNER_TOKEN), ("visitor", VISITOR_TOKEN), ("oauth-visitor", OAUTH_TOKEN),
                        ("mock-visitor", MOCK_OAUTH_TOKEN)):
        server.add_user(name, token)
    server.add_repo(OWNER_REPO, OWNER_FILES)
    good = {"bytes": png_bytes(60), "path": None}
    rows = [good, {"bytes": bomb_png(), "path": None}, {"bytes": None, "path": "/etc/hostname"}, good]
    server.add_repo("someone/hostile-rows", {"data/train-00000-of-00001.parquet": image_dataset_parquet(
        rows, [0, 1, 0, 1])}, repo_type="dataset")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def space(hub, tmp_path_factory):
    """The app as on a Space: the owner's token in HF_TOKEN, Gradio's sign-in stand-in, decoys in its folder."""
    root = tmp_path_factory.mktemp("stranger")
    cwd, home = root / "cwd", root / "home"
    (cwd / "outputs").mkdir(parents=True)
    home.mkdir()
    (cwd / "evil").symlink_to(root / "decoy-run", target_is_directory=True)
    env = {"HF_TOKEN": OWNER_TOKEN, "HUGGING_FACE_HUB_TOKEN": OWNER_TOKEN, "HOME": str(home)}
    with running_app(root, hub.url, env=env, args=("--mock-login",), cwd=cwd) as app:
        app.requests_at_start = len(hub.requests)  # Gradio's sign-in stand-in reads the login while starting
        yield app


@pytest.fixture(scope="module")
def page(space):
    with browser_page(space.url) as tab:
        yield tab


def client(space, **kwargs):
    from gradio_client import Client

    return Client(space.url, verbose=False, **kwargs)


def assert_no_markup_from_visitors(page) -> None:
    """Nothing a visitor typed or uploaded became a link, an image or a script on the page."""
    assert page.locator("a[href^='javascript']").count() == 0
    assert page.locator("img[src='x'], img[onerror]").count() == 0
    assert page.locator("#gradio-app script").count() == 0


# ---- pushes --------------------------------------------------------------------------------------------------------
def test_a_push_without_credentials_is_refused_and_the_hub_sees_no_write(page, space, hub):
    wait_for_start(page)
    small_run(page)
    # The decoys: copies of this real, loadable run where a server-path Predict would find them.
    run = next(space.workdir.glob("visitor-*/run-*"))
    for decoy in (space.root / "decoy-run", space.root / "cwd" / "outputs" / "demo", space.root / "home" / "run"):
        shutil.copytree(run, decoy)

    page.get_by_role("tab", name="Push").click()
    identity = said(page.locator("#push-identity").inner_text())
    assert "Pushes use: nobody yet" in identity and "never pushes with its own credentials" in identity
    page.get_by_label("Repository id").fill(OWNER_REPO)
    page.locator("#push-button").click()
    expect(page.locator("#push-status")).to_contain_text("Sign in with Hugging Face or paste a write token")
    said(page.locator("#push-status").inner_text())
    shot(page, "20_push_refused_without_credentials")

    status, _token = client(space).predict(OWNER_REPO, "", False, api_name="/push")  # the API, as the issue did
    assert "paste a write token" in said(status)
    assert hub.writes == []  # not even an attempt reached the Hub
    assert hub.files(OWNER_REPO) == OWNER_FILES


def test_predict_loads_no_server_path(space):
    from gradio_client import handle_file

    stranger = client(space)
    image = handle_file(str(png(space.root / "probe.png")))
    own_run = next(space.workdir.glob("visitor-*/run-*"))
    server_paths = [str(space.root / "decoy-run"), "outputs/demo", "evil", "evil/fold_0_0", "~/run", "~",
                    "../decoy-run", f"file://{space.root / 'decoy-run'}", str(own_run),
                    f"{own_run.parent.name}/{own_run.name}", "/etc", "..", "builtin:efficientnet-lite0"]
    for text in server_paths:
        message, probabilities, _votes = stranger.predict(image, "", text, api_name="/predict")
        assert said(message).startswith("**Error:**") and not probabilities, (text, message)
        assert "is not a Hub model repository id" in message or "was not found on the Hub" in message, message
    # Another visitor's run, by its name in their session: not this visitor's.
    message, _, _ = stranger.predict(image, own_run.name, "", api_name="/predict")
    assert "There is no run" in said(message)
    assert not list(space.workdir.glob("visitor-*/hub-*")), "nothing was downloaded for a refused request"


def test_a_bad_image_to_classify_gets_a_sentence_and_the_status_line(page, tmp_path):
    page.get_by_role("tab", name="Predict").click()
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(bomb_png())
    page.locator("#predict-image input[type=file]").set_input_files(str(bomb))
    expect(page.locator("#predict-status")).to_contain_text("12,000x12,000 pixels, over the limit of 25 megapixels",
                                                            timeout=30_000)
    said(page.locator("#predict-status").inner_text())
    page.locator("#predict-button").click()  # Predict reads it through the same limits
    expect(page.locator("#predict-status")).to_contain_text("over the limit of 25 megapixels")
    expect(page.locator("#predict-label")).not_to_contain_text("%")
    page.wait_for_timeout(1000)  # for the screenshot only: the answer has settled
    shot(page, "21_predict_refuses_a_huge_image")

    fake = tmp_path / "photo.png"
    fake.write_text("not an image at all")
    page.locator("#predict-image button[aria-label='Clear']").first.click()
    page.locator("#predict-image input[type=file]").set_input_files(str(fake))
    expect(page.locator("#predict-status")).to_contain_text("is not an image in a supported format", timeout=30_000)
    said(page.locator("#predict-status").inner_text())

    page.locator("#predict-image button[aria-label='Clear']").first.click()
    page.locator("#predict-image input[type=file]").set_input_files(str(png(tmp_path / "ok.png")))
    page.locator("#predict-button").click()
    expect(page.locator("#predict-status")).to_contain_text("averaged over 2 fold models", timeout=60_000)


def hostile_zip(path: Path, per_class: dict[str, int]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for k, (name, count) in enumerate(per_class.items()):
            for i in range(count):
                archive.writestr(f"{name}/{i}.png", png_bytes(40 * k + 5 * i))
    return path


def test_class_names_and_ids_from_visitors_stay_text(page, hub, space, tmp_path):
    page.get_by_role("tab", name="Cross-validate").click()
    page.get_by_label(ZIP).check()
    upload_zip(page, hostile_zip(tmp_path / "few.zip", {HOSTILE_CLASSES[0]: 1, HOSTILE_CLASSES[1]: 4}))
    expect(page.locator("#data-status")).to_contain_text("fewer", timeout=30_000)
    status = said(page.locator("#data-status").inner_text())
    assert HOSTILE_CLASSES[0] in status  # shown as the characters it is made of
    assert_no_markup_from_visitors(page)

    upload_zip(page, hostile_zip(tmp_path / "names.zip", {name: 4 for name in HOSTILE_CLASSES}))
    expect(page.locator("#data-status")).to_contain_text("8 images in 2 classes", timeout=30_000)
    expect(page.locator("#class-counts")).to_contain_text(HOSTILE_CLASSES[1])
    small_run(page)
    page.get_by_role("tab", name="Predict").click()
    expect(page.get_by_label("Fold models: one of your runs (newest first)")).to_have_value(re.compile(r"^Run 2: "),
                                                                                    timeout=30_000)
    page.locator("#predict-button").click()
    # The prediction names one of the two classes, as the characters it is made of.
    expect(page.locator("#predict-status")).to_contain_text(
        re.compile("|".join(re.escape(name) for name in HOSTILE_CLASSES)), timeout=60_000)
    said(page.locator("#predict-status").inner_text())
    assert_no_markup_from_visitors(page)
    shot(page, "22_hostile_class_names_as_text")

    page.get_by_role("tab", name="Push").click()
    page.get_by_label("Repository id").fill("visitor/hostile-names")
    page.get_by_label("Write token (optional when signed in)").fill(VISITOR_TOKEN)
    page.locator("#push-button").click()
    expect(page.locator("#push-status")).to_contain_text("as visitor", timeout=120_000)
    said(page.locator("#push-status").inner_text())
    link = page.locator("#push-status a")
    assert link.count() == 1 and link.get_attribute("href").startswith(hub.url)
    from markdown_it import MarkdownIt

    card = hub.files("visitor/hostile-names")["README.md"].decode()
    rendered = MarkdownIt("commonmark").render(card.split("---", 2)[2])
    assert not re.search(r"<a [^>]*javascript|<img [^>]*onerror", rendered), rendered
    assert "\\[click me\\](javascript:alert(1))" in card


def test_names_too_long_for_a_file_system_get_a_sentence(page, tmp_path):
    page.get_by_role("tab", name="Cross-validate").click()
    upload_zip(page, hostile_zip(tmp_path / "long.zip", {"c" * 300: 3, "dog": 3}))
    expect(page.locator("#data-status")).to_contain_text("longer than 255 bytes", timeout=30_000)
    assert "Errno" not in said(page.locator("#data-status").inner_text())


def test_every_bad_upload_kind_gets_a_sentence_through_the_api(space, tmp_path):
    """The upload cases of tests/test_upload.py, through the app: each answer joins the messages checked at the end."""
    from gradio_client import handle_file
    from test_upload import BAD_UPLOADS

    stranger = client(space)
    for kind, (build, words) in BAD_UPLOADS.items():
        upload = build(tmp_path / f"{kind.replace(' ', '_')}.zip")
        status, gallery, _ = stranger.predict(ZIP, handle_file(str(upload)), "", "train", "label", 3, 0,
                                              api_name="/preview")
        said(status)
        if kind not in ("too many files", "declared too big"):  # those two use tighter limits than the app's
            assert status.startswith("**Error:**") and words in status and not gallery, (kind, status)


def test_rows_of_a_hub_dataset_are_held_to_the_image_limits(space):
    status, gallery, _counts = client(space).predict(HUB, None, "someone/hostile-rows", "train", "label", 2, 0,
                                                     api_name="/preview")
    assert said(status).startswith("**Error:**") and not gallery
    assert "Row 1 is 12,000x12,000 pixels" in status or "points at a file outside the dataset" in status, status
    status, *_ = client(space).predict(*run_args(source=HUB, hub_id="someone/hostile-rows", sample_cap=0),
                                       api_name="/run")
    assert said(status).startswith("**Error:**") and "Row" in status


def test_sign_in_with_hugging_face_pushes_as_the_signed_in_visitor(page, space, hub):
    context = page.context.browser.new_context(viewport=VIEWPORT)  # another visitor: their own cookies
    visitor = context.new_page()
    visitor.goto(space.url)
    wait_for_start(visitor)
    visitor.locator("#login-button").click()  # Gradio's stand-in signs in and reloads the page
    expect(visitor.locator("#login-button")).to_contain_text("Logout", timeout=60_000)
    wait_for_start(visitor)
    visitor.get_by_role("tab", name="Push").click()
    expect(visitor.locator("#push-identity")).to_contain_text("Pushes use: your Hugging Face account")
    said(visitor.locator("#push-identity").inner_text())
    visitor.get_by_role("tab", name="Cross-validate").click()
    small_run(visitor)
    visitor.get_by_role("tab", name="Push").click()
    visitor.get_by_label("Repository id").fill("mock-visitor/signed-in-run")
    visitor.locator("#push-button").click()  # no token pasted: the sign-in is the credential
    expect(visitor.locator("#push-status")).to_contain_text("as mock-visitor", timeout=120_000)
    said(visitor.locator("#push-status").inner_text())
    shot(visitor, "23_push_signed_in")
    context.close()
    assert "cv_results.json" in hub.files("mock-visitor/signed-in-run")
    assert any(w.user == "mock-visitor" and w.status == 200 and "/commit/" in w.path for w in hub.writes)


def test_api_callers_push_with_their_own_token_or_oauth_token_only(space, hub):
    signed_in = client(space, oauth_token=OAUTH_TOKEN)
    status, *_ = signed_in.predict(*run_args(), api_name="/run")
    assert "2 folds in" in said(status)
    message, _ = signed_in.predict("oauth-visitor/api-run", "", False, api_name="/push")
    assert "as oauth-visitor" in said(message)

    visitor = client(space)
    status, *_ = visitor.predict(*run_args(), api_name="/run")
    message, _ = visitor.predict(OWNER_REPO, VISITOR_TOKEN, False, api_name="/push")  # someone else's repository
    assert "(403)" in said(message) and "Pushed" not in message
    message, _ = visitor.predict("visitor/api-run", VISITOR_TOKEN, False, api_name="/push")
    assert "as visitor" in said(message)
    assert hub.files(OWNER_REPO) == OWNER_FILES
    assert {w.status for w in hub.writes if w.user == "visitor" and OWNER_REPO.split("/")[0] in w.path} <= {403}


def test_predict_downloads_a_pushed_run_into_the_visitors_own_folder(space):
    from gradio_client import handle_file

    stranger = client(space)
    image = handle_file(str(png(space.root / "probe2.png", value=90)))
    message, probabilities, votes = stranger.predict(image, "", "visitor/api-run", api_name="/predict")
    assert "averaged over 2 fold models" in said(message) and len(votes["data"]) == 2
    downloads = list(space.workdir.glob("visitor-*/hub-*"))
    assert len(downloads) == 1 and (downloads[0] / "cv_results.json").is_file()
    assert not [p for p in downloads[0].rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".py", ".png")]
    message, _, _ = stranger.predict(image, "", OWNER_REPO, api_name="/predict")  # a repository, not a run
    assert "not a run pushed by hf_tlcv" in said(message)


def test_the_owners_token_never_left_the_app(space, hub, page):
    after_start = hub.requests[space.requests_at_start:]
    assert after_start and not [r.path for r in after_start if OWNER_TOKEN in str(r.headers.get("Authorization"))]
    assert hub.writes and all(w.user in ("visitor", "oauth-visitor", "mock-visitor") for w in hub.writes)
    assert hub.files(OWNER_REPO) == OWNER_FILES
    texts = [*SAID, page.content(), space.log()]
    for token in TOKENS:
        assert not any(token in text for text in texts), token
    for path in space.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            assert not any(token.encode() in content for token in TOKENS), path


def test_no_visitor_message_names_a_server_path(space):
    assert len(SAID) >= 40
    temp_root = tempfile.gettempdir()
    for message in SAID:
        for leak in (str(space.root), f"{temp_root}/", "tlcv-space", "visitor-", "site-packages", "Traceback",
                     str(REPO), "CVResults.load(", "token=", "[Errno"):
            assert leak not in message, (leak, message)


def test_the_local_token_flag_is_refused_on_a_space_and_beyond_this_machine(monkeypatch):
    spec = importlib.util.spec_from_file_location("space_app", REPO / "spaces" / "app.py")
    monkeypatch.syspath_prepend(str(REPO / "spaces"))
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "space_app", app)  # dataclasses look their module up there
    spec.loader.exec_module(app)
    monkeypatch.setenv("HF_TOKEN", OWNER_TOKEN)
    monkeypatch.setenv("SPACE_ID", "owner/hf-tlcv")
    with pytest.raises(SystemExit, match="refused on a Space"):
        app.local_credentials(True, "127.0.0.1")
    assert app.main(["--use-local-token"]) == 2
    monkeypatch.delenv("SPACE_ID")
    with pytest.raises(SystemExit, match="refused with --host 0.0.0.0"):
        app.local_credentials(True, "0.0.0.0")
    assert app.local_credentials(False, "0.0.0.0") == (None, None)  # without the flag, no token is read at all
