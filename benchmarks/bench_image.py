"""How big are the job image's Python dependencies, and how fast does the job start? Before and
after pruning (docs/image.md).

    .venv/bin/python -m benchmarks.bench_image [--repeat 7] [--keep DIR] [--strip-level debug]

No Docker engine: each tree is the plain folder the image's /deps would be, built the same way.
  before     `pip install --no-compile --target` of the 13 pins docker/requirements.txt had
             before (boto3, botocore, requests, ... beside numpy and pyarrow): today's image
  lean       the same of today's docker/requirements.txt (numpy, pyarrow), not pruned
  pruned     lean, then docker/prune.py: the image's /deps
Sizes: apparent and on disk as du counts them (MiB), files, and the folder as a tar compressed
with gzip -6 (what `docker push` sends by default) and zstd -3 (buildx's compression=zstd), the
bytes a Fargate task pulls for that layer.

Cold job time: `python -m backtest run` (a 2-combination grid on 4 months of synthetic hourly
candles in a local store, results written) in a new process, as the image runs it: a fresh
interpreter (a venv, as the base image's), cwd /app holding a byte-compiled copy of backtest/
and strategies/, PYTHONPATH the tree, PYTHONDONTWRITEBYTECODE=1 (so every run of an unpruned tree
compiles its modules again, as in the image, whose files the job's user cannot write). The first
run after the tree is built is reported alone; then --repeat runs per tree, the trees taken in
turn, median (min-max). The page cache is warm here: what a Fargate task spends pulling and
unpacking the image is not in these figures (the compressed sizes are its input). Also the
import alone (`import backtest.cli, backtest.job`), the part of the start that pruning can change.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backtest.data.store import CandleStore
from backtest.data.synthetic import synthetic_candles
from tests.support import REPO, STORE_SINCE, STORE_UNTIL

# docker/requirements.txt before the image was pruned (commit 881180a).
BEFORE = """numpy==2.4.6
pyarrow==26.0.1
requests==2.34.2
urllib3==2.8.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
idna==3.20
boto3==1.43.117
botocore==1.43.117
s3transfer==0.19.3
jmespath==1.1.0
python-dateutil==2.9.0.post0
six==1.17.0
"""
MIB = 2**20


def load_prune():
    spec = importlib.util.spec_from_file_location("prune", REPO / "docker" / "prune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done


def compressed_bytes(folder: Path, compressor: str) -> int | None:
    """Bytes of `tar -c folder | compressor` (None when the compressor is not installed)."""
    if not shutil.which(compressor.split()[0]):
        return None
    done = run(["bash", "-c", f'tar -C "$1" -cf - . | {compressor} | wc -c', "bash", str(folder)])
    return int(done.stdout)


def time_process(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per tree after the first (default 7)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    parser.add_argument("--strip-level", default="unneeded", help="docker/prune.py's --strip-level (default unneeded)")
    args = parser.parse_args()
    prune = load_prune()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-image-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; work folder {work}")
    try:
        venv = work / "venv"  # the image's interpreter: its site-packages hold pip only
        if not (venv / "bin" / "python").exists():
            run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        pip_env.pop("PYTHONPATH", None)

        (work / "before.txt").write_text(BEFORE)
        requirements = {"before": work / "before.txt", "lean": REPO / "docker" / "requirements.txt"}
        trees: dict[str, Path] = {}
        build_seconds: dict[str, float] = {}
        for name in ("before", "lean", "pruned"):
            tree = work / name
            shutil.rmtree(tree, ignore_errors=True)
            began = time.perf_counter()
            source = requirements.get(name, requirements["lean"])
            pip = [python, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(tree), "-r", str(source)]
            run(pip, env=pip_env)
            if name == "pruned":
                prune_cmd = [python, str(REPO / "docker" / "prune.py"), str(tree), "--strip-level", args.strip_level]
                print(run(prune_cmd).stdout, end="")
            build_seconds[name] = time.perf_counter() - began
            trees[name] = tree

        app = work / "app"  # /app: the package and the strategies, byte-compiled as the image does
        shutil.rmtree(app, ignore_errors=True)
        for folder in ("backtest", "strategies"):
            shutil.copytree(REPO / folder, app / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        run([python, "-m", "compileall", "-q", str(app)])
        store = work / "store"
        shutil.rmtree(store, ignore_errors=True)
        CandleStore(str(store)).write("BTCUSDT", synthetic_candles("BTCUSDT", STORE_SINCE, STORE_UNTIL), "synthetic")

        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        base_env = {k: os.environ[k] for k in keep if k in os.environ}
        base_env.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        envs = {name: {**base_env, "PYTHONPATH": f"{app}{os.pathsep}{tree}"} for name, tree in trees.items()}
        job = [python, "-m", "backtest", "run", "--symbol", "BTCUSDT", "--data-url", str(store), "--window", "1d,2d",
               "--results-url", str(work / "results")]  # fmt: skip
        imports = [python, "-c", "import backtest.cli, backtest.job"]

        first = {name: time_process(job, app, envs[name]) for name in trees}
        job_times: dict[str, list[float]] = {name: [] for name in trees}
        import_times: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.repeat):
            for name in trees:  # in turn, so that a busy moment of the machine hits every tree
                job_times[name].append(time_process(job, app, envs[name]))
                import_times[name].append(time_process(imports, app, envs[name]))

        print()
        print(f"{'tree':8} {'apparent':>9} {'on disk':>9} {'files':>6} {'tar.gz':>9} {'tar.zst':>9} {'build':>7}")
        for name, tree in trees.items():
            size = prune.tree_size(tree)
            gz, zst = compressed_bytes(tree, "gzip -6"), compressed_bytes(tree, "zstd -3 -T1 -c")
            print(
                f"{name:8} {size.apparent / MIB:7.1f}Mi {size.on_disk / MIB:7.1f}Mi {size.files:6d} "
                f"{gz / MIB if gz else float('nan'):7.1f}Mi {zst / MIB if zst else float('nan'):7.1f}Mi "
                f"{build_seconds[name]:6.1f}s"
            )
        print()
        print(f"cold job (`python -m backtest run`, new process), seconds; {args.repeat} runs per tree after the first")
        print(f"{'tree':8} {'first':>7} {'median':>7} {'min-max':>13}   {'imports median':>14} {'min-max':>13}")
        for name in trees:
            jobs, imps = job_times[name], import_times[name]
            print(
                f"{name:8} {first[name]:7.3f} {statistics.median(jobs):7.3f} {min(jobs):6.3f}-{max(jobs):6.3f}   "
                f"{statistics.median(imps):14.3f} {min(imps):6.3f}-{max(imps):6.3f}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
