"""The Space's trust boundary, tried as a stranger would: in a real browser and through gradio_client.

The app runs as on a Space with its owner's secret: `HF_TOKEN` (the owner's token) is in its environment, and its Hub
is a local stand-in (`tests/hub_server.py`) that knows four accounts: the owner (that token), a visitor with their own
token, a visitor signed in through gradio_client's `oauth_token`, and the account Gradio's local sign-in stand-in
(`--mock-login`) hands out. The stand-in enforces namespaces and records every write attempt, so "nothing was
written with the owner's rights" is checked on the Hub's side, not trusted from the app.

The app's working folder holds decoys named like Hub ids (`outputs/demo`, a symlink `evil`, `~/run`): each is a
real, loadable run, so a Predict that read a server path would succeed where it must be refused. Every message a
visitor sees in these tests is checked where it is seen ([`said`]) for the temporary root, server paths and tokens.

One app process and one Chromium serve the module; each test opens its own visitors or takes a module fixture's
(a visitor with a finished run, a run pushed by a visitor), so any test runs alone.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")
from hub_server import HubServer  # noqa: E402
from space_harness import (  # noqa: E402
    ANSWER_MS,
    HUB,
    REPO,
    RUN_MS,
    SMALL_RUN,
    ZIP,
    expect,
    finished_runs,
    open_visitor,
    push_from_page,
    png,
    requires_chromium,
    run_args,
    running_app,
    set_image,
    set_number,
    shot,
    small_run,
    the_new_one,
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), requires_chromium]


def said(space, text: str) -> str:
    """`text`, a message a visitor sees, once checked: it names no server path (the app's folders, the temporary
    root, the installation, this repository), no call to paste, no token and no traceback."""
    for leak in (str(space.root), f"{tempfile.gettempdir()}/", "tlcv-space", "visitor-", "site-packages",
                 "Traceback", str(REPO), "CVResults.load(", "token=", "[Errno", *TOKENS):
        assert leak not in text, (leak, text)
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


@pytest.fixture
def page(visitor):
    """A new visitor's page (the harness's `visitor`)."""
    return visitor


@pytest.fixture(scope="module")
def visitor_with_a_run(browser, space):
    """A visitor who ran a small cross-validation from the page: `.page`, and `.folder`, the run's results folder."""
    tab = open_visitor(browser, space.url)
    before = finished_runs(space)
    small_run(tab)
    yield SimpleNamespace(page=tab, folder=the_new_one(before, finished_runs(space), "run folder"))
    tab.close()


@pytest.fixture(scope="module")
def decoys(space, visitor_with_a_run):
    """Copies of a real, loadable run where a Predict that read a server path would find them: an absolute folder,
    `outputs/demo` and the symlink `evil` in the app's working folder, and `~/run`."""
    for decoy in (space.root / "decoy-run", space.root / "cwd" / "outputs" / "demo", space.root / "home" / "run"):
        shutil.copytree(visitor_with_a_run.folder, decoy)
    return visitor_with_a_run.folder


@pytest.fixture(scope="module")
def pushed_run(space, hub):
    """A visitor who made a run through the API and pushed it with their own token: `.client` (their session) and
    `.repo_id`, `visitor/api-run`."""
    visitor = client(space)
    status, *_ = visitor.predict(*run_args(), api_name="/run")
    assert "2 folds in" in said(space, status), status
    message, _ = visitor.predict("visitor/api-run", VISITOR_TOKEN, False, api_name="/push")
    assert "as visitor" in said(space, message), message
    return SimpleNamespace(client=visitor, repo_id="visitor/api-run")


def client(space, **kwargs):
    from gradio_client import Client

    return Client(space.url, verbose=False, **kwargs)


def assert_no_markup_from_visitors(page) -> None:
    """Nothing a visitor typed or uploaded became a link, an image or a script on the page."""
    assert page.locator("a[href^='javascript']").count() == 0
    assert page.locator("img[src='x'], img[onerror]").count() == 0
    assert page.locator("#gradio-app script").count() == 0


