"""Writing files so that a reader never sees half of one: write beside the target, then rename
over it. A run killed at any point leaves the old file or the new one, never a torn one."""

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from compressor.errors import CompressorError


@contextlib.contextmanager
def replacing(path: Path):
    """Yields a temporary path beside `path` for the caller to write; on success it replaces
    `path`, on failure it is removed and `path` stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


class Staging:
    """The files a pass replaces, each written to a temporary file beside it (`file`) and put in
    place when the with-block ends without error. On an error the temporary files are removed,
    the files stay as they were, and the error names the files rather than their stand-ins."""

    def __init__(self):
        self.stack = contextlib.ExitStack()
        self.temps: dict[Path, Path] = {}

    def __enter__(self):
        self.stack.__enter__()
        return self

    def file(self, path: Path) -> Path:
        tmp = self.stack.enter_context(replacing(path))
        self.temps[tmp] = Path(path)
        return tmp

    def __exit__(self, kind, error, traceback):
        if not isinstance(error, CompressorError):
            return self.stack.__exit__(kind, error, traceback)
        message = str(error)
        for tmp, path in self.temps.items():
            message = message.replace(str(tmp), str(path)).replace(tmp.name, path.name)
        kept = [path.name for path in self.temps.values() if path.exists()]
        self.stack.__exit__(kind, error, traceback)
        if kept:
            message += f" ({', '.join(kept)} left as {'they were' if len(kept) > 1 else 'it was'})"
        raise CompressorError(message) from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_tensors(d: dict) -> dict:
    """Tensors as safetensors can write them: on the CPU, contiguous, each its own storage."""
    # safetensors refuses shared or strided storage; tied weights are saved once each.
    return {k: v.detach().cpu().contiguous().clone() for k, v in d.items()}
