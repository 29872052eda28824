"""The receiver's write-ahead log: an event is acknowledged only once it is on disk.

Records go into numbered segment files, each record framed as
`length (4 bytes) | crc32 (4 bytes) | payload`, and `append` fsyncs once for
every record handed to it (the receiver gathers concurrent requests into one
append: group commit, so eight senders cost one fsync, not eight). A crash can
leave a torn record at the end of the newest segment; it was never
acknowledged (the fsync had not returned), so replay stops there and the next
append truncates it.

A segment is dropped only after every row built from it is in the store, and
the Parquet files a segment produces are named after it, so replaying a
segment after a crash between the two rewrites the same files: each
acknowledged event is stored once.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from keel.components._common.errors import DataError
from keel.components._common.storage import fsync_dir

_HEADER = struct.Struct("<II")
_PREFIX, _SUFFIX = "segment-", ".wal"


class WriteAheadLog:
    """Numbered, append-only segments under `directory`; the highest number is the one being written."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        numbers = self.segments()
        self.current = numbers[-1] if numbers else 1
        self._handle = None
        self.size = 0

    def segments(self) -> list[int]:
        """Segment numbers on disk, oldest first."""
        numbers = []
        for path in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            try:
                numbers.append(int(path.name[len(_PREFIX):-len(_SUFFIX)]))
            except ValueError:
                continue  # not ours
        return sorted(numbers)

    def path(self, number: int) -> Path:
        return self.directory / f"{_PREFIX}{number:012d}{_SUFFIX}"

    def replay(self) -> Iterator[tuple[int, bytes]]:
        """Every complete record, oldest segment first, as (segment number, payload)."""
        for number in self.segments():
            for payload in _records(self.path(number), truncate=number == self.current):
                yield number, payload

    def append(self, payloads: list[bytes]) -> int:
        """Writes the records to the current segment and fsyncs; returns that segment's number."""
        if self._handle is None:
            self._open()
        frame = b"".join(_HEADER.pack(len(p), zlib.crc32(p)) + p for p in payloads)
        self._handle.write(frame)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.size += len(frame)
        return self.current

    def seal(self) -> int:
        """Closes the current segment (later appends go to a new one); returns the sealed number."""
        sealed = self.current
        self.close()
        self.current += 1
        self.size = 0
        return sealed

    def drop(self, number: int) -> None:
        """Deletes a sealed segment whose rows are all stored."""
        if number >= self.current:
            raise ValueError(f"segment {number} is still being written")
        self.path(number).unlink(missing_ok=True)
        fsync_dir(self.directory)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> None:
        path = self.path(self.current)
        # a torn record at the tail (a crash mid-append) is cut off before new records follow it
        good = sum(_HEADER.size + len(p) for p in _records(path)) if path.exists() else 0
        self._handle = open(path, "ab")
        if self._handle.tell() != good:
            self._handle.truncate(good)
            self._handle.seek(good)
        self.size = good
        fsync_dir(self.directory)


def _records(path: Path, truncate: bool = True) -> Iterator[bytes]:
    data = path.read_bytes() if path.exists() else b""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        start, end = offset + _HEADER.size, offset + _HEADER.size + length
        if end > len(data) or zlib.crc32(data[start:end]) != crc:
            if not truncate:  # a sealed segment was fsynced whole: damage there is not a torn tail
                raise DataError(f"{path}: record at byte {offset} is damaged; the write-ahead log cannot be replayed past it")
            return
        yield data[start:end]
        offset = end