# ---- pushes --------------------------------------------------------------------------------------------------------
def test_a_push_without_credentials_is_refused_and_the_hub_sees_no_write(visitor_with_a_run, space, hub):
    page = visitor_with_a_run.page
    writes_before = len(hub.writes)
    page.get_by_role("tab", name="Push").click()
    page.get_by_label("Write token (optional when signed in)").fill("")
    identity = said(space, page.locator("#push-identity").inner_text())
    assert "Pushes use: nobody yet" in identity and "never pushes with its own credentials" in identity
    page.get_by_label("Repository id").fill(OWNER_REPO)
    page.locator("#push-button").click()
    expect(page.locator("#push-status")).to_contain_text("Sign in with Hugging Face or paste a write token",
                                                         timeout=ANSWER_MS)
    said(space, page.locator("#push-status").inner_text())
    shot(page, "20_push_refused_without_credentials")

    status, _token = client(space).predict(OWNER_REPO, "", False, api_name="/push")  # the API, as the issue did
    assert "paste a write token" in said(space, status)
    assert hub.writes[writes_before:] == []  # not even an attempt reached the Hub
    assert hub.files(OWNER_REPO) == OWNER_FILES


def test_predict_loads_no_server_path(space, decoys):
    from gradio_client import handle_file

    stranger = client(space)
    image = handle_file(str(png(space.root / "probe.png")))
    own_run = decoys  # another visitor's run, and the original of the decoys
    downloads_before = set(space.workdir.glob("visitor-*/hub-*"))
    server_paths = [str(space.root / "decoy-run"), "outputs/demo", "evil", "evil/fold_0_0", "~/run", "~",
                    "../decoy-run", f"file://{space.root / 'decoy-run'}", str(own_run),
                    f"{own_run.parent.name}/{own_run.name}", "/etc", "..", "builtin:efficientnet-lite0"]
    for text in server_paths:
        message, probabilities, _votes = stranger.predict(image, "", text, api_name="/predict")
        assert said(space, message).startswith("**Error:**") and not probabilities, (text, message)
        assert "is not a Hub model repository id" in message or "was not found on the Hub" in message, message
    # Another visitor's run, by its name in their session: not this visitor's.
    message, _, _ = stranger.predict(image, own_run.name, "", api_name="/predict")
    assert "There is no run" in said(space, message)
    assert set(space.workdir.glob("visitor-*/hub-*")) == downloads_before, "nothing downloaded for a refusal"


def test_a_bad_image_to_classify_gets_a_sentence_and_the_status_line(visitor_with_a_run, space, tmp_path):
    page = visitor_with_a_run.page
    page.get_by_role("tab", name="Predict").click()
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(bomb_png())
    set_image(page, "#predict-image", bomb)
    expect(page.locator("#predict-status")).to_contain_text("12,000x12,000 pixels, over the limit of 25 megapixels",
                                                            timeout=ANSWER_MS)
    said(space, page.locator("#predict-status").inner_text())
    page.locator("#predict-button").click()  # Predict reads it through the same limits
    expect(page.locator("#predict-status")).to_contain_text("over the limit of 25 megapixels")
    expect(page.locator("#predict-label")).not_to_contain_text("%")
    page.wait_for_timeout(1000)  # for the screenshot only: the answer has settled
    shot(page, "21_predict_refuses_a_huge_image")

    fake = tmp_path / "photo.png"
    fake.write_text("not an image at all")
    set_image(page, "#predict-image", fake)
    expect(page.locator("#predict-status")).to_contain_text("is not an image in a supported format",
                                                            timeout=ANSWER_MS)
    said(space, page.locator("#predict-status").inner_text())

    set_image(page, "#predict-image", png(tmp_path / "ok.png"))
    page.locator("#predict-button").click()
    expect(page.locator("#predict-status")).to_contain_text("averaged over 2 fold models", timeout=ANSWER_MS)


