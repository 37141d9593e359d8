"""Run every benchmark of issues 2 and 3 and print one table: what ``make bench`` runs.

Run from the repository root::

    .venv/bin/python benchmarks/run_all.py            # about four minutes on two busy cores
    .venv/bin/python benchmarks/run_all.py --quick    # a smoke run

It runs ``bench_training.py`` (mdcvkit's training engine against mlcolvar's
``AutoEncoderCV``; needs ``pip install -e ".[bench]"``) and ``bench_featurize.py``
(``FeatureCollector`` against a bare MDAnalysis loop, serial and with 2 workers), then, for
issue 3, ``bench_models.py`` (seconds per epoch of each model of the autoencoder family, and
``"tae"`` against deeptime's ``TAE``), each with its defaults, one after the other in this
process, and prints their rows in one table. The ratios of each benchmark come from timings
taken side by side in the same run.
"""

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

import torch
from _common import print_table

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("bench_training", "bench_featurize", "bench_models")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only this benchmark")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    print(f"mdcvkit benchmarks on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPU cores), "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    table = [("benchmark", "engine", "figure", "median", "note")]
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(name)
        print(f"\n== {name}", flush=True)
        start = time.perf_counter()
        try:
            figures = module.main(["--quick"] if args.quick else [])
        except SystemExit as err:  # a missing optional dependency: report it, run the others
            print(f"{name} skipped: {err}", flush=True)
            table.append((name.removeprefix("bench_"), "skipped", "", "", str(err)))
            continue
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
        table.extend(module.rows(figures))
    print("\n== summary")
    print_table(table)


if __name__ == "__main__":
    main()
