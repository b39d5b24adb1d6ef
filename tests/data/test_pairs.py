"""Source groups end to end: split folders and sources.csv in the plain layout, groups kept
together by ingest, and pair batches that put every fake beside its own source image."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from synthray.config import IngestConfig, PipelineConfig, PreprocessConfig, SplitConfig, from_dict
from synthray.data.ingest import ingest
from synthray.data.layouts import get_layout
from synthray.data.loader import iter_balanced_local
from synthray.data.pairs import PairBatcher

FAKES = ("gen_a", "gen_b", "gen_c")


def _paired_tree(root: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """real/<split>/r<i>.png and <gen>/<split>/<gen>_<i>.png made "from" real i, plus sources.csv."""
    rng = np.random.default_rng(seed)
    lines = ["relpath,source"]
    index = 0
    for split, n in per_split.items():
        for _ in range(n):
            base = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            real = f"real/{split}/r{index:03d}.png"
            (root / real).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(base).save(root / real)
            for k, gen in enumerate(FAKES):
                rel = f"{gen}/{split}/{gen}_{index:03d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.roll(base, k + 1, axis=1)).save(root / rel)
                lines.append(f"{rel},{real}")
            index += 1
    (root / "sources.csv").write_text("\n".join(lines) + "\n")
    return root


def test_folder_layout_reads_split_folders_and_source_groups(tmp_path):
    root = _paired_tree(tmp_path, {"train": 4, "val": 2, "test": 2})
    (tmp_path / "real" / "loose.png").write_bytes((tmp_path / "real" / "train" / "r000.png").read_bytes())
    strays: list[tuple[str, str]] = []
    records = list(get_layout("folder")(root, SplitConfig(), lambda r, why, msg: strays.append((r, why))))
    by_path = {r.relpath: r for r in records}
    assert by_path["gen_b/val/gen_b_004.png"].split == "val"
    assert by_path["gen_b/val/gen_b_004.png"].group == "real/val/r004.png"
    assert by_path["real/val/r004.png"].group == "real/val/r004.png"  # a source is its own group
    assert by_path["real/loose.png"].group == "" and by_path["real/loose.png"].split in ("train", "val", "test")
    assert not strays  # sources.csv is the layout's own file, not a stray


def test_a_source_the_tree_does_not_hold_is_an_error(tmp_path):
    root = _paired_tree(tmp_path, {"train": 2})
    with (root / "sources.csv").open("a") as fh:
        fh.write("gen_a/train/gen_a_000.png,real/train/missing.png\n")
    with pytest.raises(ValueError, match="sources the tree does not hold"):
        list(get_layout("folder")(root, SplitConfig()))
    (root / "sources.csv").write_text("file,origin\n")
    with pytest.raises(ValueError, match="header"):
        list(get_layout("folder")(root, SplitConfig()))


def test_ingest_keeps_each_group_together_and_records_it(tmp_path):
    root = _paired_tree(tmp_path / "tree", {"train": 30, "val": 4, "test": 4})
    out = tmp_path / "shards"
    ingest("folder", root, out, from_dict(IngestConfig, {"use_ray": False, "max_rows_per_shard": 40}))
    rows = []
    for path in sorted(out.glob("*.parquet")):
        rows += pq.read_table(path, columns=["group", "split", "generator"]).to_pylist()
    assert len(rows) == 38 * 4
    groups = [r["group"] for r in rows]
    # contiguous: a group's rows are one run (a shard boundary may cut one run in two)
    runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
    assert len(runs) <= len(set(groups)) + len(list(out.glob("*.parquet")))
    # and shuffled: the groups do not come in file order
    assert runs != sorted(runs)


def test_pair_batches_hold_each_fake_beside_its_source(tmp_path):
    root = _paired_tree(tmp_path / "tree", {"train": 40, "val": 4, "test": 4})
    shards = tmp_path / "shards"
    ingest("folder", root, shards, from_dict(IngestConfig, {"use_ray": False, "max_rows_per_shard": 60}))
    names = ["real", *FAKES]
    pipe = PipelineConfig(batch_size=16, samples_per_class=4, pairs=True, shuffle_buffer=0)
    batches = list(
        iter_balanced_local(
            shards, names, 16, PreprocessConfig(resolution=16, device="cpu"), pipe, split="train", seed=0
        )
    )
    assert batches
    paired = total = 0
    seen_fakes: list[str] = []
    for b in batches:
        seen_fakes += list(b["content_hash"][b["label"] != 0])
        labels, groups = b["label"], b["group"]
        assert collections.Counter(labels.tolist())[0] >= 2  # real images in every batch
        sources = set(groups[labels == 0])
        fakes = groups[labels != 0]
        paired += sum(g in sources for g in fakes)
        total += len(fakes)
        counts = collections.Counter(labels.tolist())
        assert min(counts.values()) >= 2  # every class has a positive
    assert paired / total >= 0.9, (paired, total)
    # every fake once per epoch (the last short batch may be dropped), never twice
    assert len(seen_fakes) == len(set(seen_fakes)) >= 0.9 * 40 * len(FAKES)


def test_pair_batcher_bounds_its_buffer_on_an_ungrouped_stream(caplog):
    rng = np.random.default_rng(0)
    n = 400
    stream = [
        {
            "label": rng.integers(1, 4, 50),
            "group": np.array([f"g{rng.integers(10_000)}" for _ in range(50)]),
            "x": np.zeros(50),
        }
        for _ in range(n // 50)
    ]  # fakes whose sources never come
    pb = PairBatcher(batch_size=8, num_classes=4, real_label=0, samples_per_class=2, max_buffer=40)
    assert list(pb(stream)) == []
    assert pb.evicted_rows > 0 and "no partner" in caplog.text


def test_pair_batcher_rejects_bad_settings():
    with pytest.raises(ValueError):
        PairBatcher(batch_size=8, num_classes=1, real_label=0)
    with pytest.raises(ValueError):
        PairBatcher(batch_size=3, num_classes=4, real_label=0, samples_per_class=2)
    with pytest.raises(ValueError, match="outside"):
        list(
            PairBatcher(batch_size=8, num_classes=2, real_label=0, samples_per_class=2)(
                [{"label": np.array([5]), "group": np.array(["a"])}]
            )
        )
