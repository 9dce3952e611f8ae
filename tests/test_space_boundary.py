"""The Space's trust boundary without a browser: escaping, the message filter, Hub ids, settings, credentials.

Hostile inputs come from a table; each test says what must hold for every row. Markdown is rendered by markdown-it-py
(a CommonMark renderer independent of the escaping code) to check that escaped text shows as exactly its characters.
"""

from __future__ import annotations

import errno
import html
import importlib.util
import logging
import re
import os
import shutil
import sys
from pathlib import Path

import pytest

# The Space's own dependencies (hf_tlcv[space]: gradio brings httpx and markdown-it-py); without them, nothing to test.
pytest.importorskip("httpx")
pytest.importorskip("markdown_it")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "spaces"))

import boundary  # noqa: E402
from boundary import (  # noqa: E402
    RunSettings,
    VisitorError,
    bounded,
    check_hub_repo,
    hub_repo_id,
    identity_markdown,
    push_credentials,
    redact,
    ticked,
    visitor_message,
)

from hf_tlcv.escaping import escape_markdown, markdown_link  # noqa: E402
from hf_tlcv.hub.push import HubPushError  # noqa: E402
from hf_tlcv.upload import UploadError  # noqa: E402

TOKEN = "hf_VisitorToken0123456789abcdefghijkl"
HOSTILE_NAMES = [
    "[click me](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "![pixel](http://tracker.example/p.png)",
    "**bold** _it_ ~~gone~~ `code`",
    "# heading",
    "1. list",
    "- item",
    "> quote",
    "| a | b |",
    "$$x^2$$",
    "a\\b\\[c",
    "&lt;b&gt; &amp;",
    "line one\n# line two",
    "[ref]: http://evil.example",
    "cat_photos",
    "\u202eevil\u202c",
]


def markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def shown_text(rendered: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_escaped_text_renders_as_exactly_its_characters(name):
    md = markdown()
    for context in ("{}", "**Error:** the class {} has one image.", "- Classes (2): {}, dog"):
        rendered = md.render(context.format(escape_markdown(name)))
        assert not re.search(r"<(a|img|script|h\d|ol|ul|blockquote|table|code|em|strong|del)\b",
                             rendered.replace("<strong>Error:</strong>", "").replace("<ul>\n<li>", "").replace(
                                 "</li>\n</ul>", "")), rendered
        expected = " ".join(name.replace("\u202e", "").replace("\u202c", "").split())
        assert expected in " ".join(shown_text(rendered).split())


def test_markdown_links_go_only_to_http_and_keep_their_target_whole():
    link = markdown_link("me/model (v2)", "https://huggingface.co/me/model (v2)")
    rendered = markdown().renderInline(link)
    assert rendered == '<a href="https://huggingface.co/me/model%20%28v2%29">me/model (v2)</a>'
    for bad in ("javascript:alert(1)", "data:text/html,x", "file:///etc/passwd"):
        with pytest.raises(ValueError, match="Only http"):
            markdown_link("x", bad)


# ---- the message filter ----------------------------------------------------------------------------------------------
def _hub_error(status: int, cls_name: str = "HfHubHTTPError"):
    import httpx
    from huggingface_hub import errors

    response = httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/x"))
    return getattr(errors, cls_name)(f"{status} Client Error for url https://huggingface.co/api/x", response=response)


def _raised(exc: BaseException, wrap=None) -> BaseException:
    """`exc` as raised (with a traceback), optionally re-raised as `wrap(...) from None` inside its handler."""
    try:
        try:
            raise exc
        except BaseException:
            if wrap is None:
                raise
            raise wrap from None
    except BaseException as caught:  # noqa: BLE001
        return caught


def _push_error(inner):
    return _raised(inner, HubPushError(
        "Pushing the cross-validation run of /tmp/tlcv-space-abc123/visitor-xyz987/run-1 to the Hub repository "
        f"owner/model failed: 403 [{TOKEN}]. Retry with: `CVResults.load('/tmp/tlcv-space-abc123/visitor-xyz987/run-1')"
        ".push_to_hub('owner/model')`"))


MESSAGES = {
    # case: (exception, words the sentence must hold)
    "name too long": (_raised(OSError(errno.ENAMETOOLONG, "File name too long",
                                      "/tmp/tlcv-space-abc123/visitor-xyz987/upload-1/" + "x" * 300)), "too long"),
    "disk full": (_raised(OSError(errno.ENOSPC, "No space left on device", "/tmp/tlcv-space-abc123/x")), "disk space"),
    "push 403, cause hidden by `from None`": (_push_error(_hub_error(403)), "may not write there"),
    "push 401": (_push_error(_hub_error(401)), "did not accept your sign-in or token"),
    "push 500": (_push_error(_hub_error(503)), "server error (503)"),
    "push, cause unknown": (_raised(HubPushError(f"Pushing /tmp/tlcv-space-abc123/run-1 failed [{TOKEN}]")),
                            "press Push again"),
    "repo not found inside transformers' OSError": (
        _raised(_hub_error(404, "RepositoryNotFoundError"), OSError(
            "owner/private is not a local folder and is not a valid model identifier; pass `token=<your_token>` or "
            "run `hf auth login`")), "not found on the Hub, or it is private"),
    "gated": (_raised(_hub_error(403, "GatedRepoError")), "gated"),
    "unreachable": (_raised(ConnectionError("Failed to connect to 10.0.0.1:443 via /etc/proxy.conf")),
                    "could not be reached"),
    "library ValueError with a call": (_raised(ValueError(
        "The dataset has 1 class. Call KFoldConfig(fold_strategy='group') instead. See /work/main/hf_tlcv/folds.py.")),
        "The dataset has 1 class."),
    "upload error keeps its words": (_raised(UploadError(
        "No uploaded file at /tmp/gradio/abc/images.zip; upload a .zip of an image folder.")), "upload a .zip"),
    "visitor error with hostile text": (_raised(VisitorError("There is no run '[x](javascript:alert(1))'.")),
                                        "There is no run"),
    "memory": (_raised(MemoryError()), "out of memory"),
    "unexpected": (_raised(KeyError(f"/tmp/tlcv-space-abc123/visitor-xyz987 {TOKEN}")), "reference"),
}


@pytest.mark.parametrize("case", list(MESSAGES))
def test_every_exception_becomes_one_sentence_without_paths_tokens_or_calls(case, caplog, tmp_path):
    exc, words = MESSAGES[case]
    workdir = tmp_path / "tlcv-space-abc123"
    with caplog.at_level(logging.DEBUG, logger="hf_tlcv.space"):
        message = visitor_message(exc, secrets=[TOKEN], roots=[workdir])
    shown = shown_text(markdown().render(message))
    assert words in shown, shown
    for leak in (TOKEN, "/tmp", "tlcv-space-", "visitor-xyz", "/work/", "/etc/", "CVResults", "KFoldConfig(",
                 "token=", "hf auth login", "Traceback", "\n"):
        assert leak not in shown, (leak, shown)
    assert "<a " not in markdown().render(message)
    log = caplog.text
    assert TOKEN not in log and log.strip(), "the server log gets the detail, never the token"
    if words == "reference":  # unexpected: the log line and the sentence share the reference
        reference = re.search(r"reference (\w+)", shown).group(1)
        assert f"[{reference}]" in log and "Traceback" in log


def test_redact_hides_every_kind_of_server_path():
    text = (f"Errno 36 '/tmp/tlcv-space-x1/visitor-abcd1234/upload-1/cat' ~/private ../../etc/passwd "
            f"{Path.home()}/.cache/hf {sys.prefix}/lib tmpa1b2c3d4_ Bearer {TOKEN} cat/0.png 2/3 and/or")
    out = redact(text, [TOKEN])
    for leak in ("/tmp", "visitor-abcd", "~/private", "../../etc", str(Path.home()), sys.prefix, "tmpa1b2c3d4",
                 TOKEN):
        assert leak not in out, (leak, out)
    for kept in ("Errno 36", "cat/0.png", "2/3", "and/or"):  # the visitor's own relative names and plain words stay
        assert kept in out


# ---- Hub ids ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["google/vit-base-patch16-224-in21k", "beans", "me/run.v2_final", " me/x "])
def test_hub_ids_are_accepted(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub_repo_id(text, "model", "me/x") == text.strip()


NOT_HUB_IDS = ["/etc", "/etc/passwd", "..", "../visitor-abc/run-1", "~", "~/models", "~root/x", "outputs/demo",
               "evil-link", "evil-link/x", "file:///etc/passwd", "http://evil.example/x", "builtin:efficientnet-lite0",
               "a/b/c", "me/model--x", "x" * 97, "me/`rm`", "[x](javascript:alert(1))", "", "   "]


@pytest.mark.parametrize("text", NOT_HUB_IDS)
def test_anything_but_a_hub_id_is_refused_without_touching_the_path(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "demo").mkdir(parents=True)  # a server folder named like a repo id
    (tmp_path / "evil-link").symlink_to("/etc")
    with pytest.raises(VisitorError, match="Type a Hub model id|is not a Hub model id the Space can load"):
        hub_repo_id(text, "model", "google/vit-base-patch16-224-in21k")


def test_hub_repositories_are_looked_up_with_the_visitors_credentials_and_sized(local_hub):
    from huggingface_hub.errors import RepositoryNotFoundError

    local_hub.add_user("owner", "hf_owner_token_0123456789abcdefghijklmnop")
    local_hub.add_repo("owner/private-model", {"model.safetensors": b"x" * 10, "config.json": b"{}"}, private=True)
    local_hub.add_repo("someone/big-model", {"model.safetensors": b"x" * 5000, "pytorch_model.bin": b"x" * 5000,
                                             "config.json": b"{}"})
    assert check_hub_repo("someone/big-model", "model", False, max_bytes=6000) == 5002  # one weight format counted
    with pytest.raises(VisitorError, match="more than the 0 MB"):
        check_hub_repo("someone/big-model", "model", False, max_bytes=4000)
    with pytest.raises(RepositoryNotFoundError):  # anonymous: the owner's private repository does not exist
        check_hub_repo("owner/private-model", "model", False, max_bytes=10**6)
    with pytest.raises(RepositoryNotFoundError):  # nor with another visitor's token
        check_hub_repo("owner/private-model", "model", TOKEN, max_bytes=10**6)
    assert all(r.headers.get("Authorization") in (None, f"Bearer {TOKEN}") for r in local_hub.requests)


# ---- settings and credentials ----------------------------------------------------------------------------------------
STRATEGIES = ["Linear probe", "Full fine-tuning"]
GOOD = dict(strategy="Linear probe", freeze_layers=0, n_folds=5, n_repeats=1, epochs=3, learning_rate=3e-3,
            sample_cap=1000, image_size=128)
BAD_SETTINGS = {  # case: (the values sent, what the refusal tells the visitor to send instead)
    "folds": (dict(n_folds=10_000), "The folds k must be a whole number between 2 and 10 (got 10000)"),
    "one fold": (dict(n_folds=1), "The folds k must be a whole number between 2 and 10 (got 1)"),
    "fractional folds": (dict(n_folds=2.5), "The folds k must be a whole number between 2 and 10 (got 2.5)"),
    "repeats": (dict(n_repeats=50), "The repeats must be a whole number between 1 and 5 (got 50)"),
    "epochs": (dict(epochs=1e6), "The epochs must be a whole number between 1 and 20 (got 1000000.0)"),
    "negative lr": (dict(learning_rate=-1), "The learning rate must be a number between 1e-06 and 1 (got -1)"),
    "nan lr": (dict(learning_rate=float("nan")), "The learning rate must be a number between 1e-06 and 1 (got nan)"),
    "text": (dict(epochs="3; rm -rf /"), "The epochs must be a number between 1 and 20."),
    "cap": (dict(sample_cap=10**7), "The sample cap must be a whole number between 0 and 10000 (got 10000000)"),
    "size": (dict(image_size=8192), "The image size must be a whole number between 32 and 224 (got 8192)"),
    "size step": (dict(image_size=100), "The image size must be a multiple of 32 pixels (got 100)."),
    "strategy": (dict(strategy="exec"), "Choose what trains among: Linear probe, Full fine-tuning."),
    "none": (dict(n_folds=None), "The folds k must be a number between 2 and 10."),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_settings_out_of_the_pages_ranges_are_refused(case):
    values, refusal = BAD_SETTINGS[case]
    with pytest.raises(VisitorError, match=f"^{re.escape(refusal)}"):
        RunSettings.from_inputs(**{**GOOD, **values}, strategies=STRATEGIES)


def test_settings_in_range_pass_as_numbers():
    settings = RunSettings.from_inputs(**{**GOOD, "n_folds": 5.0, "learning_rate": "0.003"}, strategies=STRATEGIES)
    assert (settings.n_folds, settings.learning_rate, settings.image_size) == (5, 0.003, 128)


@pytest.mark.parametrize("value", [3, 11, 4.5, -4, "10; rm -rf /", None, float("nan"), 1e9])
def test_a_trial_count_outside_tunes_range_is_refused(value):
    with pytest.raises(VisitorError, match="trials must be"):
        bounded("n_trials", value)


def test_a_trial_count_in_range_passes_as_an_integer():
    assert [bounded("n_trials", v) for v in (4, "7", 10.0)] == [4, 7, 10]


@pytest.mark.parametrize("labels", [[], None, ["exec"], ["Linear probe", "linear_probe"], "Linear probe"])
def test_a_checklist_takes_only_its_own_choices(labels):
    with pytest.raises(VisitorError, match="Tick at least one strategy, among: Linear probe, Full fine-tuning"):
        ticked(labels, dict(zip(STRATEGIES, ("linear_probe", "full"))), "strategy")


def test_a_checklist_gives_the_values_of_the_ticked_choices_once_in_order():
    offered = dict(zip(STRATEGIES, ("linear_probe", "full")))
    assert ticked(["Full fine-tuning", "Linear probe", "Full fine-tuning"], offered, "strategy") == ("full",
                                                                                                     "linear_probe")


def test_a_push_uses_the_visitors_own_credentials_in_order_and_never_prints_them():
    assert push_credentials(f" {TOKEN} ", "oauth-token", "local-token").source == "pasted"
    assert push_credentials("", "oauth-token", "local-token") == boundary.PushCredentials("oauth-token", "oauth")
    assert push_credentials("", None, "local-token").source == "local"
    assert push_credentials("  ", None, None) == boundary.PushCredentials(None, "none")
    assert TOKEN not in repr(push_credentials(TOKEN, None, None))
    assert "never pushes with its own credentials" in identity_markdown("none")
    assert "your Hugging Face account (\\<b\\>ana\\</b\\>)" in identity_markdown("oauth", "<b>ana</b>")
    assert "the token you pasted" in identity_markdown("pasted")
    assert "--use-local-token" in identity_markdown("local", "me")


@pytest.mark.integration  # no app is started, but `spaces/app.py` imports Gradio (seconds of CPU): not the fast tier
def test_the_local_token_flag_is_refused_on_a_space_and_beyond_this_machine(monkeypatch):
    pytest.importorskip("gradio")
    spec = importlib.util.spec_from_file_location("space_app", REPO / "spaces" / "app.py")
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "space_app", app)  # dataclasses look their module up there
    spec.loader.exec_module(app)
    monkeypatch.setenv("HF_TOKEN", "hf_OwnerSpaceSecret0123456789abcdefXYZ")
    monkeypatch.setenv("SPACE_ID", "owner/hf-tlcv")
    with pytest.raises(SystemExit, match="Visitors sign in or paste their own token instead"):
        app.local_credentials(True, "127.0.0.1")
    assert app.main(["--use-local-token"]) == 2  # refused before anything starts
    monkeypatch.delenv("SPACE_ID")
    with pytest.raises(SystemExit, match="refused with --host 0.0.0.0: .*Serve it on 127.0.0.1 for yourself"):
        app.local_credentials(True, "0.0.0.0")
    assert app.local_credentials(False, "0.0.0.0") == (None, None)  # without the flag, no token is read at all


# ---- the model card ----------------------------------------------------------------------------------------------------
def test_class_names_from_an_upload_are_text_in_the_model_card(tmp_path, monkeypatch):
    """Folder names of a stranger's zip become class names; the pushed card shows them, and only as text."""
    import gc

    from conftest import image_dataset, make_config, tiny_model
    from datasets import ClassLabel

    from hf_tlcv import KFoldTrainer
    from hf_tlcv.hub.card import CVCardData, build_model_card

    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)  # see tests/test_hub.py
    names = ["[click me](javascript:alert(1))", "<img src=x onerror=alert(1)>", "# cat"]
    data = image_dataset().cast_column("label", ClassLabel(names=names))
    results = KFoldTrainer(tiny_model("vit"), make_config(tmp_path, n_folds=3, num_train_epochs=1),
                           train_dataset=data).cross_validate()
    card = str(build_model_card(results, CVCardData(repo_id="me/cv", task="image-classification"), tmp_path))
    rendered = markdown().render(card.split("---", 2)[2])
    # The card's own plots are images; a class name never becomes a link, an element or a heading.
    assert not re.search(r"<a [^>]*javascript|<img [^>]*onerror|<h1>cat", rendered), rendered
    assert "Classes (3): [click me](javascript:alert(1)), <img src=x onerror=alert(1)>, # cat" in shown_text(rendered)


@pytest.mark.parametrize("text", ["../../etc", "/etc/passwd", "~/models", "../visitor-abc/run-1"])
def test_a_refusal_quotes_the_visitors_own_text_as_typed(text, tmp_path, monkeypatch):
    """The id the visitor typed comes back as they typed it (escaped), not as '<server folder>': it tells them nothing
    about this machine, and garbling it hides their mistake. The rest of the sentence is still redacted."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VisitorError) as caught:
        hub_repo_id(text, "model", "google/vit-base-patch16-224-in21k")
    message = visitor_message(caught.value, roots=[tmp_path])
    assert shown_text(markdown().render(message)).startswith(repr(text)), message
    assert "server folder" not in message
    token = "hf_" + "a" * 34
    with pytest.raises(VisitorError) as caught:
        hub_repo_id(f"{token}/x/y", "model", "me/x")
    assert token not in visitor_message(caught.value)  # a token typed as an id is still masked


def test_the_visitors_own_text_still_loses_this_machines_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server_path = str(tmp_path / "tlcv-space-abcd1234" / "visitor-efgh5678" / "run-1")
    with pytest.raises(VisitorError) as caught:
        hub_repo_id(server_path, "model", "me/x")
    message = visitor_message(caught.value, roots=[tmp_path])
    assert str(tmp_path) not in message and "tlcv-space-abcd" not in message and "visitor-efgh" not in message


# ---- budgets and the line (issue 24) ---------------------------------------------------------------------------------
def test_work_grows_with_every_factor_and_the_issues_reproductions_are_over_budget():
    from boundary import BUDGETS, work_units

    base = dict(n_rows=1000, image_size=128, fold_trainings=5, n_folds=5, epochs=3, strategy="full")
    units = work_units(**base)
    assert work_units(**{**base, "fold_trainings": 10}) > 1.9 * units  # trainings, epochs: proportional
    assert work_units(**{**base, "epochs": 6}) > 1.9 * units
    assert work_units(**{**base, "image_size": 256}) == pytest.approx(4 * units)  # the image area
    assert work_units(**{**base, "strategy": "linear_probe"}) < 0.1 * units  # features once, then the head only
    # The page's defaults fit; the same run fully fine-tuned fits too (about 20 minutes on the Space).
    assert work_units(1000, 128, 5, 5, 3, "linear_probe") < work_units(1000, 128, 5, 5, 3, "full") < BUDGETS.max_work
    # What the issue reproduced does not: Tune at 10 trials x 10 folds x 20 epochs at 224 px, a full fine-tune at
    # k = 10 x 5 repeats.
    assert work_units(10_000, 224, 10 * 10, 10, 20, "full") > 100 * BUDGETS.max_work
    assert work_units(1000, 128, 10 * 5, 10, 3, "full") > BUDGETS.max_work


def test_an_owner_sets_the_budgets_through_the_environment():
    from boundary import Budgets

    budgets = Budgets.from_env({"HF_TLCV_SPACE_MAX_CLASSES": "300", "HF_TLCV_SPACE_MAX_JOB_SECONDS": "40"})
    assert (budgets.max_classes, budgets.max_job_seconds, budgets.max_work) == (300, 40, Budgets().max_work)
    assert "300 classes" in budgets.describe() and "40 s" in budgets.describe()
    with pytest.raises(SystemExit, match="HF_TLCV_SPACE_MAX_CLASSES must be a whole number"):
        Budgets.from_env({"HF_TLCV_SPACE_MAX_CLASSES": "many"})


def test_the_line_takes_one_job_per_visitor_in_order_and_is_bounded(tmp_path):
    pytest.importorskip("gradio")
    from app import Job, JobQueue, Visitor

    line = JobQueue(max_waiting=2)
    ann, bob, cid, dan = (Visitor(tmp_path / name) for name in "abcd")
    first, second = Job(ann, "run"), Job(bob, "study")
    line.join(first)
    line.join(second)
    assert line.place(first) == (0, 1) and line.place(second) == (1, 1)
    with pytest.raises(VisitorError, match="Your cross-validation is still queued or running: one job per visitor"):
        line.join(Job(ann, "tune"))  # whatever the tab
    line.join(Job(cid, "run"))
    with pytest.raises(VisitorError, match="The Space is busy: 2 jobs are waiting"):
        line.join(Job(dan, "run"))
    line.leave(first)
    assert ann.job is None and line.place(second) == (0, 1)  # the next one has the machine
    line.join(Job(ann, "tune"))  # and the first visitor may queue again
    assert line.place(ann.job) == (2, 2)


def test_work_folders_of_a_dead_app_are_removed_at_the_next_start():
    import subprocess
    import tempfile

    pytest.importorskip("gradio")
    from app import OWNER_FILE, remove_stale_workdirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {}
    for name, owner in (("dead", str(dead.pid)), ("alive", str(os.getppid())), ("unowned", None)):
        folder = Path(tempfile.mkdtemp(prefix="tlcv-space-"))
        (folder / "visitor-x").mkdir()
        if owner is not None:
            (folder / OWNER_FILE).write_text(owner)
        folders[name] = folder
    try:
        removed = remove_stale_workdirs()
        assert folders["dead"] in removed and not folders["dead"].exists()  # killed for memory: its files go
        assert folders["alive"].exists() and folders["unowned"].exists()  # a running app's, or not ours to judge
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def test_making_room_evicts_old_zips_and_runs_but_never_the_newest_of_either(tmp_path):
    pytest.importorskip("gradio")
    from app import RunRecord, SpaceApp, Visitor
    from boundary import Budgets

    def write(path: Path, megabytes: int) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (megabytes * 2**20))
        return path

    app = SpaceApp(tmp_path / "space", budgets=Budgets(visitor_disk_bytes=10 * 2**20))
    visitor = Visitor(tmp_path / "space" / "visitor-a")
    zips = [write(visitor.root / "downloads" / f"hf_tlcv-run-{i}.zip", 2) for i in (1, 2, 3)]
    for i in (1, 2, 3):
        folder = visitor.root / f"run-{i}"
        write(folder / "model.safetensors", 3)
        visitor.runs[folder.name] = RunRecord(folder, f"Run {i}", None, visitor.root / "jobs" / f"run-{i}")
    app._make_room(visitor, target=1.0)  # 6 MB of zips and 9 MB of runs in a 10 MB quota
    assert not zips[0].exists() and not zips[1].exists() and zips[2].exists()  # the one the page just offered stays
    assert list(visitor.runs) == ["run-2", "run-3"] and not (visitor.root / "run-1").exists()
