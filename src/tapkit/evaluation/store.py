"""Per-rank prediction files that make an evaluation resumable.

Each rank appends one JSON line per finished image to `rank-NNNNN.jsonl` in the
shard folder. A rerun of the same command skips every image found in any shard
file (so it may even use a different number of processes); `run.json` records
what produced the predictions, and a rerun with other settings is refused rather
than mixing two runs. A line cut short by a crash is dropped."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tapkit.errors import UserError
from tapkit.utils.atomic import write_text_atomic
from tapkit.runtime import Runtime

MANIFEST = "run.json"
SHARD_GLOB = "rank-*.jsonl"


class ResumeError(UserError):
    """Saved predictions that belong to a different run."""


def _normalized(value) -> object:
    return json.loads(json.dumps(value))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a shard file; an unreadable last line (a write cut short) is dropped."""
    lines = path.read_bytes().split(b"\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1 and any(rest.strip() for rest in lines[i + 1 :]):
                raise UserError(f"corrupt prediction file {path} (line {i + 1}); pass --fresh to start over") from None
    return records


class PredictionStore:
    def __init__(self, directory: Path, rank: int):
        self.directory = directory
        self.rank = rank

    @property
    def own_shard(self) -> Path:
        return self.directory / f"rank-{self.rank:05d}.jsonl"

    @classmethod
    def open(cls, directory: str | os.PathLike, run_key: dict, ctx: Runtime, fresh: bool = False) -> "PredictionStore":
        """Prepares the shard folder on every rank: checks that saved predictions come
        from the same run (`run_key`), or deletes them when `fresh`."""
        directory = Path(directory)
        manifest = directory / MANIFEST
        key = _normalized(run_key)
        if not fresh and manifest.is_file():
            saved = json.loads(manifest.read_text())
            if saved != key:
                changed = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
                raise ResumeError(
                    f"{directory} holds predictions of a different run (changed: {', '.join(changed)}); "
                    "pass --fresh to discard them or choose another --output-dir"
                )
        ctx.barrier()  # every rank has checked before rank 0 deletes anything
        if ctx.is_main:
            directory.mkdir(parents=True, exist_ok=True)
            if fresh:
                for path in directory.glob(SHARD_GLOB):
                    path.unlink()
            write_text_atomic(manifest, json.dumps(key, indent=1) + "\n")
        ctx.barrier()
        store = cls(directory, ctx.rank)
        store._drop_partial_line()
        return store

    def _drop_partial_line(self) -> None:
        path = self.own_shard
        if not path.is_file():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def shard_files(self) -> list[Path]:
        return sorted(self.directory.glob(SHARD_GLOB))

    def done_ids(self) -> set:
        """Image ids with saved predictions, in any shard."""
        return {record["image_id"] for path in self.shard_files() for record in read_jsonl(path)}

    def append(self, record: dict) -> None:
        """Saves one image's predictions ({"image_id": ..., ...})."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(self.own_shard, "a", encoding="utf-8") as f:
            f.write(line)

    def read_all(self) -> dict:
        """image id -> record, over all shards (the first record of an image wins)."""
        records: dict = {}
        for path in self.shard_files():
            for record in read_jsonl(path):
                records.setdefault(record["image_id"], record)
        return records
