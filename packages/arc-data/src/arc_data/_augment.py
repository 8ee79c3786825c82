"""Invertible augmentations: the 8 dihedral transforms and permutations of colours 1..9."""

from __future__ import annotations

import hashlib

import attrs
import numpy as np
import numpy.typing as npt

from arc_data._task import Grid, Task

DIHEDRAL_NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "flip_lr",
    "flip_ud",
    "transpose",
    "anti_transpose",
)
# Index of the transform that undoes each one.
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_PERMUTATION = tuple(range(10))
RETRY_FACTOR = 5


def dihedral(grid: Grid, transform: int) -> Grid:
    """One of the 8 symmetries of the square, by index into `DIHEDRAL_NAMES` (a view).

    rot90 turns counter-clockwise like `np.rot90`; anti_transpose is `fliplr(rot90(grid))`.
    """
    if transform == 0:
        return grid
    if transform == 1:
        return grid.T[::-1]
    if transform == 2:
        return grid[::-1, ::-1]
    if transform == 3:
        return grid.T[:, ::-1]
    if transform == 4:
        return grid[:, ::-1]
    if transform == 5:
        return grid[::-1]
    if transform == 6:
        return grid.T
    if transform == 7:
        return grid.T[::-1, ::-1]
    raise ValueError(f"dihedral transform {transform} is not in 0..7")


@attrs.frozen
class Augmentation:
    """A dihedral transform and a colour permutation (background 0 stays 0)."""

    transform: int = attrs.field(default=0)
    colours: tuple[int, ...] = attrs.field(default=IDENTITY_PERMUTATION)

    @transform.validator
    def _check_transform(self, _: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value < len(DIHEDRAL_NAMES):
            raise ValueError(f"dihedral transform {value} is not in 0..7")

    @colours.validator
    def _check_colours(self, _: attrs.Attribute[tuple[int, ...]], value: tuple[int, ...]) -> None:
        if sorted(value) != list(range(10)) or value[0] != 0:
            raise ValueError(f"{value} is not a permutation of 0..9 fixing 0")

    @property
    def is_identity(self) -> bool:
        return self.transform == 0 and self.colours == IDENTITY_PERMUTATION

    def apply(self, grid: Grid) -> Grid:
        """Original frame -> augmented frame."""
        return np.ascontiguousarray(
            np.asarray(self.colours, dtype=np.uint8)[dihedral(grid, self.transform)]
        )

    def invert(self, grid: Grid) -> Grid:
        """Augmented frame -> original frame: inverse dihedral, then inverse colours."""
        inverse_colours = np.argsort(np.asarray(self.colours)).astype(np.uint8)
        restored = dihedral(grid, DIHEDRAL_INVERSE[self.transform])
        return np.ascontiguousarray(inverse_colours[restored])

    def describe(self) -> str:
        return f"{DIHEDRAL_NAMES[self.transform]}, colours {''.join(map(str, self.colours))}"


def sample_augmentations(task: Task, num_aug: int, rng: np.random.Generator) -> list[Augmentation]:
    """The identity followed by up to `num_aug` augmentations giving distinct task contents.

    Candidates whose augmented task equals one already kept (symmetric tasks, unused
    colours) are rejected; at most `RETRY_FACTOR * num_aug` candidates are drawn.
    """
    transforms, colours = sample_augmentation_arrays(task, num_aug, rng)
    return [
        Augmentation(int(t), tuple(int(c) for c in perm))
        for t, perm in zip(transforms, colours, strict=True)
    ]


def sample_augmentation_arrays(
    task: Task, num_aug: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """`sample_augmentations` as arrays: transforms `[A]` and colour permutations `[A, 10]`."""
    grids_by_transform = [[dihedral(g, t) for g in task.grids()] for t in range(8)]
    flat_by_transform = [
        np.concatenate([g.reshape(-1) for g in grids]) for grids in grids_by_transform
    ]
    shapes_by_transform = [
        np.asarray([g.shape for g in grids], dtype=np.int16).tobytes()
        for grids in grids_by_transform
    ]

    def content_key(transform: int, perm: npt.NDArray[np.uint8]) -> bytes:
        digest = hashlib.blake2b(shapes_by_transform[transform], digest_size=16)
        digest.update(perm[flat_by_transform[transform]].tobytes())
        return digest.digest()

    identity = np.arange(10, dtype=np.uint8)
    transforms = [0]
    perms = [identity]
    seen = {content_key(0, identity)}
    for _ in range(RETRY_FACTOR * num_aug):
        if len(transforms) > num_aug:
            break
        transform = int(rng.integers(0, 8))
        perm = np.concatenate([[0], rng.permutation(9) + 1]).astype(np.uint8)
        key = content_key(transform, perm)
        if key not in seen:
            seen.add(key)
            transforms.append(transform)
            perms.append(perm)
    return np.asarray(transforms, dtype=np.uint8), np.stack(perms)
