"""`gx download`: which kind of NAME it is, which options that kind takes, and the one fetch of it into
the `$GX_HOME` cache (datasets, hub dataset repositories, model snapshots); `--list` reads the cache.

The transfers themselves (resumable, verified, atomic) are `gesture_cli.data.fetch` (URLs), `data.sign_mnist_download`
and `data.hub` (Hugging Face snapshots); `data.cache` lists what the cache holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from gesture_cli.core import home
from gesture_cli.core.errors import UsageError

# Which options make sense for which kind of NAME; anything else is a usage error, not silently ignored.
ALLOWED_OPTIONS = {
    "sign-mnist": {"--from", "--url", "--sha256"},
    "url": {"--sha256", "--name", "--extract"},
    "model": {"--revision"},
    "hf-dataset": {"--revision", "--include"},
}


def download_kind(target: str) -> str:
    """sign-mnist | url | hf-dataset | model: what `gx download NAME` fetches."""
    from gesture_cli.data.hub import HF_DATASET_PREFIX
    from gesture_cli.data.sign_mnist_download import SIGN_MNIST

    if target == SIGN_MNIST:
        return "sign-mnist"
    if target.startswith(("http://", "https://")):
        return "url"
    if target.startswith(HF_DATASET_PREFIX):
        return "hf-dataset"
    return "model"


def check_download_options(target: str, kind: str, given: dict[str, object]) -> None:
    """A UsageError naming the options (flag -> value, None = not given) that `kind` does not take."""
    stray = [opt for opt, value in given.items() if value is not None and opt not in ALLOWED_OPTIONS[kind]]
    if stray:
        raise UsageError(f"{', '.join(stray)} does not apply to `gx download {target}`; it takes {', '.join(sorted(ALLOWED_OPTIONS[kind]))}")


def list_cache():
    """What the gx cache holds (`data.cache.CacheListing`)."""
    from gesture_cli.data.cache import list_cache as listing

    return listing(datasets_root=home.datasets_dir(), models_root=home.models_dir())


def download(target: str, *, kind: str, from_path: Path | None = None, url: str | None = None, sha256: str | None = None,
             name: str | None = None, extract: bool = False, revision: str | None = None, include: list[str] | None = None,
             force: bool = False, on_progress: Callable | None = None):
    """Fetch `target` of `kind` (download_kind) into the cache; returns the transfer's result (a DownloadResult or hub snapshot)."""
    from gesture_cli.data import hub, sign_mnist_download
    from gesture_cli.data.fetch import download_url

    offline = home.offline()
    token = os.environ.get("HF_TOKEN") or None  # handed to huggingface_hub only; never stored or printed
    if kind == "sign-mnist":
        if from_path is not None and url is not None:
            raise UsageError("pass either --from or --url for sign-mnist, not both")
        return sign_mnist_download.download_sign_mnist(datasets_root=home.datasets_dir(), from_path=from_path,
                                      url=url or os.environ.get("GX_SIGN_MNIST_URL") or sign_mnist_download.SIGN_MNIST_KAGGLE_URL,
                                      sha256=sha256, force=force, offline=offline, on_progress=on_progress)
    if kind == "url":
        return download_url(target, datasets_root=home.datasets_dir(), name=name, sha256=sha256, extract=extract, force=force,
                               offline=offline, on_progress=on_progress)
    if kind == "hf-dataset":
        return hub.download_hub_dataset(target, cache_dir=home.datasets_dir(), revision=revision, include=include, token=token,
                                       offline=offline, force=force, on_progress=on_progress)
    return hub.download_model(target, cache_dir=home.models_dir(), revision=revision, token=token, offline=offline, force=force,
                             on_progress=on_progress)
