"""`gx download` against a real local HTTP server: resume, checksums, safe unpacking, sign-mnist, models, --list."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from gesture_cli.core.errors import DownloadError
from gesture_cli.data.fetch import fetch_url, safe_extract

HEADER = "label," + ",".join(f"pixel{i}" for i in range(1, 785))


# --------------------------------------------------------------------------------------------------
# helpers


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # dropped connections are part of the tests
        pass


def _handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append((self.path, dict(self.headers)))
            if self.path in state.status:
                self.send_error(state.status[self.path])
                return
            path = state.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if m and state.ranges:
                start = int(m.group(1))
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                start = 0
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in state.drop_once:  # send half the body, then hang up
                state.drop_once.discard(self.path)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def http(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www, with Range support and a one-off drop."""
    root = tmp_path / "www"
    root.mkdir()
    state = SimpleNamespace(root=root, requests=[], drop_once=set(), ranges=True, status={})
    server = _QuietServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = lambda name: f"http://127.0.0.1:{server.server_address[1]}/{name}"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("GX_OFFLINE", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "gxhome"
    monkeypatch.setenv("GX_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "400")  # keep Rich from wrapping the one-line errors we compare
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


def gx(*args):
    from typer.testing import CliRunner

    from gesture_cli.cli.app import app

    return CliRunner().invoke(app, ["download", *[str(a) for a in args]], catch_exceptions=False)


def error_line(result) -> str:
    """The single non-empty line of a failed command's output."""
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int = 300_000) -> bytes:
    return bytes((i * 7919) % 251 for i in range(n))


def sign_csv(rows: int = 3, *, header: bool = True, columns: int = 785) -> str:
    lines = [HEADER] if header else []
    lines += [",".join(str((r + c) % 256) for c in range(columns)) for r in range(rows)]
    return "\n".join(lines) + "\n"


def kaggle_zip(path: Path) -> Path:
    """The layout of Kaggle's sign-language-mnist archive, with tiny CSVs and files to ignore."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("amer_sign2.png", b"\x89PNG not really")
        zf.writestr("american_sign_language.PNG", b"\x89PNG")
        zf.writestr("sign_mnist_train/sign_mnist_train.csv", sign_csv())
        zf.writestr("sign_mnist_test/sign_mnist_test.csv", sign_csv(header=False))
        zf.writestr("__MACOSX/sign_mnist_train/._sign_mnist_train.csv", b"junk")
    return path


# --------------------------------------------------------------------------------------------------
# plain URL downloads


def test_url_download_verifies_sha256_and_is_cached_afterwards(http, home):
    data = payload()
    (http.root / "data.bin").write_bytes(data)
    result = gx(http.url("data.bin"), "--sha256", sha(data))
    assert result.exit_code == 0, result.output
    assert "Downloaded data.bin" in result.output
    assert (home / "datasets" / "data.bin").read_bytes() == data
    assert tree(home / "datasets") == ["data.bin"]

    again = gx(http.url("data.bin"), "--sha256", sha(data))
    assert again.exit_code == 0 and "already cached" in again.output
    assert len(http.requests) == 1  # the cache answered, not the server


def test_checksum_mismatch_leaves_nothing_behind(http, home):
    data = payload()
    (http.root / "data.bin").write_bytes(data)
    wrong = "0" * 64
    result = gx(http.url("data.bin"), "--sha256", wrong)
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: checksum mismatch for {http.url('data.bin')}: expected sha256 {wrong}, got {sha(data)}; "
        "the download was deleted, check the URL and --sha256"
    )
    assert tree(home / "datasets") == []


def test_resume_after_dropped_connection(http, home):
    data = payload()
    (http.root / "data.bin").write_bytes(data)
    http.drop_once.add("/data.bin")
    result = gx(http.url("data.bin"), "--sha256", sha(data))
    assert result.exit_code == 0, result.output
    assert len(http.requests) == 2
    assert "Range" not in http.requests[0][1]
    assert http.requests[1][1]["Range"] == f"bytes={len(data) // 2}-"
    assert (home / "datasets" / "data.bin").read_bytes() == data
    assert tree(home / "datasets") == ["data.bin"]


def test_failed_download_keeps_only_the_part_and_a_rerun_resumes(http, tmp_path):
    data = payload()
    (http.root / "data.bin").write_bytes(data)
    http.drop_once.add("/data.bin")
    target = tmp_path / "out" / "data.bin"
    with pytest.raises(DownloadError, match=r"failed after 1 attempts: .*rerun the same command to resume from data\.bin\.part"):
        fetch_url(http.url("data.bin"), target, retries=0)
    assert tree(tmp_path / "out") == ["data.bin.part"]
    assert (tmp_path / "out" / "data.bin.part").stat().st_size == len(data) // 2

    seen = []
    result = fetch_url(http.url("data.bin"), target, sha256=sha(data), on_progress=lambda done, total: seen.append((done, total)))
    assert result.status == "downloaded" and target.read_bytes() == data
    assert http.requests[-1][1]["Range"] == f"bytes={len(data) // 2}-"
    assert seen[0] == (len(data) // 2, len(data)) and seen[-1] == (len(data), len(data))
    assert tree(tmp_path / "out") == ["data.bin"]


def test_server_without_range_support_restarts_from_zero(http, tmp_path):
    data = payload(50_000)
    (http.root / "data.bin").write_bytes(data)
    http.ranges = False
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes from another try")
    fetch_url(http.url("data.bin"), tmp_path / "data.bin", sha256=sha(data))
    assert (tmp_path / "data.bin").read_bytes() == data
    assert not (tmp_path / "data.bin.part").exists()


def test_http_error_is_one_line(http, home):
    result = gx(http.url("missing.zip"))
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {http.url('missing.zip')} answered HTTP 404 Not Found; check the URL (and that it needs no login)"
    assert tree(home / "datasets") == []


def test_sign_mnist_url_refused_points_to_manual_download(http, home):
    http.status["/private.zip"] = 401
    result = gx("sign-mnist", "--url", http.url("private.zip"))
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: {http.url('private.zip')} refused the download (HTTP 401); download the archive from "
        "https://www.kaggle.com/datasets/datamunge/sign-language-mnist and run `gx download sign-mnist --from archive.zip`"
    )
    assert tree(home / "datasets") == []
    result = gx("sign-mnist", "--url", http.url("missing.zip"))  # 404 is not a login problem: plain message
    assert error_line(result) == f"Error: {http.url('missing.zip')} answered HTTP 404 Not Found; check the URL (and that it needs no login)"
    assert tree(home / "datasets") == []


def test_offline_mode_blocks_url_downloads_but_not_the_cache(http, home, monkeypatch):
    data = payload(1000)
    (http.root / "data.bin").write_bytes(data)
    monkeypatch.setenv("GX_OFFLINE", "1")
    result = gx(http.url("data.bin"))
    assert error_line(result) == (
        f"Error: offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE) and {home / 'datasets' / 'data.bin'} is not cached; unset it to download {http.url('data.bin')}"
    )
    assert http.requests == [] and tree(home / "datasets") == []
    monkeypatch.delenv("GX_OFFLINE")
    assert gx(http.url("data.bin")).exit_code == 0
    monkeypatch.setenv("GX_OFFLINE", "1")
    assert "already cached" in gx(http.url("data.bin")).output


def test_url_download_with_extract_unpacks_a_tarball(http, home):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in {"gestures/a.txt": b"alpha", "gestures/sub/b.txt": b"beta"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tf.addfile(info, io.BytesIO(text))
    (http.root / "gestures.tar.gz").write_bytes(buf.getvalue())
    result = gx(http.url("gestures.tar.gz"), "--sha256", sha(buf.getvalue()), "--extract")
    assert result.exit_code == 0, result.output
    dest = home / "datasets" / "gestures"
    assert (dest / "gestures" / "sub" / "b.txt").read_bytes() == b"beta"
    assert tree(home / "datasets") == ["gestures", "gestures/gestures", "gestures/gestures/a.txt", "gestures/gestures/sub", "gestures/gestures/sub/b.txt"]


# --------------------------------------------------------------------------------------------------
# safe extraction


def _zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name as given ('..', leading '/')
    return path


def test_zip_with_dotdot_member_is_refused_over_http(http, home, tmp_path):
    archive = _zip_with(http.root / "evil.zip", {"ok.txt": b"fine", "../evil.txt": b"gotcha"})
    result = gx(http.url("evil.zip"), "--extract")
    assert result.exit_code == 1
    assert error_line(result) == "Error: refusing to unpack evil.zip: member '../evil.txt' has a '..' component"
    assert tree(home / "datasets") == []  # no dest, no temp folder, no archive
    assert not (home / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert archive.exists()


@pytest.mark.parametrize(
    ("members", "bad", "why"),
    [
        ({"ok.txt": b"fine", "../evil.txt": b"x"}, "../evil.txt", "a '..' component"),
        ({"ok.txt": b"fine", "a/../../evil.txt": b"x"}, "a/../../evil.txt", "a '..' component"),
        ({"ok.txt": b"fine", "/tmp/gx-abs-evil.txt": b"x"}, "/tmp/gx-abs-evil.txt", "an absolute path"),
    ],
)
def test_unsafe_zip_members_are_refused(tmp_path, members, bad, why):
    archive = _zip_with(tmp_path / "a.zip", members)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DownloadError) as err:
        safe_extract(archive, out / "dest")
    assert str(err.value) == f"refusing to unpack a.zip: member '{bad}' has {why}"
    assert tree(out) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/gx-abs-evil.txt").exists()


def _tar_with(path: Path, *infos: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for info, data in infos:
            info.size = len(data) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_link("data/escape", "../../outside"), "member 'data/escape' has a link pointing outside (../../outside)"),
        (_link("data/etc", "/etc/passwd"), "member 'data/etc' has a link to the absolute path /etc/passwd"),
        (_link("hard", "../secret", tarfile.LNKTYPE), "member 'hard' has a hard link to ../secret"),
        ((lambda i: (setattr(i, "type", tarfile.CHRTYPE), (i, b""))[1])(tarfile.TarInfo("dev/null")), "member 'dev/null' has a device file"),
    ],
)
def test_unsafe_tar_members_are_refused_and_dest_is_untouched(tmp_path, member, message):
    ok = tarfile.TarInfo("data/ok.txt")
    archive = _tar_with(tmp_path / "a.tar", (ok, b"fine"), member)
    dest = tmp_path / "out" / "dest"
    dest.mkdir(parents=True)
    (dest / "mine.txt").write_text("the user's file")
    with pytest.raises(DownloadError) as err:
        safe_extract(archive, dest, replace=True)
    assert str(err.value) == f"refusing to unpack a.tar: {message}"
    assert tree(tmp_path / "out") == ["dest", "dest/mine.txt"]
    assert not (tmp_path / "outside").exists()


def test_safe_extract_keeps_links_inside_and_replaces_atomically(tmp_path):
    ok = tarfile.TarInfo("data/ok.txt")
    archive = _tar_with(tmp_path / "a.tar", (ok, b"fine"), _link("data/alias.txt", "ok.txt"))
    dest = tmp_path / "out" / "dest"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old")
    with pytest.raises(DownloadError, match="already exists; pass --force"):
        safe_extract(archive, dest)
    safe_extract(archive, dest, replace=True)
    assert (dest / "data" / "alias.txt").read_text() == "fine"
    assert tree(tmp_path / "out") == ["dest", "dest/data", "dest/data/alias.txt", "dest/data/ok.txt"]


# --------------------------------------------------------------------------------------------------
# Sign Language MNIST


def _assert_sign_mnist(home: Path) -> None:
    dest = home / "datasets" / "sign-mnist"
    assert sorted(os.listdir(dest)) == ["sign_mnist_test.csv", "sign_mnist_train.csv"]
    assert (dest / "sign_mnist_train.csv").read_text() == sign_csv()
    assert (dest / "sign_mnist_test.csv").read_text() == sign_csv(header=False)
    assert tree(home / "datasets") == ["sign-mnist", "sign-mnist/sign_mnist_test.csv", "sign-mnist/sign_mnist_train.csv"]


def test_sign_mnist_from_kaggle_zip(home, tmp_path):
    result = gx("sign-mnist", "--from", kaggle_zip(tmp_path / "archive.zip"))
    assert result.exit_code == 0, result.output
    assert "Downloaded sign-mnist" in result.output
    _assert_sign_mnist(home)
    again = gx("sign-mnist", "--from", tmp_path / "archive.zip")
    assert again.exit_code == 0 and "already cached" in again.output


def test_sign_mnist_from_directory(home, tmp_path):
    src = tmp_path / "kaggle"
    (src / "nested" / "sign_mnist_train").mkdir(parents=True)
    (src / "sign_mnist_test").mkdir()
    (src / "nested" / "sign_mnist_train" / "sign_mnist_train.csv").write_text(sign_csv())
    (src / "sign_mnist_test" / "sign_mnist_test.csv").write_text(sign_csv(header=False))
    (src / "amer_sign2.png").write_bytes(b"png")
    result = gx("sign-mnist", "--from", src)
    assert result.exit_code == 0, result.output
    _assert_sign_mnist(home)


def test_sign_mnist_from_url(http, home):
    kaggle_zip(http.root / "sign.zip")
    result = gx("sign-mnist", "--url", http.url("sign.zip"))
    assert result.exit_code == 0, result.output
    _assert_sign_mnist(home)  # the downloaded zip is gone once unpacked


def test_sign_mnist_url_from_environment(http, home, monkeypatch):
    kaggle_zip(http.root / "sign.zip")
    monkeypatch.setenv("GX_SIGN_MNIST_URL", http.url("sign.zip"))
    assert gx("sign-mnist").exit_code == 0
    assert http.requests[0][0] == "/sign.zip"
    _assert_sign_mnist(home)


def test_sign_mnist_rejects_wrong_columns_and_missing_files(home, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "sign_mnist_train.csv").write_text(sign_csv(columns=10, header=False))
    (bad / "sign_mnist_test.csv").write_text(sign_csv())
    result = gx("sign-mnist", "--from", bad)
    assert result.exit_code == 1
    assert error_line(result) == f"Error: sign_mnist_train.csv (from {bad}), line 1: 10 columns, expected 785 (label + 784 pixels); is this Sign Language MNIST?"
    assert tree(home / "datasets") == []

    (bad / "sign_mnist_test.csv").unlink()
    (bad / "sign_mnist_train.csv").write_text(sign_csv())
    result = gx("sign-mnist", "--from", bad)
    assert result.exit_code == 1
    assert error_line(result) == f"Error: no sign_mnist_test.csv below {bad}; pass the folder or Kaggle .zip that holds sign_mnist_train.csv and sign_mnist_test.csv"
    assert tree(home / "datasets") == []


def test_sign_mnist_offline_without_from_names_the_way_out(home, tmp_path):
    result = gx("sign-mnist")  # conftest sets HF_HUB_OFFLINE=1
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: sign-mnist is not in {home / 'datasets' / 'sign-mnist'} and offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE); "
        "pass --from FOLDER_OR_ZIP, or unset it to download https://www.kaggle.com/api/v1/datasets/download/datamunge/sign-language-mnist"
    )
    archive = kaggle_zip(tmp_path / "archive.zip")
    assert "does not match" in error_line(gx("sign-mnist", "--from", archive, "--sha256", "0" * 64))
    assert tree(home) == []
    assert gx("sign-mnist", "--from", archive, "--sha256", sha(archive.read_bytes())).exit_code == 0
    _assert_sign_mnist(home)


def test_list_shows_datasets_and_models(home, tmp_path):
    assert gx("sign-mnist", "--from", kaggle_zip(tmp_path / "archive.zip")).exit_code == 0
    _fake_snapshot(home, "owner/name")
    result = gx("--list")
    assert result.exit_code == 0, result.output
    assert re.search(r"sign-mnist\s*│\s*[\d.]+ kB\s*│\s*sign_mnist_test.csv, sign_mnist_train.csv", result.output), result.output
    assert re.search(r"owner/name\s*│\s*0123456789\s*│\s*main", result.output), result.output


# --------------------------------------------------------------------------------------------------
# models


def _fake_snapshot(home: Path, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567", repo_type: str = "model") -> Path:
    root = "models" if repo_type == "model" else "datasets"
    folder = home / root / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "dinov2"}')
    if repo_type == "dataset":
        (snapshot / "poses").mkdir()
        (snapshot / "poses" / "a.pose").write_bytes(b"pose")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return snapshot


def test_model_offline_not_cached_is_a_clean_error(home):
    result = gx("facebook/dinov2-small")  # conftest sets HF_HUB_OFFLINE=1
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: facebook/dinov2-small is not in the model cache {home / 'models'} and offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE); "
        "run `gx download facebook/dinov2-small` where there is network, or copy its cache folder there"
    )


def test_model_already_cached_offline_needs_no_network(home, monkeypatch):
    import socket as socket_mod

    def no_network(*args, **kwargs):
        raise AssertionError("gx download touched the network while offline")

    monkeypatch.setattr(socket_mod, "create_connection", no_network)
    snapshot = _fake_snapshot(home, "owner/name")
    result = gx("owner/name")
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())
    assert line.startswith(f"owner/name is already cached in {snapshot} (")
    assert "commit 0123456789 (offline: not checked for updates)" in line


def test_tiny_backbones_need_no_download(home):
    result = gx("tiny-dinov2")
    assert result.exit_code == 0
    assert result.output.strip() == "tiny-dinov2: built locally from a small config: nothing to download."
    assert tree(home) == []


def test_downloading_a_backbone_by_registry_name_does_not_import_torch(home):
    """DESIGN §1: commands that need no model start without torch or transformers; a registry name
    (dinov2-small, tiny-dinov2, a typo of one) is read from models/backbone_registry.py, not models/backbones.py."""
    import subprocess
    import sys

    _fake_snapshot(home, "facebook/dinov2-small")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gesture_cli.cli.app import app\n"
        "codes = [CliRunner().invoke(app, ['download', name]).exit_code for name in ('dinov2-small', 'tiny-dinov2', 'dinov2-smal')]\n"
        "print(codes, sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "GX_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 0, 2] []", out.stdout  # cached, nothing to download, unknown name; no torch


def _hub_error(cls, status: int):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
    return cls(f"{status} Client Error", response=response)


@pytest.fixture
def fake_hub(home, monkeypatch):
    """Replace huggingface_hub.snapshot_download: records its arguments, writes a snapshot or raises."""
    import huggingface_hub

    state = SimpleNamespace(calls=[], raise_=None)

    def snapshot_download(repo_id, **kwargs):
        state.calls.append((repo_id, kwargs))
        if state.raise_ is not None:
            raise state.raise_
        if kwargs.get("tqdm_class"):
            bar = kwargs["tqdm_class"](desc="Reconstructing", total=1000, unit="B")
            bar.update(400)
            bar.update(600)
            bar.close()
        return str(_fake_snapshot(home, repo_id, repo_type=kwargs.get("repo_type") or "model"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("GX_OFFLINE", raising=False)
    return state


def test_registry_model_download_fetches_what_build_backbone_reads(fake_hub, home, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_123")
    result = gx("dinov2-small", "--revision", "main")
    assert result.exit_code == 0, result.output
    repo_id, kwargs = fake_hub.calls[0]
    assert repo_id == "facebook/dinov2-small"
    assert kwargs["cache_dir"] == str(home / "models") and kwargs["revision"] == "main"
    assert kwargs["token"] == "hf_not_a_real_token_123" and kwargs["local_files_only"] is False
    assert kwargs["allow_patterns"] == ["*.json", "*.safetensors", "*.pt2", "*.pt"]
    assert "Downloaded facebook/dinov2-small" in " ".join(result.output.split())
    assert "hf_not_a_real_token_123" not in result.output
    assert not any("hf_not_a_real_token_123" in p.read_text(errors="ignore") for p in home.rglob("*") if p.is_file())


def test_gated_model_without_access_is_one_line(fake_hub, home):
    from huggingface_hub.errors import GatedRepoError

    fake_hub.raise_ = _hub_error(GatedRepoError, 401)
    result = gx("dinov3-vits16")
    assert result.exit_code == 1
    repo = "facebook/dinov3-vits16-pretrain-lvd1689m"
    assert error_line(result) == (
        f"Error: {repo} is gated on the Hugging Face hub: accept its licence on https://huggingface.co/{repo} while logged in, "
        "then set HF_TOKEN to a read token of that account"
    )


def test_hub_403_and_missing_repo_are_one_line(fake_hub, home):
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    fake_hub.raise_ = _hub_error(HfHubHTTPError, 403)
    assert "is gated on the Hugging Face hub" in error_line(gx("owner/name"))
    fake_hub.raise_ = _hub_error(RepositoryNotFoundError, 404)
    assert error_line(gx("owner/nope")) == "Error: owner/nope was not found on the Hugging Face hub; check the spelling, or set HF_TOKEN if it is private"


def test_unknown_model_name_suggests_the_closest(home):
    result = gx("dinov2-smal")
    assert result.exit_code == 2
    line = error_line(result)
    assert line.startswith("Error: don't know how to download 'dinov2-smal' (did you mean 'dinov2-small'?); pass sign-mnist, an http(s) URL, ")
    assert "a Hugging Face id (owner/name) or a backbone name (dinov2-*, dinov3-*, " in line


def test_registry_model_offline_not_cached(home):
    result = gx("dinov2-small")
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: dinov2-small is not in the model cache {home / 'models'} and offline mode is on")


# --------------------------------------------------------------------------------------------------
# Hugging Face dataset repositories (hf-dataset:OWNER/NAME)

COMMIT = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


def _hub_cache_repo(cache_dir: Path, repo_id: str, files: dict[str, bytes], *, repo_type: str = "dataset", commit: str = COMMIT) -> Path:
    """A repository in the hub's own cache layout, as `snapshot_download` leaves it: content-addressed
    blobs, a snapshot folder of relative symlinks to them, and refs/main naming the commit."""
    folder = cache_dir / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    for rel, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


def _folder_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pose_repo(home, tmp_path) -> tuple[Path, list[str]]:
    """owner/asl-poses in the cache: a gx pose folder under poses/, a labels table, and class-folder images."""
    import numpy as np
    from PIL import Image

    from gesture_cli.data.pose import make_pose_dataset, write_pose_folder

    ds = make_pose_dataset("synthetic-signs", train_size=6, val_size=2, test_size=2)
    write_pose_folder(ds, tmp_path / "src" / "poses")
    for cls in ("a", "b"):
        for i in range(3):
            path = tmp_path / "src" / "images" / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 40 * i + (100 if cls == "b" else 0), dtype=np.uint8)).save(path)
    (tmp_path / "src" / "README.md").write_text("# asl poses\n")
    (tmp_path / "src" / "labels.csv").write_text("name,text\n" + "".join(f"{s.id},sentence {i}\n" for i, s in enumerate(ds.samples)))
    snapshot = _hub_cache_repo(home / "datasets", "owner/asl-poses", _folder_files(tmp_path / "src"))
    return snapshot, [s.id for s in ds.samples]


def test_hub_dataset_offline_through_snapshot_download_and_usable_as_specs(pose_repo, home, monkeypatch):
    import socket as socket_mod

    from gesture_cli.data import make_dataset
    from gesture_cli.data.pose import make_pose_dataset

    def no_network(*args, **kwargs):
        raise AssertionError("touched the network while offline")

    monkeypatch.setattr(socket_mod, "create_connection", no_network)
    snapshot, ids = pose_repo
    result = gx("hf-dataset:owner/asl-poses")  # the real huggingface_hub.snapshot_download, offline, on the cache
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.startswith(f"owner/asl-poses is already cached in {snapshot} (")
    assert "commit a1b2c3d4e5 (offline: not checked for updates)" in text
    assert "Use it as --dataset hf-dataset:owner/asl-poses" in text

    # the spec resolves to the cached snapshot without the network; so does the folder itself
    for spec in ("hf-dataset:owner/asl-poses/poses", f"pose:{snapshot / 'poses'}", f"hf-dataset:owner/asl-poses@{COMMIT}/poses"):
        assert sorted(s.id for s in make_pose_dataset(spec)) == sorted(ids), spec
    assert len(make_pose_dataset("hf-dataset:owner/asl-poses/poses", split="train")) == 6
    relabelled = make_pose_dataset("hf-dataset:owner/asl-poses/poses", texts="labels.csv")  # a table inside the snapshot
    assert {s.id: s.text for s in relabelled}[ids[3]] == "sentence 3"
    for spec in ("hf-dataset:owner/asl-poses/images", f"folder:{snapshot / 'images'}"):
        images = make_dataset(spec, split="all")
        assert images.classes == ["a", "b"] and len(images) == 6, spec
        assert images.batch(range(6), size=8).shape[0] == 6


def test_hub_dataset_include_patterns_are_checked_against_the_cache(pose_repo, home):
    result = gx("hf-dataset:owner/asl-poses", "--include", "*.parquet")
    assert result.exit_code == 1
    assert error_line(result) == (
        "Error: no file of owner/asl-poses in the cache (offline mode is on) matches --include '*.parquet'; "
        "patterns are globs on paths like 'data/*.parquet' (https://huggingface.co/datasets/owner/asl-poses)"
    )
    assert gx("hf-dataset:owner/asl-poses", "--include", "poses/").exit_code == 0


def test_hub_dataset_listed_offline_apart_from_plain_datasets(pose_repo, home):
    result = gx("--list")
    assert result.exit_code == 0, result.output
    assert re.search(r"hf-dataset:owner/asl-poses\s*│\s*a1b2c3d4e5\s*│\s*main\s*│\s*[\d.]+ [kM]B\s*│\s*\d+", result.output), result.output
    assert "datasets--owner" not in result.output  # the cache folder is not shown as a plain dataset
    assert "No datasets cached" in result.output


def test_hub_dataset_not_cached_names_the_download(home):
    from gesture_cli.core.errors import DataError
    from gesture_cli.data import make_dataset

    with pytest.raises(DataError) as err:
        make_dataset("hf-dataset:owner/missing", split="train")
    assert f"hf-dataset:owner/missing is not in the dataset cache {home / 'datasets'}; run `gx download hf-dataset:owner/missing` first" in str(err.value)
    result = gx("hf-dataset:owner/missing")
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: hf-dataset:owner/missing is not in the dataset cache {home / 'datasets'} and offline mode is on")


def test_hub_dataset_download_passes_repo_type_patterns_and_token(fake_hub, home, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_456")
    result = gx("hf-dataset:owner/name", "--include", "poses/*", "--include", "*.csv", "--revision", "v1")
    assert result.exit_code == 0, result.output
    repo_id, kwargs = fake_hub.calls[0]
    assert repo_id == "owner/name" and kwargs["repo_type"] == "dataset"
    assert kwargs["cache_dir"] == str(home / "datasets") and kwargs["revision"] == "v1"
    assert kwargs["allow_patterns"] == ["poses/*", "*.csv"] and kwargs["token"] == "hf_not_a_real_token_456"
    assert "Downloaded owner/name" in " ".join(result.output.split())
    assert "hf_not_a_real_token_456" not in result.output


def test_gated_hub_dataset_points_to_the_dataset_page(fake_hub, home):
    from huggingface_hub.errors import GatedRepoError

    fake_hub.raise_ = _hub_error(GatedRepoError, 401)
    assert error_line(gx("hf-dataset:owner/gated")) == (
        "Error: owner/gated is gated on the Hugging Face hub: accept its licence on https://huggingface.co/datasets/owner/gated "
        "while logged in, then set HF_TOKEN to a read token of that account"
    )


# --------------------------------------------------------------------------------------------------
# usage


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Error: name what to download: sign-mnist, an http(s) URL, a backbone name or owner/name (or pass --list)"),
        (("sign-mnist", "--revision", "v1"), "Error: --revision does not apply to `gx download sign-mnist`; it takes --from, --sha256, --url"),
        (("owner/name", "--extract"), "Error: --extract does not apply to `gx download owner/name`; it takes --revision"),
        (("sign-mnist", "--from", "x", "--url", "http://h/x.zip"), "Error: pass either --from or --url for sign-mnist, not both"),
        (("http://h/x.zip", "--sha256", "abc"), "Error: --sha256 'abc' is not 64 hex digits"),
        (("--list", "sign-mnist"), "Error: --list takes no NAME; run `gx download --list` alone"),
        (("owner/name", "--include", "*.json"), "Error: --include does not apply to `gx download owner/name`; it takes --revision"),
        (("hf-dataset:owner", "--revision", "v1"), "Error: 'hf-dataset:owner' is not a Hugging Face dataset id; write it as hf-dataset:OWNER/NAME, e.g. hf-dataset:me/asl-poses"),
    ],
)
def test_usage_errors_exit_2(home, args, message):
    result = gx(*args)
    assert result.exit_code == 2
    assert error_line(result) == message


def test_help_ends_with_an_example():
    result = gx("--help")
    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1].strip().startswith("Example: gx download") or "Example: gx download" in result.output


def test_gx_home_that_is_a_file_is_named_as_such(tmp_path, monkeypatch):
    """Not a misleading 'not in the cache' or 'no datasets cached' from every reader below it."""
    from gesture_cli.core.errors import UsageError
    from gesture_cli.core.home import gx_home

    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("GX_HOME", str(afile))
    for args in (["--list"], ["dinov2-small"]):
        result = gx(*args)
        assert result.exit_code == 2, result.output
        assert error_line(result) == f"Error: GX_HOME={afile} is a file, not a folder; point GX_HOME at a folder (gx keeps downloaded datasets and models there)"
    monkeypatch.setenv("GX_HOME", str(afile / "sub"))
    with pytest.raises(UsageError, match=re.escape(f"GX_HOME={afile / 'sub'} is inside {afile}, which is a file, not a folder")):
        gx_home()


def test_a_refused_write_into_the_cache_points_at_gx_home_not_at_options_download_lacks(fake_hub, home):
    import errno

    fake_hub.raise_ = PermissionError(errno.EACCES, "Permission denied", str(home / "models" / "lock"))
    line = error_line(gx("owner/name"))
    assert line.startswith(f"Error: cannot write {home / 'models' / 'lock'} (Permission denied); make it writable or point GX_HOME at a writable folder")
    assert "--output" not in line and "--run-dir" not in line
