"""Prune a `pip install --target DIR -r docker/requirements.txt` folder to what the job loads.

    python docker/prune.py DIR [--strip-level unneeded|debug|none] [--no-compile] [--no-check]

The Dockerfile's deps stage runs this on /deps before the image copies /deps; the tests and
benchmarks/bench_image.py run it on a plain folder here, so what is measured and tested is what
the image holds (docs/image.md). Steps, in order:

1. Remove what `python -m backtest run|check-strategy|list-strategies` never imports (`RULES`:
   pyarrow's Flight, ORC, Substrait bindings, Parquet encryption and C++ tests; every package's
   tests and test extension modules, headers, C/Cython sources, static libraries and typing
   stubs; numpy's build tools). Never anything the job imports (step 5 checks).
2. Replace byte-identical copies of a shared library (a wheel has no symlinks, so pyarrow ships
   libarrow_python.so, .so.2600 and .so.2600.1.0 as three files) by symlinks to the one the
   extensions link (the SONAME, `lib*.so.N`).
3. Strip the ELF files, except auditwheel's grafted `<package>.libs/` (see `in_grafted_folder`).
   Default `--strip-unneeded`: the static symbol table (`.symtab`) goes, the dynamic one
   (`.dynsym`, all the loader and `dladdr` use) stays; not --strip-all. The wheels carry no
   debug sections outside the grafted libraries, so `--strip-level debug` removes nothing.
4. Byte-compile what is left (`compileall`, unchecked-hash: the image's files never change, so
   no source is stat'ed or hashed at import). Without this the job, running as a non-root user
   on root-owned files with PYTHONDONTWRITEBYTECODE, compiles every module it imports at each start.
5. Import `JOB_MODULES` and every remaining extension module in a fresh interpreter that sees
   DIR and the standard library only: each stripped library still loads.

Removing is by name, relative to DIR, never inside a `*.dist-info` folder (the licenses stay);
a pattern that matches nothing is fine (another version may not ship it). Prints one line per
step with the MiB it saved (apparent size of the files).
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import py_compile
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

# (why it is safe, patterns relative to the folder). `**/` patterns match at any depth.
RULES: list[tuple[str, list[str]]] = [
    (
        "pyarrow Flight: an RPC framework; the job reads and writes files",
        [
            "pyarrow/flight.py",
            "pyarrow/_flight.*.so",
            "pyarrow/libarrow_flight.so*",
            "pyarrow/libarrow_python_flight.so*",
        ],
    ),
    ("pyarrow Gandiva: an expression compiler (not in the PyPI wheels; in case)", ["pyarrow/*gandiva*"]),
    ("pyarrow ORC files (pyarrow.dataset imports it optionally)", ["pyarrow/orc.py", "pyarrow/_*orc.*.so"]),
    (
        "pyarrow Substrait bindings (libarrow_substrait.so stays: every pyarrow extension links it)",
        ["pyarrow/substrait.py", "pyarrow/_substrait.*.so"],
    ),
    (
        "Parquet modular encryption (the store's files are not encrypted; pyarrow.dataset imports it optionally)",
        [
            "pyarrow/parquet/encryption.py",
            "pyarrow/_parquet_encryption.*.so",
            "pyarrow/_dataset_parquet_encryption.*.so",
            "pyarrow/libarrow_python_parquet_encryption.so*",
        ],
    ),
    (
        "test suites and their data",
        [
            "**/tests",
            "pyarrow/_pyarrow_cpp_tests.*.so",
            "numpy/_core/_*_tests.*.so",  # _multiarray_tests, _umath_tests, _rational_tests, ...
            "numpy/_core/_simd.*.so",  # numpy's SIMD test module
            "pyarrow/conftest.py",
            "pyarrow/benchmark.py",
            "numpy/conftest.py",
        ],
    ),
    (
        "headers, C/C++ and Cython sources, static libraries (for building against numpy or pyarrow)",
        [
            "pyarrow/include",
            "pyarrow/includes",
            "pyarrow/src",
            "numpy/_core/include",
            "numpy/_core/lib",
            "**/*.pyx",
            "**/*.pxd",
            "**/*.pxi",
            "**/*.h",
            "**/*.hpp",
            "**/*.c",
            "**/*.cc",
            "**/*.cpp",
            "**/*.a",
        ],
    ),
    (
        "numpy's build tools: f2py, numpy.distutils, the PyInstaller hook, their scripts",
        ["numpy/f2py", "numpy/distutils", "numpy/_pyinstaller", "bin/f2py", "bin/numpy-config"],
    ),
    ("typing stubs (for type checkers, never imported)", ["**/*.pyi"]),
]

# The numpy and pyarrow modules `python -m backtest run` (with --data-url or --input, Parquet or
# CSV, grids, walk-forward, execution options, --results-url), check-strategy and list-strategies
# import, directly or through pyarrow and numpy (sys.modules at exit; tests/test_image.py), plus
# pyarrow.dataset: `pq.read_table(path)` goes through it. Step 5 imports them all.
JOB_MODULES = [
    "numpy",
    "numpy.lib.stride_tricks",
    "numpy.linalg",
    "numpy.ma",
    "numpy.random",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.csv",
    "pyarrow.dataset",
    "pyarrow.fs",
    "pyarrow.ipc",
    "pyarrow.parquet",
    "pyarrow._s3fs",
]

ELF_MAGIC = b"\x7fELF"
SONAME = re.compile(r"^(lib[^/]*\.so)\.\d+$")  # libarrow_python.so.2600


class TreeSize(NamedTuple):
    """A folder's size as du counts it: apparent (`du -sb`) and on disk (`du -sB1`), in bytes,
    and how many files (symlinks included) it holds."""

    apparent: int
    on_disk: int
    files: int


def tree_size(root: Path) -> TreeSize:
    """Every entry under root and root itself (folders too, as du), each inode once."""
    seen: set[tuple[int, int]] = set()
    apparent = on_disk = files = 0
    for path in [root, *root.rglob("*")]:
        stat = path.lstat()
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        apparent += stat.st_size
        on_disk += stat.st_blocks * 512
        files += not path.is_dir() or path.is_symlink()
    return TreeSize(apparent, on_disk, files)


def tree_bytes(root: Path) -> int:
    """Apparent size of the regular files under root (symlinks count as nothing)."""
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def remove_unused(root: Path) -> dict[str, int]:
    """Apply RULES; bytes removed per rule."""
    saved: dict[str, int] = {}
    for why, patterns in RULES:
        total = 0
        for pattern in patterns:
            for path in sorted(root.glob(pattern), key=lambda p: len(p.parts)):
                if not path.exists() and not path.is_symlink():  # inside a folder removed already
                    continue
                if path.relative_to(root).parts[0].endswith(".dist-info"):  # licenses and metadata stay
                    continue
                if path.is_dir() and not path.is_symlink():
                    total += tree_bytes(path)
                    shutil.rmtree(path)
                else:
                    total += path.lstat().st_size
                    path.unlink()
        saved[why] = total
    return saved


def link_duplicates(root: Path) -> int:
    """Symlink byte-identical copies of a shared library to its SONAME file; bytes saved."""
    saved = 0
    for soname_file in sorted(root.rglob("lib*.so.*")):
        match = SONAME.match(soname_file.name)
        if not match or soname_file.is_symlink() or not soname_file.is_file():
            continue
        digest = hashlib.sha256(soname_file.read_bytes()).digest()
        for other in sorted(soname_file.parent.glob(match.group(1) + "*")):
            if other == soname_file or other.is_symlink() or not other.is_file():
                continue
            if other.stat().st_size == soname_file.stat().st_size and (
                hashlib.sha256(other.read_bytes()).digest() == digest
            ):
                saved += other.stat().st_size
                other.unlink()
                other.symlink_to(soname_file.name)
    return saved


def is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == ELF_MAGIC


def elf_section_names(path: Path) -> list[str] | None:
    """Section names of a 64-bit little-endian ELF file (None for any other file)."""
    data = path.read_bytes()
    if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:  # ELFCLASS64, ELFDATA2LSB
        return None
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if not shoff or shstrndx >= shnum:
        return []
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]  # sh_offset of the section-name table
    return [data[names_at + h[0] : data.index(b"\0", names_at + h[0])].decode() for h in headers]


def in_grafted_folder(root: Path, path: Path) -> bool:
    """In auditwheel's `<package>.libs/` (numpy.libs: OpenBLAS, libgfortran): libraries patchelf
    rewrote. binutils' strip breaks such a file ("ELF load command address/offset not
    page-aligned" at import: seen with numpy.libs' OpenBLAS), so they are never stripped."""
    return any(part.endswith(".libs") for part in path.relative_to(root).parts)


