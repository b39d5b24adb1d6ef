"""What a record is, in memory and in a Parquet shard.

Readers (``layouts``) yield :class:`SourceRecord` (a file on disk plus its labels);
ingest validates the file and writes a row of :data:`SHARD_SCHEMA`. The preprocessing
pipeline reads the same columns back.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

#: The label of every real (camera / non-generated) image, in every data set.
REAL = "real"


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """One image file found by a layout reader, before it is opened."""

    path: str  # absolute path of the file
    relpath: str  # path relative to the data set root (stable across machines; hashed for splits)
    generator: str  # canonical generator name, or REAL
    split: str  # train | val | test
    dataset: str  # genimage | forensynths | cifake | folder | synthbench ...
    category: str = ""  # object class where the layout has one (ForenSynths "car"), else ""
    # Images made from one source share a group: a generated image names the relpath of the
    # real image it was made from, that real image names itself (DRCT-style pairs); "" = none.
    group: str = ""

    @property
    def is_real(self) -> bool:
        return self.generator == REAL


#: Columns of a shard. ``image`` holds the original encoded bytes, untouched.
SHARD_SCHEMA = pa.schema(
    [
        pa.field("image", pa.binary()),
        pa.field("content_hash", pa.string()),  # sha256 of the encoded bytes
        pa.field("source_path", pa.string()),  # relative to the ingested root
        pa.field("generator", pa.string()),
        pa.field("is_real", pa.bool_()),
        pa.field("split", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("category", pa.string()),
        pa.field("group", pa.string()),  # source-image group (pairs of a real image and its fakes), or ""
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),  # PIL format name: JPEG, PNG, ...
        pa.field("num_bytes", pa.int64()),
    ]
)

#: Every column but the image bytes: cheap to read for manifests, resume and class lists.
LABEL_COLUMNS = [f.name for f in SHARD_SCHEMA if f.name != "image"]
