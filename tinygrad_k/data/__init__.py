"""Datasets, a DataLoader and image transforms.

Data stays NumPy (images uint8) until a batch is formed; the ``DataLoader`` then hands
out Tensors on its device (images float32 (N, C, H, W), labels int64). Datasets that can
return a whole batch at once (``get_batch(indices)``) are batched with one fancy-index
instead of a Python loop over samples, and their transforms run batch-wise.

    from tinygrad_k import data
    train = data.FashionMNIST(train=True, transform=data.Normalize(0.286, 0.353))
    loader = data.DataLoader(train, batch_size=128, shuffle=True, seed=0)
    for epoch in range(3):
        loader.set_epoch(epoch)          # the order depends only on (seed, epoch)
        for x, y in loader: ...
"""
from .dataset import (ArrayDataset, ConcatDataset, Dataset, SeriesWindows, Subset, TensorDataset,
                      class_subset, fetch_batch, labels_of, random_split)
from .datasets import (CIFAR10, DATASET_NAMES, MNIST, FashionMNIST, SyntheticImages,
                       candidate_roots, default_root, load_dataset, make_data, make_series,
                       read_idx, read_series_csv)
from .loader import (DataLoader, WorkerInfo, collate, default_collate, default_convert,
                     get_worker_info)
from .sampler import (BatchSampler, DistributedSampler, RandomSampler, Sampler,
                      SequentialSampler, SubsetRandomSampler, WeightedRandomSampler)
from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, ToFloat

__all__ = ["Dataset", "TensorDataset", "ArrayDataset", "Subset", "ConcatDataset", "SeriesWindows",
           "class_subset", "random_split", "fetch_batch", "labels_of", "DataLoader", "collate",
           "default_collate", "default_convert", "get_worker_info", "WorkerInfo", "Sampler",
           "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler",
           "BatchSampler", "DistributedSampler", "FashionMNIST", "MNIST", "CIFAR10",
           "SyntheticImages", "load_dataset", "read_idx", "read_series_csv", "candidate_roots",
           "default_root", "DATASET_NAMES", "make_data", "make_series", "Compose", "ToFloat",
           "Normalize", "RandomCrop", "RandomHorizontalFlip"]