def hostile_zip(path: Path, per_class: dict[str, int]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for k, (name, count) in enumerate(per_class.items()):
            for i in range(count):
                archive.writestr(f"{name}/{i}.png", png_bytes(40 * k + 5 * i))
    return path


def test_class_names_and_ids_from_visitors_stay_text(page, hub, space, tmp_path):
    set_number(page, "folds k", SMALL_RUN["folds k"])  # 4 images per class are enough for 2 folds
    page.get_by_label(ZIP).check()
    upload_zip(page, hostile_zip(tmp_path / "few.zip", {HOSTILE_CLASSES[0]: 1, HOSTILE_CLASSES[1]: 4}))
    expect(page.locator("#data-status")).to_contain_text("fewer", timeout=ANSWER_MS)
    status = said(space, page.locator("#data-status").inner_text())
    assert HOSTILE_CLASSES[0] in status  # shown as the characters it is made of
    assert_no_markup_from_visitors(page)

    upload_zip(page, hostile_zip(tmp_path / "names.zip", {name: 4 for name in HOSTILE_CLASSES}))
    expect(page.locator("#data-status")).to_contain_text("8 images in 2 classes", timeout=ANSWER_MS)
    expect(page.locator("#class-counts")).to_contain_text(HOSTILE_CLASSES[1])
    small_run(page)
    page.get_by_role("tab", name="Predict").click()
    expect(page.get_by_label("Fold models: one of your runs (newest first)")).to_have_value(re.compile(r"^Run 1: "),
                                                                                    timeout=ANSWER_MS)
    set_image(page, "#predict-image", png(tmp_path / "probe.png"))
    page.locator("#predict-button").click()
    # The prediction names one of the two classes, as the characters it is made of.
    expect(page.locator("#predict-status")).to_contain_text(
        re.compile("|".join(re.escape(name) for name in HOSTILE_CLASSES)), timeout=ANSWER_MS)
    said(space, page.locator("#predict-status").inner_text())
    assert_no_markup_from_visitors(page)
    shot(page, "22_hostile_class_names_as_text")

    push_from_page(page, "visitor/hostile-names", VISITOR_TOKEN)
    expect(page.locator("#push-status")).to_contain_text("as visitor", timeout=RUN_MS)
    said(space, page.locator("#push-status").inner_text())
    link = page.locator("#push-status a")
    assert link.count() == 1 and link.get_attribute("href").startswith(hub.url)
    from markdown_it import MarkdownIt

    card = hub.files("visitor/hostile-names")["README.md"].decode()
    rendered = MarkdownIt("commonmark").render(card.split("---", 2)[2])
    assert not re.search(r"<a [^>]*javascript|<img [^>]*onerror", rendered), rendered
    assert "\\[click me\\](javascript:alert(1))" in card


def test_names_too_long_for_a_file_system_get_a_sentence(page, space, tmp_path):
    page.get_by_label(ZIP).check()
    upload_zip(page, hostile_zip(tmp_path / "long.zip", {"c" * 300: 3, "dog": 3}))
    expect(page.locator("#data-status")).to_contain_text("longer than 255 bytes", timeout=ANSWER_MS)
    assert "Errno" not in said(space, page.locator("#data-status").inner_text())


# Two of tests/test_upload.py's cases are refused there under tighter limits than the app's; here they are within the
# app's limits: "too many files" is a good zip of 12 images, "declared too big" holds a 300 KB file that is no image.
WITHIN_THE_APPS_LIMITS = {"too many files": "12 images in 2 classes", "declared too big": "not usable images"}


def test_every_bad_upload_kind_gets_a_sentence_through_the_api(space, tmp_path):
    """The upload cases of tests/test_upload.py, through the app: each answer is a sentence that says what is wrong."""
    from gradio_client import handle_file
    from test_upload import BAD_UPLOADS

    stranger = client(space)
    for kind, (build, words) in BAD_UPLOADS.items():
        upload = build(tmp_path / f"{kind.replace(' ', '_')}.zip")
        status, gallery, _ = stranger.predict(ZIP, handle_file(str(upload)), "", "train", "label", 3, 0,
                                              api_name="/preview")
        said(space, status)
        if kind == "too many files":  # the app takes it: it previews the images
            assert WITHIN_THE_APPS_LIMITS[kind] in status and not status.startswith("**Error:**") and gallery, status
        elif kind == "declared too big":  # the app reads the big member, and says it is not an image
            assert status.startswith("**Error:**") and WITHIN_THE_APPS_LIMITS[kind] in status and not gallery, status
        else:
            assert status.startswith("**Error:**") and words in status and not gallery, (kind, status)


def test_rows_of_a_hub_dataset_are_held_to_the_image_limits(space):
    status, gallery, _counts = client(space).predict(HUB, None, "someone/hostile-rows", "train", "label", 2, 0,
                                                     api_name="/preview")
    assert said(space, status).startswith("**Error:**") and not gallery
    assert "Row 1 is 12,000x12,000 pixels" in status or "points at a file outside the dataset" in status, status
    status, *_ = client(space).predict(*run_args(source=HUB, hub_id="someone/hostile-rows", sample_cap=0),
                                       api_name="/run")
    assert said(space, status).startswith("**Error:**") and "Row" in status


def test_sign_in_with_hugging_face_pushes_as_the_signed_in_visitor(page, space, hub):
    visitor = page  # a visitor of their own: their own cookies
    visitor.locator("#login-button").click()  # Gradio's stand-in signs in and reloads the page
    expect(visitor.locator("#login-button")).to_contain_text("Logout", timeout=ANSWER_MS)
    wait_for_start(visitor)
    visitor.get_by_role("tab", name="Push").click()
    expect(visitor.locator("#push-identity")).to_contain_text("Pushes use: your Hugging Face account")
    said(space, visitor.locator("#push-identity").inner_text())
    visitor.get_by_role("tab", name="Cross-validate").click()
    small_run(visitor)
    push_from_page(visitor, "mock-visitor/signed-in-run")  # no token pasted: the sign-in is the credential
    expect(visitor.locator("#push-status")).to_contain_text("as mock-visitor", timeout=RUN_MS)
    said(space, visitor.locator("#push-status").inner_text())
    shot(visitor, "23_push_signed_in")
    assert "cv_results.json" in hub.files("mock-visitor/signed-in-run")
    assert any(w.user == "mock-visitor" and w.status == 200 and "/commit/" in w.path for w in hub.writes)


def test_api_callers_push_with_their_own_token_or_oauth_token_only(space, hub, pushed_run):
    signed_in = client(space, oauth_token=OAUTH_TOKEN)
    status, *_ = signed_in.predict(*run_args(), api_name="/run")
    assert "2 folds in" in said(space, status)
    message, _ = signed_in.predict("oauth-visitor/api-run", "", False, api_name="/push")
    assert "as oauth-visitor" in said(space, message)
    assert "cv_results.json" in hub.files("oauth-visitor/api-run")

    # A visitor with their own token (`pushed_run`: their run went to their own repository that way).
    assert "cv_results.json" in hub.files(pushed_run.repo_id)
    message, _ = pushed_run.client.predict(OWNER_REPO, VISITOR_TOKEN, False, api_name="/push")  # not theirs
    assert "(403)" in said(space, message) and "Pushed" not in message
    assert hub.files(OWNER_REPO) == OWNER_FILES
    assert {w.status for w in hub.writes if w.user == "visitor" and OWNER_REPO.split("/")[0] in w.path} <= {403}


def test_predict_downloads_a_pushed_run_into_the_visitors_own_folder(space, pushed_run):
    from gradio_client import handle_file

    stranger = client(space)
    image = handle_file(str(png(space.root / "probe2.png", value=90)))
    before = set(space.workdir.glob("visitor-*/hub-*"))
    message, probabilities, votes = stranger.predict(image, "", pushed_run.repo_id, api_name="/predict")
    assert "averaged over 2 fold models" in said(space, message) and len(votes["data"]) == 2
    download = the_new_one(before, set(space.workdir.glob("visitor-*/hub-*")), "download folder")
    assert (download / "cv_results.json").is_file()
    assert not [p for p in download.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".py", ".png")]
    message, _, _ = stranger.predict(image, "", OWNER_REPO, api_name="/predict")  # a repository, not a run
    assert "not a run pushed by hf_tlcv" in said(space, message)


