"""Datasets and device-side batch loaders for vitbench.

``get_dataset(name, split, img_size=..)`` → :class:`DatasetSpec`; ``make_loader(spec, ..)`` →
an object with ``get_batch(step)`` (deterministic in (seed, step)) and ``iter_eval(batch_size)``.
Importing this package registers every dataset.
"""

from vitbench.data.registry import (DataRootError, DatasetInfo, DatasetSpec, check_data_root, dataset_info,
                                    get_dataset, list_datasets, register_dataset, resolve_root, train_size)
from vitbench.data.splits import nested_subset
from vitbench.data.loader import InMemoryLoader, StreamingLoader, make_loader, parse_augment
# importing the modules registers their datasets
from vitbench.data import digits as _digits, folders as _folders, imagefolder as _imagefolder  # noqa: F401,E402
from vitbench.data import synthetic as _synthetic  # noqa: F401,E402

__all__ = [
    "DataRootError", "DatasetInfo", "DatasetSpec", "check_data_root", "dataset_info", "get_dataset",
    "list_datasets", "register_dataset", "resolve_root", "train_size", "nested_subset", "make_loader", "parse_augment",
    "InMemoryLoader", "StreamingLoader",
]
