"""Hugging Face snapshots in the `$GX_HOME` cache: model repositories (`gx download NAME`) under `models/`,
dataset repositories (`hf-dataset:OWNER/NAME`) under `datasets/`, both in the hub's own cache layout, so
huggingface_hub verifies, resumes and reuses them. Which repo a backbone name means is read once, by
models/backbone_ref.py.

Core code: no printing, no exits, no environment reads. The CLI passes the cache folder, token,
offline flag and an `on_progress(done_bytes, total_bytes_or_None)` callback explicitly.
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gesture_cli.core.errors import DownloadError, GxError, UsageError, did_you_mean
from gesture_cli.data.fetch import DownloadResult, ProgressFn, Transfer, TransferOptions, tree_size
from gesture_cli.data.sign_mnist_download import SIGN_MNIST
from gesture_cli.models.backbone_ref import HF_ALLOW_PATTERNS, TORCHSCRIPT_ALLOW_PATTERNS, BackboneRef, parse_backbone_ref

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Weights in other frameworks' formats: never needed by gx, often as large as the torch weights.
FOREIGN_WEIGHT_PATTERNS = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "onnx/*", "*.tflite", "*.ot", "tf_model*", "flax_model*", "rust_model*", "coreml/*", "openvino/*"]


@dataclass(frozen=True)
class ModelSource:
    """What `gx download NAME` fetches for a model name: a hub repo and which of its files."""

    repo_id: str | None  # None: nothing to download (why says so)
    allow_patterns: list[str] | None = None  # registry backbones: exactly the files build_backbone reads
    ignore_patterns: list[str] | None = None
    gated: bool = False
    why: str = ""
    repo_type: str = "model"  # "dataset" for hf-dataset:OWNER/NAME

    @property
    def page(self) -> str:
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"https://huggingface.co/{prefix}{self.repo_id}"


def resolve_model_source(name: str | BackboneRef) -> ModelSource:
    """Registry name or owner/name -> the hub repo to fetch; repo_id None for tiny-*, timm: and local paths."""
    try:
        ref = parse_backbone_ref(name, _backbone_registry)
    except GxError:
        if "/" in str(name):
            raise UsageError(f"'{name}' is not a Hugging Face id; write it as owner/name, e.g. facebook/dinov2-small") from None
        entries = _backbone_registry()
        raise UsageError(
            f"don't know how to download '{name}'{did_you_mean(str(name), [SIGN_MNIST, *entries])}; pass sign-mnist, an http(s) URL, "
            f"a Hugging Face id (owner/name) or a backbone name ({_families(entries)})"
        ) from None
    if ref.is_tiny:
        return ModelSource(None, why="built locally from a small config: nothing to download")
    if ref.kind == "timm":
        return ModelSource(None, why="timm fetches its own weights on first use: nothing to download")
    if ref.kind == "path":
        return ModelSource(None, why="a local path, used in place: nothing to download")
    if ref.kind == "hub":
        return ModelSource(ref.hub_id, ignore_patterns=FOREIGN_WEIGHT_PATTERNS)
    if ref.hub_id is None:
        return ModelSource(None, why="nothing to download")
    # a registry entry: exactly the files build_backbone reads (Sapiens ships TorchScript files)
    patterns = list(TORCHSCRIPT_ALLOW_PATTERNS) if ref.family == "sapiens" else [*HF_ALLOW_PATTERNS, "*.pt2", "*.pt"]
    return ModelSource(ref.hub_id, allow_patterns=patterns, gated=ref.gated)


def _backbone_registry() -> dict:
    """The backbone registry (models/backbone_registry.py: no torch), loaded only for plain names, which may be registry names."""
    from gesture_cli.models.backbone_registry import REGISTRY

    return REGISTRY


def _families(entries: dict) -> str:
    """'dinov2-*, dinov3-*, ...' : the registry in a few words for an error line."""
    stems = sorted({name.split("-")[0] + "-*" for name in entries})
    return ", ".join(stems)


def repo_folder(cache_dir: Path, repo_id: str, repo_type: str = "model") -> Path:
    return Path(cache_dir) / (f"{repo_type}s--" + repo_id.replace("/", "--"))


def cached_snapshot(cache_dir: Path, repo_id: str, revision: str | None = None, *, repo_type: str = "model") -> Path | None:
    """The snapshot folder for `revision` (branch, tag or commit; default main) if it is on disk."""
    folder = repo_folder(cache_dir, repo_id, repo_type)
    revision = revision or "main"
    commit = revision
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def download_model(
    name: str, *, cache_dir: Path, revision: str | None = None, token: str | None = None, **transfer: Unpack[TransferOptions],
) -> DownloadResult:
    """A Hugging Face snapshot into `cache_dir` (hub cache layout); offline, only report the cache.

    `token` goes to huggingface_hub only: never stored, never part of a message.
    """
    source = resolve_model_source(name)
    if source.repo_id is None:
        return DownloadResult(name, None, "local", detail=source.why)
    return _hub_snapshot(source, name=name, cache_dir=cache_dir, revision=revision, token=token, transfer=hub_transfer(transfer))


def hub_transfer(transfer: TransferOptions) -> Transfer:
    """Transfer settings of a hub download: huggingface_hub resumes blobs itself, so fewer, slower retries."""
    return Transfer(**{"retries": 2, "backoff_s": 2.0, **transfer})


def _hub_snapshot(source: ModelSource, *, name: str, cache_dir: Path, revision: str | None, token: str | None, transfer: Transfer) -> DownloadResult:
    """snapshot_download of a model or dataset repository into `cache_dir`, with retries and one-line errors."""
    repo_id = source.repo_id
    offline, force, on_progress = transfer.offline, transfer.force, transfer.on_progress
    if offline and force:
        raise UsageError(f"--force re-downloads {repo_id}, but offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE); unset it or drop --force")

    from huggingface_hub import snapshot_download

    before = cached_snapshot(cache_dir, repo_id, revision, repo_type=source.repo_type)
    before_files = tree_size(before)[1] if before is not None else None
    kwargs = dict(
        repo_type=source.repo_type,
        cache_dir=str(cache_dir),
        revision=revision,
        token=token or None,
        local_files_only=offline,
        force_download=force,
        allow_patterns=source.allow_patterns,
        ignore_patterns=source.ignore_patterns,
    )
    if on_progress is not None:
        kwargs["tqdm_class"] = _reporting_tqdm(on_progress)
    attempt = 0
    while True:
        try:
            path = Path(snapshot_download(repo_id, **kwargs))
            break
        except Exception as exc:  # noqa: BLE001 - mapped to one GxError below, or re-raised
            if not offline and attempt < transfer.retries and _is_transient(exc):
                time.sleep(transfer.backoff_s * 2**attempt)  # hub downloads resume their .incomplete blobs
                attempt += 1
                continue
            error = _hub_error(exc, name=name, source=source, revision=revision, token=token, offline=offline, cache_dir=cache_dir)
            if error is None:
                raise
            raise error from None

    size, files = tree_size(path) if path.is_dir() else (0, ())
    if source.repo_type == "dataset" and source.allow_patterns and not _matching(files, source.allow_patterns):
        shown = " ".join(f"--include '{p}'" for p in source.allow_patterns)
        where = "in the cache (offline mode is on)" if offline else "in the repository"
        raise DownloadError(f"no file of {repo_id} {where} matches {shown}; patterns are globs on paths like 'data/*.parquet' ({source.page})")
    rev = f"revision {revision}, " if revision else ""
    if offline:
        return DownloadResult(repo_id, path, "cached", size, files, repo_id, f"{rev}commit {path.name[:10]} (offline: not checked for updates)")
    unchanged = before is not None and before == path and before_files == files
    status = "cached" if unchanged and not force else "downloaded"
    return DownloadResult(repo_id, path, status, size, files, repo_id, f"{rev}commit {path.name[:10]}")


def _matching(files: tuple[str, ...], patterns: list[str]) -> list[str]:
    """The files huggingface_hub's allow_patterns would keep (fnmatch on the posix path; 'dir/' means 'dir/*')."""
    import fnmatch

    globs = [p + "*" if p.endswith("/") else p for p in patterns]
    return [f for f in files if any(fnmatch.fnmatch(Path(f).as_posix(), g) for g in globs)]


# --------------------------------------------------------------------------------------------------
# Hugging Face dataset repositories


HF_DATASET_PREFIX = "hf-dataset:"


def parse_hub_dataset(target: str) -> str:
    """'hf-dataset:OWNER/NAME' -> 'OWNER/NAME', or a UsageError saying how to write it."""
    repo_id = target.removeprefix(HF_DATASET_PREFIX).strip()
    owner, _, repo = repo_id.partition("/")
    if not owner or not repo or "/" in repo or any(c in repo_id for c in " @:"):
        raise UsageError(f"'{target}' is not a Hugging Face dataset id; write it as hf-dataset:OWNER/NAME, e.g. hf-dataset:me/asl-poses")
    return repo_id


def download_hub_dataset(
    target: str, *, cache_dir: Path, revision: str | None = None, include: list[str] | None = None, token: str | None = None,
    **transfer: Unpack[TransferOptions],
) -> DownloadResult:
    """A Hugging Face dataset repository (`hf-dataset:OWNER/NAME`) into `cache_dir` in the hub cache layout
    (`datasets--OWNER--NAME/snapshots/<commit>/`); `include` globs keep only matching files. Offline, only
    the cache is reported. `token` goes to huggingface_hub only."""
    repo_id = parse_hub_dataset(target)
    patterns = [p.strip() for p in include or [] if p.strip()] or None
    source = ModelSource(repo_id, allow_patterns=patterns, repo_type="dataset")
    return _hub_snapshot(source, name=f"{HF_DATASET_PREFIX}{repo_id}", cache_dir=cache_dir, revision=revision, token=token,
                         transfer=hub_transfer(transfer))


def _reporting_tqdm(on_progress: ProgressFn):
    """A tqdm class for snapshot_download that draws nothing and forwards its byte counts."""
    from tqdm.std import tqdm as std_tqdm

    class _Sink:
        def write(self, _s):
            pass

        def flush(self):
            pass

    class ReportingTqdm(std_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["file"] = _Sink()
            # snapshot_download opens a network-transfer bar (fuzzy total) and a bytes-written bar: report the latter.
            self._gx_report = kwargs.get("unit") == "B" and "Downloading bytes" not in str(kwargs.get("desc", ""))
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            if self._gx_report:
                on_progress(int(self.n), int(self.total) if self.total else None)
            return shown

    return ReportingTqdm


def _is_transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return False
    if isinstance(exc, HfHubHTTPError):
        code = getattr(getattr(exc, "response", None), "status_code", None)
        return code is not None and (code >= 500 or code == 429)
    for e in (exc, exc.__cause__):
        if e is None:
            continue
        if isinstance(e, (ConnectionError, TimeoutError, socket.timeout, http.client.IncompleteRead)):
            return True
        # httpx / httpx2 / requests transport errors, without importing a specific client
        if any(c.__name__ in {"TransportError", "ConnectionError", "Timeout", "ChunkedEncodingError"} for c in type(e).__mro__):
            return True
    return False


def _hub_error(exc: Exception, *, name: str, source: ModelSource, revision: str | None, token: str | None, offline: bool, cache_dir: Path):
    """A one-line GxError for what huggingface_hub raised, or None for the unexpected."""
    from huggingface_hub import errors as hf

    repo_id = source.repo_id
    page = source.page
    cache_kind = "dataset cache" if source.repo_type == "dataset" else "model cache"
    gated = (
        f"{repo_id} is gated on the Hugging Face hub: accept its licence on {page} while logged in, "
        f"then set HF_TOKEN to a read token of that account"
    )
    if token:
        gated += " (the HF_TOKEN given was refused: check it belongs to the account that accepted the licence)"
    incomplete = getattr(hf, "IncompleteSnapshotError", None)
    if isinstance(exc, hf.LocalEntryNotFoundError) and isinstance(exc.__cause__, hf.HfHubHTTPError):
        exc = exc.__cause__  # "not cached, and the hub said no": report what the hub said
    code = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf.GatedRepoError):
        return DownloadError(gated)
    if isinstance(exc, hf.RevisionNotFoundError):
        return DownloadError(f"revision '{revision}' of {repo_id} does not exist on the hub; pass a branch, tag or commit of {page}")
    if isinstance(exc, hf.RepositoryNotFoundError) and (source.gated or code in {401, 403}):
        return DownloadError(gated)
    if isinstance(exc, hf.RepositoryNotFoundError):
        hint = "check the spelling" if token else "check the spelling, or set HF_TOKEN if it is private"
        return DownloadError(f"{repo_id} was not found on the Hugging Face hub; {hint}")
    if isinstance(exc, hf.HfHubHTTPError) and code in {401, 403}:
        return DownloadError(gated)
    if isinstance(exc, hf.HfHubHTTPError):
        return DownloadError(f"the Hugging Face hub answered HTTP {code} for {repo_id}; try again later")
    if incomplete is not None and isinstance(exc, incomplete):
        return DownloadError(f"the cached snapshot of {repo_id} in {cache_dir} is incomplete; run `gx download {name}` with network access to finish it")
    if isinstance(exc, hf.LocalEntryNotFoundError):
        if offline:
            return DownloadError(
                f"{name} is not in the {cache_kind} {cache_dir} and offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE); "
                f"run `gx download {name}` where there is network, or copy its cache folder there"
            )
        return DownloadError(f"could not reach the Hugging Face hub for {repo_id} and it is not cached; check the network (or HF_ENDPOINT) and rerun")
    if isinstance(exc, getattr(hf, "HFValidationError", ())):
        how = "hf-dataset:OWNER/NAME" if source.repo_type == "dataset" else "owner/name"
        return UsageError(f"'{name}' is not a valid Hugging Face id; write it as {how}")
    if _is_transient(exc):
        return DownloadError(f"download of {repo_id} was interrupted ({type(exc).__name__}); rerun `gx download {name}` to resume")
    return None


