"""`gx download sign-mnist`: the two Sign Language MNIST CSVs into `$GX_HOME/datasets/sign-mnist`,
from a folder, the Kaggle zip, or its URL (data/sign_mnist.py reads them)."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from gesture_cli.core.errors import DataError, DownloadError
from gesture_cli.data.fetch import (
    CHUNK_BYTES,
    DOWNLOADS_SUBDIR,
    DownloadResult,
    HTTPStatusError,
    Transfer,
    TransferOptions,
    dataset_result,
    discard,
    fetch_archive,
    normalize_sha256,
    replace_dir,
    sha256_file,
    url_tag,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

SIGN_MNIST = "sign-mnist"
SIGN_MNIST_KAGGLE_URL = "https://www.kaggle.com/api/v1/datasets/download/datamunge/sign-language-mnist"
SIGN_MNIST_PAGE = "https://www.kaggle.com/datasets/datamunge/sign-language-mnist"
SIGN_MNIST_FILES = ("sign_mnist_train.csv", "sign_mnist_test.csv")
SIGN_MNIST_COLUMNS = 785  # label + 28*28 pixels

def check_sign_mnist_csv(path: Path, *, source: str = "") -> None:
    """The first line (header or data) must have 785 comma-separated fields."""
    where = f" (from {source})" if source else ""
    with open(path, "rb") as f:
        first = f.readline(1 << 16).decode("utf-8", "replace").strip()
    if not first:
        raise DataError(f"{path.name}{where} is empty; expected Sign Language MNIST CSV rows (label + 784 pixels)")
    n = len(first.split(","))
    if n != SIGN_MNIST_COLUMNS:
        raise DataError(f"{path.name}{where}, line 1: {n} columns, expected {SIGN_MNIST_COLUMNS} (label + 784 pixels); is this Sign Language MNIST?")


def sign_mnist_ready(dest: Path) -> bool:
    try:
        for name in SIGN_MNIST_FILES:
            check_sign_mnist_csv(dest / name)
    except (OSError, DataError):
        return False
    return True


def download_sign_mnist(
    *, datasets_root: Path, from_path: Path | None = None, url: str = SIGN_MNIST_KAGGLE_URL, sha256: str | None = None,
    **transfer: Unpack[TransferOptions],
) -> DownloadResult:
    """Place sign_mnist_{train,test}.csv in `datasets_root/sign-mnist` from a folder, a zip, or a URL."""
    dest = datasets_root / SIGN_MNIST
    settings = Transfer(**transfer)
    if not settings.force and sign_mnist_ready(dest):
        return dataset_result(dest, "cached", str(from_path or url))
    if from_path is not None:
        from_path = Path(from_path).expanduser()
        if not from_path.exists():
            raise DownloadError(f"--from {from_path} does not exist; pass the folder or the .zip holding {' and '.join(SIGN_MNIST_FILES)}")
        expected = normalize_sha256(sha256)
        if expected and (from_path.is_dir() or sha256_file(from_path) != expected):
            what = "is a folder" if from_path.is_dir() else "does not match"
            raise DownloadError(f"--sha256 checks the archive, and --from {from_path} {what}; drop --sha256 or pass the right archive")
        _install_sign_mnist(from_path, dest)
        return dataset_result(dest, "downloaded", str(from_path))
    if settings.offline:
        raise DownloadError(
            f"sign-mnist is not in {dest} and offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE); pass --from FOLDER_OR_ZIP, or unset it to download {url}"
        )

    archive = datasets_root / DOWNLOADS_SUBDIR / f"{url_tag(url)}-sign-language-mnist.zip"
    try:
        fetch_archive(url, archive, sha256=sha256, transfer=settings)
    except HTTPStatusError as exc:
        if exc.status in {401, 403}:
            raise DownloadError(
                f"{url} refused the download (HTTP {exc.status}); download the archive from {SIGN_MNIST_PAGE} "
                "and run `gx download sign-mnist --from archive.zip`"
            ) from None
        raise
    try:
        _install_sign_mnist(archive, dest, label=url)
    finally:
        discard(archive)
    return dataset_result(dest, "downloaded", url)


def _install_sign_mnist(source: Path, dest: Path, *, label: str | None = None) -> None:
    """Copy and check the two CSVs from a folder or zip into a temporary sibling, then swap it in."""
    label = label or str(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
    try:
        if source.is_dir():
            for name in SIGN_MNIST_FILES:
                found = sorted(source.rglob(name), key=lambda p: (len(p.parts), str(p)))
                if not found:
                    raise DownloadError(f"no {name} below {source}; pass the folder or Kaggle .zip that holds {' and '.join(SIGN_MNIST_FILES)}")
                shutil.copyfile(found[0], tmp / name)
        elif zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as zf:
                members = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
                for name in SIGN_MNIST_FILES:
                    found = sorted((i for i in members if PurePosixPath(i.filename.replace("\\", "/")).name == name), key=lambda i: len(i.filename))
                    if not found:
                        raise DownloadError(f"no {name} in {label}; expected the Kaggle archive layout ({name.removesuffix('.csv')}/{name})")
                    # Stream the member into a name we choose: member paths never touch the disk.
                    with zf.open(found[0]) as src, open(tmp / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
        else:
            raise DownloadError(f"{label} is neither a folder nor a zip archive; pass the folder or Kaggle .zip holding the two CSVs")
        for name in SIGN_MNIST_FILES:
            check_sign_mnist_csv(tmp / name, source=label)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


