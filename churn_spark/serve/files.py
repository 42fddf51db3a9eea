"""Small files of the lakehouse (the model pointer, metadata, the ONNX model) from a local folder or an
object store, through pyarrow's filesystems: no Hadoop, no JVM."""

from __future__ import annotations

import pyarrow.fs as pafs


def storage_uri(path: str) -> str:
    """delta-rs and pyarrow name S3 `s3://`; the Spark jobs' Hadoop paths say `s3a://`."""
    return "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path and not path.startswith("file://"):
        return pafs.FileSystem.from_uri(storage_uri(path))
    return pafs.LocalFileSystem(), path.removeprefix("file://")


def read_bytes(path: str) -> bytes | None:
    """The file's contents, None when it does not exist."""
    fs, inner = _fs(path)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(inner) as stream:
        return bytes(stream.read())


def read_text(path: str) -> str | None:
    data = read_bytes(path)
    return None if data is None else data.decode()


def file_stamp(path: str) -> tuple[int, int] | None:
    """(size, mtime ns) of a file, None when absent: enough to notice a model exported after start."""
    fs, inner = _fs(path)
    info = fs.get_file_info(inner)
    return (info.size or 0, info.mtime_ns or 0) if info.type == pafs.FileType.File else None