def strip_candidates(root: Path, level: str) -> list[Path]:
    """ELF files to strip: at level "debug" those with a `.debug*` section (nothing else has
    anything for --strip-debug to remove), at "unneeded" every one; never a grafted library."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or in_grafted_folder(root, path):
            continue
        names = elf_section_names(path)
        if names is not None and (level == "unneeded" or any(n.startswith(".debug") for n in names)):
            found.append(path)
    return found


def strip_elf(root: Path, level: str, strip: str = "strip") -> tuple[int, int]:
    """`strip --strip-<level>` on the `strip_candidates`; (files stripped, bytes saved)."""
    files = strip_candidates(root, level)
    if files and not shutil.which(strip):
        raise SystemExit(f"error: {len(files)} ELF files to strip and {strip!r} is not on PATH")
    before = sum(p.stat().st_size for p in files)
    for start in range(0, len(files), 200):
        subprocess.run([strip, f"--strip-{level}", *map(str, files[start : start + 200])], check=True)
    return len(files), before - sum(p.stat().st_size for p in files)


def byte_compile(root: Path) -> int:
    """compileall, unchecked-hash; bytes added (negative: the tree grows)."""
    before = tree_bytes(root)
    ok = compileall.compile_dir(
        str(root),
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise SystemExit(f"error: compileall failed under {root}")
    return before - tree_bytes(root)


def extension_modules(root: Path) -> list[str]:
    """Dotted names of the extension modules (`*.cpython-*.so`) under root's packages."""
    names = []
    for path in sorted(root.rglob("*.so")):
        parts = path.relative_to(root).parts
        stem = parts[-1].split(".", 1)[0]
        if ".cpython-" in parts[-1] and all(p.isidentifier() for p in (*parts[:-1], stem)):
            names.append(".".join((*parts[:-1], stem)))
    return names


