"""Datasets: spec strings -> `DatasetSpec` (`parse_dataset`) -> `ImageDataset` (see DESIGN §5 and `list_datasets()`).

    from gesture_cli.data import make_dataset
    ds = make_dataset("csv:sign_mnist_train.csv", split="test", seed=0)
    x = ds.batch(range(32), size=224)  # uint8 [32, 224, 224]

Importing this package is cheap: the registry loads the source modules (numpy, cv2) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gesture_cli.data.registry import (
    DatasetSpec,
    dataset_splits,
    list_datasets,
    make_dataset,
    parse_dataset,
    parse_spec,
    register_dataset,
)

if TYPE_CHECKING:
    from gesture_cli.data.images import ImageDataset
    from gesture_cli.data.sign_mnist import SIGN_MNIST_LETTERS, sign_mnist_label_to_letter

# name -> module, imported on first attribute access (PEP 562) so that `import gesture_cli.data` stays light
_LAZY = {
    "ImageDataset": "gesture_cli.data.images",
    "SIGN_MNIST_LETTERS": "gesture_cli.data.sign_mnist",
    "sign_mnist_label_to_letter": "gesture_cli.data.sign_mnist",
}

__all__ = [
    "DatasetSpec",
    "ImageDataset",
    "SIGN_MNIST_LETTERS",
    "dataset_splits",
    "list_datasets",
    "make_dataset",
    "parse_dataset",
    "parse_spec",
    "register_dataset",
    "sign_mnist_label_to_letter",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gesture_cli.data' has no attribute '{name}'")