def test_the_owners_token_never_left_the_app(space, hub, visitor_with_a_run, pushed_run):
    """After a visitor's push from the page's run and one through the API (`pushed_run`), and a push without
    credentials here (where an app that fell back on its own token would use it): no request since start-up carried
    the owner's token, every write was a visitor's, and no page, log line or file holds any token."""
    status, _ = client(space).predict(OWNER_REPO, "", False, api_name="/push")
    assert "paste a write token" in said(space, status)
    page = visitor_with_a_run.page
    push_from_page(page, "visitor/page-run", VISITOR_TOKEN)
    expect(page.locator("#push-status")).to_contain_text("visitor/page-run", timeout=RUN_MS)
    said(space, page.locator("#push-status").inner_text())

    after_start = hub.requests[space.requests_at_start:]
    assert after_start and not [r.path for r in after_start if OWNER_TOKEN in str(r.headers.get("Authorization"))]
    assert hub.writes and all(w.user in ("visitor", "oauth-visitor", "mock-visitor") for w in hub.writes)
    assert hub.files(OWNER_REPO) == OWNER_FILES
    texts = [page.content(), space.log()]
    for token in TOKENS:
        assert not any(token in text for text in texts), token
    for path in space.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            assert not any(token.encode() in content for token in TOKENS), path
