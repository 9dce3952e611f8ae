"""A small local server that speaks the Hugging Face Hub's HTTP protocol, for tests that push and download.

The real `huggingface_hub` client talks to it exactly as it talks to huggingface.co, for the calls hf_tlcv makes:
creating a repository, uploading a folder (small files, "regular" uploads), validating a model card's YAML metadata
as the Hub does (`validate_card_metadata`: a mapping, `license`, `tags` and the `model-index` structure), reading
repository info and file trees, and downloading files (`hf_hub_download`, `snapshot_download`, `list_repo_files`).
Everything lives in memory; every repository keeps its list of commits.

In-process use (pytest): the `local_hub` fixture starts a server and points `huggingface_hub` at it.

```python
def test_push(local_hub):                      # local_hub is a HubServer
    HfApi().create_repo("me/repo")             # goes to 127.0.0.1
    assert local_hub.files("me/repo") == {...}  # path -> bytes at the head of main
```

Standalone (another process, e.g. a Gradio app under a browser test):

    python tests/hub_server.py --port 0        # prints "HUB_URL http://127.0.0.1:PORT" and serves until killed

then start the client process with `HF_ENDPOINT=<that URL>` (read by huggingface_hub at import) and
`HF_HUB_OFFLINE=0`.

API of `HubServer` (thread-safe):
    HubServer(host="127.0.0.1", port=0)      start with `.start()` (returns self) or as a context manager.
    .url                                    "http://127.0.0.1:PORT".
    .stop()                                 shut down.
    .requests                               list of `Request(method, path, headers, query, body)` received,
                                            in order (headers as a case-insensitive dict; body as bytes).
    .commits(repo_id, repo_type="model")    list of `Commit(oid, message, files)` on main, oldest first; `files`
                                            are the paths added or changed by that commit.
    .files(repo_id, repo_type="model")      {path: bytes} at the head of main.
    .repos                                  {(repo_type, repo_id): Repo}; `Repo.private`.
    .fail_next(n=1, status=500, path=None, method=None)
                                            the next `n` requests whose path contains `path` (any when None) and
                                            whose method equals `method` (any when None) are answered with
                                            `status` and a JSON error, before doing anything.
    .clear_faults()                         drop the failures not yet used.
    .require_token(token)                   from now on, requests without `Authorization: Bearer <token>` get 401
                                            (None turns the check off).
    .reset()                                forget repositories, requests, faults and users.

Accounts and permissions, as the Hub enforces them (off until the first `add_user`):
    .add_user(name, token)                  register an account and its token. From then on every write (create,
                                            preupload, commit, delete) needs a registered token (else 401) and may
                                            only touch repositories in that account's namespace (else 403); a repo id
                                            without a namespace is created in the token's. Private repositories are
                                            readable only with their owner's token (else 404, as on the Hub).
                                            `whoami` answers with the token's account.
    .add_repo(repo_id, files, private=False, repo_type="model")
                                            a repository that already exists, with one commit holding `files`.
    .writes                                 list of `WriteAttempt(method, path, user, status)`: every request that
                                            would create, change or delete something, allowed or refused, in order
                                            (`user` is None for a missing or unknown token).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


def git_blob_sha(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    query: dict
    body: bytes


@dataclass
class Commit:
    oid: str
    message: str
    files: list[str]
    snapshot: dict[str, bytes] = field(repr=False, default_factory=dict)


@dataclass
class WriteAttempt:
    method: str
    path: str
    user: str | None
    status: int


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool = False
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> dict[str, bytes]:
        return dict(self.commits[-1].snapshot) if self.commits else {}

    def snapshot(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision in ("main", "HEAD"):
            if not self.commits:
                return ("0" * 40, {})
            return self.commits[-1].oid, self.commits[-1].snapshot
        for commit in self.commits:
            if commit.oid == revision:
                return commit.oid, commit.snapshot
        return None


class _CaseInsensitive(dict):
    def __init__(self, items):
        super().__init__((k.lower(), v) for k, v in items)

    def get(self, key, default=None):
        return super().get(key.lower(), default)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())


_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_WRITES = {"create_repo", "preupload", "commit", "delete_repo"}
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("DELETE", re.compile(r"^/api/repos/delete$"), "delete_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets|spaces)/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets|spaces)/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets|spaces)/{_REPO}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?$"), "tree"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets|spaces)/{_REPO}/revision/(?P<rev>[^/]+)$"), "info"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets|spaces)/{_REPO}$"), "info"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("GET", re.compile(rf"^/(?:(?P<type>datasets|spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/(?:(?P<type>datasets|spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$"), "resolve"),
]


class HubServer:
    """An in-memory Hub for tests (see the module docstring for its API)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self._faults: list[dict] = []
        self._token: str | None = None
        self._users: dict[str, str] = {}  # token -> account name
        self.writes: list[WriteAttempt] = []
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        # a short poll interval: stop() (every test's teardown) waits up to one interval for the serving loop
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- test helpers ------------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500, path: str | None = None, method: str | None = None) -> None:
        with self._lock:
            self._faults.append({"n": n, "status": status, "path": path, "method": method})

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def require_token(self, token: str | None) -> None:
        with self._lock:
            self._token = token

    def reset(self) -> None:
        with self._lock:
            self.repos.clear()
            self.requests.clear()
            self._faults.clear()
            self._token = None
            self._users.clear()
            self.writes.clear()

    def add_user(self, name: str, token: str) -> None:
        with self._lock:
            self._users[token] = name

    def add_repo(self, repo_id: str, files: dict[str, bytes], private: bool = False,
                 repo_type: str = "model") -> None:
        with self._lock:
            repo = Repo(repo_id, repo_type, private=private)
            oid = hashlib.sha1(f"{repo_id}:seed".encode()).hexdigest()
            repo.commits.append(Commit(oid, "initial commit", sorted(files), dict(files)))
            self.repos[(repo_type, repo_id)] = repo

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
            return list(repo.commits) if repo else []

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
            return repo.head if repo else {}

    # ---- request handling --------------------------------------------------------------------------------
    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _handle(self):
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, unquote(split.path), _CaseInsensitive(self.headers.items()),
                                  parse_qs(split.query), body)
                status, headers, payload = server._dispatch(request)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle

        return Handler

    def _dispatch(self, request: Request) -> tuple[int, dict, bytes]:
        with self._lock:
            self.requests.append(request)
            for fault in self._faults:
                if fault["n"] > 0 and (fault["path"] is None or fault["path"] in request.path) and (
                        fault["method"] is None or fault["method"] == request.method):
                    fault["n"] -= 1
                    return _error(fault["status"], f"Injected failure {fault['status']}")
            if self._token is not None and request.headers.get("Authorization") != f"Bearer {self._token}":
                return _error(401, "Invalid credentials in Authorization header", code="RepoNotFound")
            for method, pattern, name in _ROUTES:
                if method != request.method:
                    continue
                match = pattern.match(request.path)
                if match:
                    refused = self._permission(request, name, match.groupdict())
                    if refused is not None:
                        return refused
                    try:
                        response = getattr(self, f"_{name}")(request, **match.groupdict())
                    except Exception as exc:  # a bug in the fake must show up as a 500, not hang the client
                        response = _error(500, f"hub_server error: {exc!r}")
                    if name in _WRITES:
                        self.writes.append(WriteAttempt(request.method, request.path, self._user(request),
                                                        response[0]))
                    return response
            if request.method in ("POST", "PUT", "DELETE", "PATCH"):  # a write this fake does not know: recorded too
                self.writes.append(WriteAttempt(request.method, request.path, self._user(request), 404))
            return _error(404, f"No route for {request.method} {request.path}")

    # ---- accounts and permissions --------------------------------------------------------------------------
    def _user(self, request: Request) -> str | None:
        auth = request.headers.get("Authorization") or ""
        return self._users.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None

    def _permission(self, request: Request, route: str, groups: dict):
        """None when the request may go on, else the refusal the Hub would answer (recorded for writes)."""
        if not self._users:
            return None
        user = self._user(request)
        if route in _WRITES:
            if user is None:
                status, message = 401, "Invalid credentials in Authorization header"
            else:
                repo_id = groups.get("repo") or self._create_target(request, user)
                if repo_id.split("/")[0] == user:
                    return None
                status, message = 403, f"You don't have the rights to write to {repo_id}"
            self.writes.append(WriteAttempt(request.method, request.path, user, status))
            return _error(status, message)
        repo = self._repo(groups.get("type"), groups["repo"]) if groups.get("repo") else None
        if repo is not None and repo.private and repo.repo_id.split("/")[0] != user:
            return _error(404, "Repository not found", code="RepoNotFound")
        return None

    @staticmethod
    def _create_target(request: Request, user: str) -> str:
        data = json.loads(request.body or b"{}")
        return f"{data.get('organization') or user}/{data.get('name', '')}"

    def _repo(self, type_: str | None, repo_id: str) -> Repo | None:
        repo_type = {"models": "model", "datasets": "dataset", "spaces": "space", None: "model"}[type_]
        return self.repos.get((repo_type, repo_id))

    # ---- endpoints ---------------------------------------------------------------------------------------
    def _create_repo(self, request: Request):
        data = json.loads(request.body or b"{}")
        name, org = data["name"], data.get("organization") or self._user(request)
        repo_id = f"{org}/{name}" if org else name
        repo_type = data.get("type") or "model"
        key = (repo_type, repo_id)
        url = f"{self.url}/{repo_id}" if repo_type == "model" else f"{self.url}/{repo_type}s/{repo_id}"
        if key in self.repos:
            return _json({"error": "You already created this model repo", "url": url}, 409)
        private = data.get("visibility", "private" if data.get("private") else "public") != "public"
        self.repos[key] = Repo(repo_id, repo_type, private=private)
        return _json({"url": url, "name": repo_id})

    def _delete_repo(self, request: Request):
        data = json.loads(request.body or b"{}")
        key = (data.get("type") or "model", f"{data['organization']}/{data['name']}" if data.get("organization")
               else data["name"])
        if self.repos.pop(key, None) is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        return _json({})

    def _validate_yaml(self, request: Request):
        data = json.loads(request.body or b"{}")
        content = data.get("content")
        if isinstance(content, str):
            errors, warnings = validate_card_metadata(content, data.get("repoType") or "model")
        else:
            errors, warnings = ['"content" must be a string'], []
        status = 400 if errors else 200
        # RepoCard.validate asks for text/plain and raises ValueError(reply text) on a 400; HfApi's upload reads
        # the JSON lists and joins their messages into "Invalid metadata in README.md.".
        if "text/plain" in (request.headers.get("Accept") or ""):
            text = "\n".join(f"- Error: {e}" for e in errors) or "\n".join(f"- Warning: {w}" for w in warnings)
            return status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()
        return _json({"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]},
                     status)

    def _preupload(self, request: Request, type: str, repo: str, rev: str):
        target = self._repo(type, repo)
        if target is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        head = target.head
        files = []
        for item in json.loads(request.body)["files"]:
            existing = head.get(item["path"])
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_sha(existing) if existing is not None else None})
        return _json({"files": files, "commitOid": target.commits[-1].oid if target.commits else None})

    def _commit(self, request: Request, type: str, repo: str, rev: str):
        target = self._repo(type, repo)
        if target is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        if unquote(rev) != "main":
            return _error(404, f"Revision {rev} not found (this fake knows only main)", code="RevisionNotFound")
        snapshot = target.head
        message, changed = "", []
        for line in request.body.decode().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            key, value = entry["key"], entry["value"]
            if key == "header":
                message = value.get("summary", "")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    return _error(400, "only base64 file content is supported")
                snapshot[value["path"]] = base64.b64decode(value["content"])
                changed.append(value["path"])
            elif key == "deletedFile":
                snapshot.pop(value["path"], None)
                changed.append(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in snapshot if p.startswith(prefix)]:
                    snapshot.pop(path)
                    changed.append(path)
            else:
                return _error(400, f"{key} operations are not supported by this test server (LFS/copy)")
        oid = hashlib.sha1(f"{repo}:{len(target.commits)}:{time.time_ns()}".encode()).hexdigest()
        target.commits.append(Commit(oid, message, changed, snapshot))
        prefix = self.url if target.repo_type == "model" else f"{self.url}/{target.repo_type}s"
        return _json({"commitUrl": f"{prefix}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

    def _lookup(self, type: str, repo: str, rev: str):
        """(repo, (sha, files)) at `rev`, or (a 404 response, None) when the repo or revision does not exist."""
        target = self._repo(type, repo)
        if target is None:
            return _error(404, "Repository not found", code="RepoNotFound"), None
        found = target.snapshot(unquote(rev))
        if found is None:
            return _error(404, f"Invalid rev id: {rev}", code="RevisionNotFound"), None
        return target, found

    def _info(self, request: Request, type: str, repo: str, rev: str = "main"):
        target, found = self._lookup(type, repo, rev)
        if found is None:
            return target  # the 404 response
        sha, files = found
        return _json({"id": repo, "modelId": repo, "sha": sha, "private": target.private, "disabled": False,
                      "gated": False, "tags": [], "downloads": 0, "likes": 0,
                      "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                      "siblings": [{"rfilename": p, "size": len(files[p]), "blobId": git_blob_sha(files[p])}
                                   for p in sorted(files)]})

    def _tree(self, request: Request, type: str, repo: str, rev: str, sub: str | None = None):
        target, found = self._lookup(type, repo, rev)
        if found is None:
            return target  # the 404 response
        _, files = found
        recursive = request.query.get("recursive", ["false"])[0].lower() == "true"
        prefix = sub.strip("/") + "/" if sub and sub.strip("/") else ""
        entries, folders = [], set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": git_blob_sha(folder.encode())})
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": path, "size": len(files[path]),
                                "oid": git_blob_sha(files[path])})
        return _json(entries)

    def _whoami(self, request: Request):
        auth = request.headers.get("Authorization")
        if not auth:
            return _error(401, "Unauthorized")
        name = self._user(request) if self._users else "tester"
        if name is None:
            return _error(401, "Invalid credentials in Authorization header")
        return _json({"type": "user", "name": name, "fullname": name.title(), "avatarUrl": "",
                      "orgs": [], "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def _resolve(self, request: Request, type: str | None, repo: str, rev: str, file: str):
        target, found = self._lookup(type, repo, rev)
        if found is None:
            return target  # the 404 response
        sha, files = found
        if file not in files:
            return _error(404, f"Entry not found: {file}", code="EntryNotFound", commit=sha)
        content = files[file]
        headers = {"ETag": f'"{git_blob_sha(content)}"', "X-Repo-Commit": sha,
                   "Content-Type": "application/octet-stream"}
        range_header = request.headers.get("Range")
        match = re.match(r"bytes=(\d+)-(\d*)$", range_header or "")
        if match and request.method == "GET":
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return 206, headers, content[start:end + 1]
        headers["Content-Length"] = str(len(content))
        return 200, headers, content


# ---- model card metadata, checked as POST /api/validate-yaml checks it ----------------------------------------------
MISSING_METADATA = ("Empty or missing yaml metadata in repo card "
                    "(https://huggingface.co/docs/hub/model-cards#model-card-metadata)")


def validate_card_metadata(content: str, repo_type: str = "model") -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README's YAML metadata, in the Hub's words ("<path>" is required, must be ...).

    Checked: the block (found with huggingface_hub's own `REGEX_YAML_BLOCK`, which the Hub shares) parses as a YAML
    mapping; `license` is a string; `tags` a list of strings; and for model repositories `model-index` is a list of
    entries with `name` (string) and `results` (list), each result with `task` (`type` required, `name` optional),
    optional `dataset` (`type` and `name` required) and `metrics`: a list of entries with `type` (string) and a
    numeric `value` (`name` optional). A README without metadata is valid with a warning, as on the Hub. Not
    checked: the Hub's lists of known licenses, languages and pipeline tags.
    """
    import yaml
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(content)
    if match is None:
        return [], [MISSING_METADATA]
    try:
        metadata = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return [f"YAML metadata does not parse: {' '.join(str(exc).split())}"], []
    if metadata is None:
        return [], [MISSING_METADATA]
    if not isinstance(metadata, dict):
        return ['"metadata" must be of type object'], []
    errors: list[str] = []
    _check(metadata, "license", _STRING, errors)
    if _check(metadata, "tags", list, errors):
        for i, tag in enumerate(metadata["tags"]):
            if not isinstance(tag, str):
                errors.append(f'"tags[{i}]" must be a string')
    if repo_type == "model" and _check(metadata, "model-index", list, errors):
        _check_model_index(metadata["model-index"], errors)
    return errors, []


_STRING, _NUMBER = "a string", "a number"
_KINDS = {_STRING: lambda v: isinstance(v, str), _NUMBER: lambda v: isinstance(v, (int, float))
          and not isinstance(v, bool), list: lambda v: isinstance(v, list), dict: lambda v: isinstance(v, dict)}
_KIND_WORDS = {_STRING: "a string", _NUMBER: "a number", list: "an array", dict: "of type object"}


def _check(parent: dict, key: str, kind, errors: list[str], path: str = "", required: bool = False) -> bool:
    """Whether `parent[key]` is there and of `kind`; a missing required key or a wrong kind is added to `errors`."""
    label = f"{path}.{key}" if path else key
    if key not in parent:
        if required:
            errors.append(f'"{label}" is required')
        return False
    if not _KINDS[kind](parent[key]):
        errors.append(f'"{label}" must be {_KIND_WORDS[kind]}')
        return False
    return True


def _objects(items: list, path: str, errors: list[str]):
    """`(path[i], item)` for each item of a list that is an object; any other item is added to `errors`."""
    for i, item in enumerate(items):
        if isinstance(item, dict):
            yield f"{path}[{i}]", item
        else:
            errors.append(f'"{path}[{i}]" must be of type object')


def _check_model_index(entries: list, errors: list[str]) -> None:
    for path, entry in _objects(entries, "model-index", errors):
        _check(entry, "name", _STRING, errors, path, required=True)
        if not _check(entry, "results", list, errors, path, required=True):
            continue
        for at, result in _objects(entry["results"], f"{path}.results", errors):
            if _check(result, "task", dict, errors, at, required=True):
                _check(result["task"], "type", _STRING, errors, f"{at}.task", required=True)
                _check(result["task"], "name", _STRING, errors, f"{at}.task")
            if _check(result, "dataset", dict, errors, at):
                for key in ("type", "name"):
                    _check(result["dataset"], key, _STRING, errors, f"{at}.dataset", required=True)
            if not _check(result, "metrics", list, errors, at, required=True):
                continue
            for where, metric in _objects(result["metrics"], f"{at}.metrics", errors):
                _check(metric, "type", _STRING, errors, where, required=True)
                _check(metric, "value", _NUMBER, errors, where, required=True)
                _check(metric, "name", _STRING, errors, where)


def _json(payload, status: int = 200) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _error(status: int, message: str, code: str | None = None, commit: str | None = None):
    headers = {"Content-Type": "application/json", "X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    if commit:
        headers["X-Repo-Commit"] = commit
    return status, headers, json.dumps({"error": message}).encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an in-memory Hugging Face Hub on 127.0.0.1 for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    server = HubServer(args.host, args.port).start()
    print(f"HUB_URL {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()


try:
    import pytest
except ImportError:  # standalone use without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def local_hub(tmp_path, monkeypatch):
        """A started [`HubServer`] with `huggingface_hub` pointed at it for the duration of one test.

        `HF_ENDPOINT` is read when huggingface_hub is imported, so the module constants the client reads at call
        time are patched instead: the endpoint and the resolve-URL template, offline mode off (conftest turns it
        on), and a private download cache and token file (no real login is ever read or written). Build `HfApi()`
        inside the test: the module-level `huggingface_hub.upload_folder` & co. are bound to an `HfApi` made at
        import time with the real endpoint.
        """
        from huggingface_hub import constants

        server = HubServer().start()
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
        monkeypatch.setenv("HF_ENDPOINT", server.url)  # for child processes
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        try:
            yield server
        finally:
            server.stop()
