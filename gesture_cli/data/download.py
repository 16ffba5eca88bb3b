"""Former home of every download: now data/fetch.py (http(s) files, archives, checksums),
data/sign_mnist_download.py (Sign Language MNIST), data/hub.py (Hugging Face snapshots) and
data/cache.py (what the cache holds). The names cli/download.py still reads from here:"""

from gesture_cli.data.cache import list_cache  # moved: re-exported until importers switch (issue 16)
from gesture_cli.data.fetch import download_url  # moved: re-exported until importers switch (issue 16)
from gesture_cli.data.hub import (  # moved: re-exported until importers switch (issue 16)
           HF_DATASET_PREFIX,
           download_hub_dataset,
           download_model,
)
from gesture_cli.data.sign_mnist_download import (  # moved: re-exported until importers switch (issue 16)
           SIGN_MNIST,
           SIGN_MNIST_KAGGLE_URL,
           download_sign_mnist,
)

__all__ = ["HF_DATASET_PREFIX", "SIGN_MNIST", "SIGN_MNIST_KAGGLE_URL", "download_hub_dataset", "download_model", "download_sign_mnist",
           "download_url", "list_cache"]
