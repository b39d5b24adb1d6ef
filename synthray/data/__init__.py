"""The data layer: layouts -> Parquet shards -> Ray Data preprocessing; the built-in benchmark."""
