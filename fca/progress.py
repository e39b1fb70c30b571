"""Progress reports: a tqdm bar on a terminal, a log line now and then anywhere else.

A tqdm bar redraws itself with carriage returns. Written into a file (`dvc repro`,
Snakemake's logs/<stage>.log, a Slurm job's output) that makes one line of tens of
kilobytes, and the lines printed after it end up at its far end. So a bar is drawn
only when stderr is a terminal; otherwise `LogProgress` writes one ordinary log line
(logger `fca.progress`, INFO) every `every_fraction` of the total or every
`every_seconds`, whichever comes first, and one at the end.

    bar = progress_bar(total=300, desc="train_fdc", enabled=show, unit="step")
    for ...:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()

    for item in track(items, desc="degrade", enabled=show, unit="img"): ...
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

log = logging.getLogger("fca.progress")

T = TypeVar("T")

EVERY_FRACTION = 0.1
EVERY_SECONDS = 30.0


def on_terminal(stream: Any = None) -> bool:
    """Whether `stream` (default: sys.stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or replaced streams
        return False


# Not tqdm(disable=True): measured, a process's first one takes 4-10 ms and loads multiprocessing's locks, and it keeps n at 0.
class NullProgress:
    """Reports nothing (progress disabled)."""

    n = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What tqdm lacks, measured by benchmarks/libraries.py for 1000 steps with a postfix each: into a file tqdm wrote about
# 78 kB on one line (over 1,000 carriage returns), with disable=None nothing; this wrote 10 lines, 763 bytes. The line is
# formatted here: tqdm.format_meter says "9.00MB [00:30, 315kB/s]" for 9 MiB at 307 KiB/s (binary size, decimal rate).
class LogProgress(NullProgress):
    """Progress as log lines: `desc: n/total unit (p%), rate, eta, postfix`, every `every_fraction`
    of the total (or every `every_seconds`, whichever is first; by time only when the total is
    unknown), and once at close."""

    def __init__(
        self, total: float | None = None, desc: str = "", *, initial: float = 0, unit: str = "it",
        unit_scale: bool = False, every_fraction: float = EVERY_FRACTION, every_seconds: float = EVERY_SECONDS,
        logger: logging.Logger | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = self.start_n = initial
        self.every_seconds = every_seconds
        self.step = max(1.0, total * every_fraction) if total else None
        self.log = logger or log
        self.t0 = self.last_t = time.monotonic()
        self.last_n = initial
        self.postfix = ""
        self.closed = False

    def _amount(self, n: float, unit: str) -> str:
        """`n unit`, with a binary (bytes: 1.50 MiB) or decimal (12.3 k img) prefix when unit_scale."""
        if not self.unit_scale:
            return f"{n:g} {unit}"
        base, prefixes = (1024.0, ("", "Ki", "Mi", "Gi", "Ti")) if unit == "B" else (1000.0, ("", "k ", "M ", "G ", "T "))
        for prefix in prefixes:
            if abs(n) < base or prefix == prefixes[-1]:
                return f"{n:.3g} {prefix}{unit}" if prefix else f"{n:.0f} {unit}"
            n /= base
        return f"{n:g} {unit}"  # not reached

    def line(self) -> str:
        if self.total:
            done = (f"{self._amount(self.n, self.unit)}/{self._amount(self.total, self.unit)}" if self.unit_scale
                    else f"{self.n:g}/{self.total:g} {self.unit}")
            text = f"{self.desc}: {done} ({100.0 * self.n / self.total:.0f}%)"
        else:
            text = f"{self.desc}: {self._amount(self.n, self.unit)}"
        elapsed = time.monotonic() - self.t0
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            text += f", {self._amount(rate, self.unit) if self.unit_scale else f'{rate:.3g} {self.unit}'}/s"
            if self.total and self.n < self.total:
                text += f", eta {_duration((self.total - self.n) / rate)}"
        text += f", {_duration(elapsed)} elapsed"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _emit(self) -> None:
        self.log.info("%s", self.line())
        self.last_t, self.last_n = time.monotonic(), self.n

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        due_steps = self.step is not None and self.n - self.last_n >= self.step
        if due_steps or now - self.last_t >= self.every_seconds:
            self._emit()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}) | kwargs
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n != self.last_n:
                self._emit()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def progress_bar(
    total: float | None = None, desc: str = "", enabled: bool = True, *, initial: float = 0, unit: str = "it",
    unit_scale: bool = False, leave: bool = True, every_fraction: float = EVERY_FRACTION,
    every_seconds: float = EVERY_SECONDS, stream: Any = None, **tqdm_kwargs: Any,
) -> Any:
    """A progress reporter with update / set_postfix / set_description / close (and a context manager):
    nothing when not `enabled`; a tqdm bar when `stream` (default stderr) is a terminal; otherwise
    a LogProgress that logs a line every `every_fraction` of `total` or `every_seconds`."""
    if not enabled:
        return NullProgress()
    if on_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave,
                    dynamic_ncols=True, file=stream, **tqdm_kwargs)
    return LogProgress(total, desc, initial=initial, unit=unit, unit_scale=unit_scale,
                       every_fraction=every_fraction, every_seconds=every_seconds)


def track(iterable: Iterable[T], desc: str = "", enabled: bool = True, *, total: float | None = None, **kwargs: Any) -> Iterator[T]:
    """Iterate over `iterable`, reporting progress as `progress_bar` does (total: len(iterable) when it has one)."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = progress_bar(total, desc, enabled, **kwargs)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
