"""The clock the speed benchmarks share (bench_generate.py, bench_moe.py): --threads and --cpu-time.

On a machine shared with other jobs the wall clock counts their time too; --cpu-time counts only this
process's CPU time, which is steadier (and equal to the wall clock on one idle thread).
"""

from __future__ import annotations

import time

import torch

_clock = time.perf_counter


def add_timing_args(ap) -> None:
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this process's CPU time instead of the wall clock (steadier on a shared machine)")


def apply_timing_args(args) -> None:
    """Set torch's threads and the clock `timed` reads, from the parsed arguments."""
    global _clock
    torch.set_num_threads(args.threads)
    _clock = time.process_time if args.cpu_time else time.perf_counter


def clock_name(args) -> str:
    return "CPU time" if args.cpu_time else "wall clock"


def timed(fn):
    """(seconds fn() took, what it returned), on the chosen clock."""
    t0 = _clock()
    out = fn()
    return _clock() - t0, out
