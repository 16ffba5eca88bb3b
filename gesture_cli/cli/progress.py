"""One progress display per long step: a Rich bar on a terminal, periodic plain lines otherwise.

CI logs and `nohup` files get one line every `every_s` seconds (and at the end) instead of
thousands of redraws.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def progress_bar(console, description: str, total: int | None, *, unit: str = "it", every_s: float = 10.0):
    """Yield update(done, total=None) for a task; shows throughput in `unit`/s and an ETA.

    The rate counts only the work timed while the bar was open: from the first update, whose `done` is its base
    (the steps a resumed run had already made, or the batch a bar was first told of, whose time was not seen)."""
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        rate = TextColumn("{task.fields[rate]}")
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), rate,
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        ) as prog:
            task = prog.add_task(description, total=total, rate="")
            base: list = []  # [count, time] of the first update: the rate is timed from there

            def update(done: int, new_total: int | None = None) -> None:
                now = time.perf_counter()
                base[:] = base or [done, now]
                dt = now - base[1]
                fields = {"rate": f"{(done - base[0]) / dt:,.1f} {unit}/s" if dt > 0 and done > base[0] else ""}
                prog.update(task, completed=done, total=new_total if new_total is not None else prog.tasks[0].total, **fields)

            yield update
        return

    last = time.perf_counter()
    state = {"done": 0, "total": total, "printed_at": -1, "base": None, "t0": last}

    def update(done: int, new_total: int | None = None) -> None:
        nonlocal last
        state["done"] = done
        if state["base"] is None:  # the rate is timed from the first update, with its count as the base
            state["base"], state["t0"] = done, time.perf_counter()
        if new_total is not None:
            state["total"] = new_total
        now = time.perf_counter()
        finished = state["total"] is not None and done >= state["total"]
        if now - last >= every_s or finished:
            last = now
            _line(console, description, done, state["total"], now - state["t0"], unit, base=state["base"])
            state["printed_at"] = done

    yield update
    if state["printed_at"] != state["done"]:
        _line(console, description, state["done"], state["total"], time.perf_counter() - state["t0"], unit, base=state["base"] or 0)


def _line(console, description: str, done: int, total: int | None, dt: float, unit: str, *, base: int) -> None:
    """One plain progress line; the rate (and so the ETA) only when work was timed since the bar opened."""
    rate = (done - base) / dt if dt > 0 and done > base else 0.0
    of = f"/{total}" if total else ""
    eta = f", ETA {max(0.0, (total - done) / rate):.0f}s" if total and rate > 0 and done < total else ""
    speed = f" ({rate:,.1f} {unit}/s{eta})" if rate > 0 else ""
    console.print(f"{description}: {done}{of} {unit}{speed}", highlight=False)


@contextmanager
def byte_progress(console, description: str, *, every_s: float = 10.0):
    """Yield on_progress(done_bytes, total_bytes_or_None) for downloads and archives: a Rich bar (bytes,
    speed, ETA) on a terminal, a line every `every_s` seconds otherwise. Nothing is drawn until the first
    call, so a cache hit stays quiet; the bar is transient (the command prints its own summary line)."""
    state: dict = {"progress": None, "task": None, "last": 0.0, "t0": 0.0}

    def on_progress(done: int, total: int | None) -> None:
        if console.is_terminal:
            if state["progress"] is None:
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )

                state["progress"] = Progress(
                    TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                    console=console, transient=True,
                )
                state["progress"].start()
                state["task"] = state["progress"].add_task(description, total=total, completed=done)
            state["progress"].update(state["task"], completed=done, total=total)
            return
        now = time.monotonic()
        if not state["t0"]:
            state["t0"] = state["last"] = now
        if now - state["last"] >= every_s:
            state["last"] = now
            _byte_line(console, description, done, total, now - state["t0"])

    try:
        yield on_progress
    finally:
        if state["progress"] is not None:
            state["progress"].stop()


def _byte_line(console, description: str, done: int, total: int | None, dt: float) -> None:
    from rich.filesize import decimal

    rate = done / dt if dt > 0 else 0.0
    of = f" of {decimal(total)}" if total else ""
    eta = f", ETA {(total - done) / rate:.0f}s" if total and rate > 0 and done < total else ""
    console.print(f"{description}: {decimal(done)}{of} ({decimal(int(rate))}/s{eta})", highlight=False, markup=False)


class Bars:
    """The progress display of one command: one bar at a time, closed when the next starts and on exit.

        with Bars(console, unit="img") as bars:
            run(on_split=lambda name, n: bars.start(name, n), on_progress=lambda done, total: bars.update(done))
            evaluate(on_progress=bars.lazy("evaluate"))   # opens its bar on the first call, when the total is known
    """

    def __init__(self, console, *, unit: str = "it"):
        self.console, self.unit = console, unit
        self.description: str | None = None
        self._ctx = self._update = None

    def start(self, description: str, total: int | None, *, unit: str | None = None) -> None:
        self.close()
        self._ctx = progress_bar(self.console, description, total, unit=unit or self.unit)
        self._update = self._ctx.__enter__()
        self.description = description

    def update(self, done: int) -> None:
        if self._update is not None:
            self._update(done)

    def lazy(self, description: str, *, unit: str | None = None):
        """on_progress(done, total) that opens this bar on its first call (or when another bar is open)."""

        def on_progress(done: int, total: int | None) -> None:
            if self.description != description or self._update is None:
                self.start(description, total, unit=unit)
            self.update(done)

        return on_progress

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
        self._ctx = self._update = self.description = None

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def training_callbacks(console, bars: Bars, description: str, *, describe=None, loss_format: str = ".4f") -> dict:
    """fit() callbacks every trainer's command uses: a step bar, and one line per evaluation."""

    def show(metrics: dict) -> str:
        return describe(metrics) if describe else ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())

    def on_eval(state) -> None:
        best = " (best)" if state.best_step == state.step else ""
        console.print(f"step {state.step}/{state.total_steps} epoch {state.epoch}: loss {state.loss:{loss_format}}, "
                      f"{show(state.metrics)}{best}", highlight=False)

    def on_start(state) -> None:
        bars.start(description, state.total_steps, unit="step")
        bars.update(state.step)

    return {"on_fit_start": [on_start], "on_step_end": [lambda s: bars.update(s.step)], "on_eval_end": [on_eval]}
