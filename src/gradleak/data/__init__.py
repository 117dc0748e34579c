"""Data: registered data sets in [0, 1] pixel space, client partitions, and the case
(data set + model) every pipeline starts from."""

from gradleak.data.base import ImageDataset, Normalization
from gradleak.data.case import Case, DataSource, load_case
from gradleak.data.partition import split_dirichlet, split_iid
from gradleak.data.registry import DATASETS, SPLITS, load_dataset

__all__ = ["Case", "DATASETS", "DataSource", "ImageDataset", "Normalization", "SPLITS", "load_case",
           "load_dataset", "split_dirichlet", "split_iid"]
