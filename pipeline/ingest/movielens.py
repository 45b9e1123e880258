"""GroupLens MovieLens CSV (ml-latest, ml-latest-small, ml-25m ...): `ratings.csv` and `movies.csv` in `data.path`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import DataConfig
from pipeline.ingest import RawData, interactions_table
from pipeline.ingest.tabular import read_delimited, to_epoch

RATINGS_FILE = "ratings.csv"
MOVIES_FILE = "movies.csv"
NO_GENRES = "(no genres listed)"  # GroupLens's placeholder, not a genre


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    return [folder / RATINGS_FILE, folder / MOVIES_FILE]


def _genres(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """"Adventure|Animation" -> "Adventure, Animation"; the no-genre placeholder becomes ""."""
    listed = pc.if_else(pc.equal(column, NO_GENRES), "", column)
    return pc.replace_substring(listed, "|", ", ")


def read(config: DataConfig) -> RawData:
    ratings_path, movies_path = files(config)
    ratings = read_delimited(ratings_path, required=["userId", "movieId", "timestamp"])
    movies = read_delimited(movies_path, required=["movieId", "title", "genres"])
    items = pa.table({"item_id": movies.column("movieId"), "title": movies.column("title"),
                      "genres": _genres(movies.column("genres"))})
    return RawData(
        interactions=interactions_table(ratings.column("userId"), ratings.column("movieId"),
                                        to_epoch(ratings.column("timestamp"), ratings_path, "timestamp")),
        items=items,
        interactions_file=ratings_path,
        items_file=movies_path,
    )