def check_imports(root: Path) -> int:
    """Import JOB_MODULES and every remaining extension module (so each stripped library still
    loads) in a fresh interpreter that sees root and the standard library only (-S: no
    site-packages; -E: no PYTHON* variables), each from root; how many were imported."""
    modules = JOB_MODULES + [m for m in extension_modules(root) if m not in JOB_MODULES]
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(root) + os.sep!r}), module.__file__\n"
    )
    done = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: the pruned tree cannot import the job's modules:\n{done.stderr}")
    return len(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("folder", type=Path, help="a pip install --target folder")
    parser.add_argument(
        "--strip-level",
        choices=("unneeded", "debug", "none"),
        default="unneeded",
        help="strip --strip-unneeded (default), --strip-debug, or no strip",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip byte-compiling")
    parser.add_argument("--no-check", action="store_true", help="skip the import check")
    parser.add_argument("--strip", default="strip", help="the strip program (default: strip on PATH)")
    args = parser.parse_args(argv)
    root: Path = args.folder.resolve()
    if not (root / "numpy").is_dir() or not (root / "pyarrow").is_dir():
        parser.error(f"{root} holds no numpy and pyarrow: not a pip install --target folder of the job")

    mib = 2**20
    start = tree_bytes(root)
    print(f"{root}: {start / mib:.1f} MiB", flush=True)
    for why, saved in remove_unused(root).items():
        print(f"  removed {saved / mib:6.1f} MiB  {why}")
    print(f"  linked  {link_duplicates(root) / mib:6.1f} MiB  identical copies of a shared library")
    if args.strip_level != "none":
        count, saved = strip_elf(root, args.strip_level, args.strip)
        print(f"  strip   {saved / mib:6.1f} MiB  strip --strip-{args.strip_level} on {count} ELF files")
    if not args.no_compile:
        print(f"  pyc     {-byte_compile(root) / mib:+6.1f} MiB  byte-compiled (unchecked-hash)")
    if not args.no_check:
        print(f"  import check: {check_imports(root)} modules ok")
    print(f"{root}: {tree_bytes(root) / mib:.1f} MiB (was {start / mib:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
