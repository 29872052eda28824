"""What the terminal shows while kfp.local runs a pipeline: one line per step, and every step error.

kfp.local prints every step's full executor input and streamed logs (thousands of lines). All of it
goes to the run's log file; `ProgressLog` reads it as it is written and keeps the terminal to one
line per step, the `keel: error:` lines, and the per-step timings the run record keeps.

On a terminal, a live progress bar (rich) sits under those lines: steps done of all, the step
running, and what it reports as it goes (a training epoch, a search trial, the partitions of a
ParallelFor). Anywhere else (CI, a log file, a pipe) or with KEEL_PROGRESS=plain the output is the
plain lines alone, so logs stay greppable and free of escape codes.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([\w-]+)'")
_FINISHED = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_CACHED = re.compile(r"Task '?([\w-]+?)'? cache hit")
_SKIPPED = re.compile(r"Skipping conditional task '?([\w-]+?)'? \(")
# What long steps print as they go: a deep-learning epoch, a hyperparameter-search trial.
_EPOCH = re.compile(r"keel: epoch epoch=(\d+)(?:.*?\bval_loss=(\S+))?(?:.*?\bval_accuracy=(\S+))?")
_TRIAL = re.compile(r"tune: trial (\d+)/(\d+) (\w+)")


def live_wanted(terminal) -> bool:
    """A live display only on an interactive terminal, and not when KEEL_PROGRESS=plain or TERM=dumb."""
    if os.environ.get("KEEL_PROGRESS", "").lower() == "plain" or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(terminal, "isatty", lambda: False)())


class LiveBar:
    """rich's progress bar on the terminal: the step lines print above it, the bar says what runs now."""

    def __init__(self, terminal, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        # kfp.local's output already goes to ProgressLog through a redirected sys.stdout: rich must
        # not take sys.stdout over as well, or the step logs would bypass the run's log file.
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(file=terminal, force_terminal=True, highlight=False),
                                 transient=True, redirect_stdout=False, redirect_stderr=False)
        self.task = self.progress.add_task("starting", total=total)
        self.shown: tuple[int, str] | None = None
        self.progress.start()

    def say(self, message: str) -> None:
        self.progress.console.print(message, markup=False)

    def update(self, done: int, description: str) -> None:
        # Drawn at once when it changes (a step's thousands of log lines change nothing, and cost nothing).
        if self.shown != (done, description):
            self.shown = (done, description)
            self.progress.update(self.task, completed=done, description=description, refresh=True)

    def stop(self) -> None:
        self.progress.stop()


class ProgressLog(io.TextIOBase):
    """Stands in for stdout while kfp.local runs.

    kfp.local prints every step's full executor input and streamed logs
    (thousands of lines). All of it goes to the run's log file; the terminal
    gets one line per step and any `keel: error:` line a step printed.
    """

    def __init__(self, log_path: Path, terminal, total_steps: int, gated: tuple[str, ...] = (), *,
                 looped: tuple[str, ...] = (), iterations: int | None = None, live: bool | None = None):
        self.gated = gated
        # The last task of a ParallelFor body finishing counts one iteration (a backfill partition) done.
        self.loop_end, self.iterations, self.loops_done = (looped[-1] if looped else None), iterations, 0
        self.detail: dict[str, str] = {}  # running step -> its latest epoch or trial
        self.log = open(log_path, "w", encoding="utf-8")
        self.terminal = terminal
        self.total = total_steps
        self.done = 0
        self.partial = ""
        self.started: dict[str, float] = {}
        self.step_errors: list[str] = []
        # Wall-clock times and status per step, for the run record (keel.pipelines.records.runs).
        self.opened_at = time.time()
        self.closed_at: float | None = None
        self.steps: dict[str, dict] = {}
        self.bar = LiveBar(terminal, total_steps) if (live_wanted(terminal) if live is None else live) else None

    def write(self, text: str) -> int:
        self.log.write(text)
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _say(self, message: str) -> None:
        if self.bar is not None:
            self.bar.say(message)
            return
        self.terminal.write(message + "\n")
        self.terminal.flush()

    def _running(self) -> list[str]:
        return [name for name, step in self.steps.items() if step.get("status") == "running"]

    def _show(self) -> None:
        if self.bar is None:
            return
        running = self._running()
        parts = [f"{name} ({self.detail[name]})" if name in self.detail else name for name in dict.fromkeys(running)]
        loops = f"  [{self.loops_done}/{self.iterations} iterations]" if self.loop_end and self.iterations else ""
        self.bar.update(self.done, (", ".join(parts) or "between steps") + loops)

    def _line(self, line: str) -> None:
        self._parse(line)
        self._show()

    def _parse(self, line: str) -> None:
        running = self._running()
        if running and (match := _EPOCH.search(line)):
            extra = "".join(f" {k} {v}" for k, v in (("val_loss", match[2]), ("val_accuracy", match[3])) if v)
            self.detail[running[-1]] = f"epoch {match[1]}{extra}"
        elif running and (match := _TRIAL.search(line)):
            self.detail[running[-1]] = f"trial {match[1]}/{match[2]} {match[3].lower()}"
        elif match := _STARTED.search(line):
            self.started[match[1]] = time.perf_counter()
            self.steps[match[1]] = {"started_at": time.time(), "status": "running"}
        elif match := _FINISHED.search(line):
            self.steps.setdefault(match[1], {}).update(
                finished_at=time.time(), status="succeeded" if match[2].upper() == "SUCCESS" else "failed")
            self.detail.pop(match[1], None)
            self.loops_done += match[1] == self.loop_end
            self.done += 1
            seconds = time.perf_counter() - self.started.get(match[1], time.perf_counter())
            self._say(f"  [{self.done:>2}/{self.total}] {match[1]:<20} {match[2].lower():<8} {seconds:5.1f} s")
        elif match := _CACHED.search(line):
            self.steps[match[1]] = {"started_at": time.time(), "status": "cached"}
            self.done += 1
            self._say(f"  [{self.done:>2}/{self.total}] {match[1]:<20} cached     (unchanged code and inputs)")
        elif match := _SKIPPED.search(line):
            # kfp names the dsl.If group; the training pipeline's one condition guards registration and deploy.
            names = self.gated if match[1].startswith("condition") else (match[1],)
            for name in names:
                self.steps[name] = {"status": "skipped"}
                self.done += 1
                self._say(f"  [{self.done:>2}/{self.total}] {name:<20} skipped    (a gate did not pass)")
        elif "keel: error:" in line:
            message = line[line.index("keel: error:"):].strip()
            self.step_errors.append(message)
            self._say("  " + message)

    def flush(self) -> None:
        self.log.flush()

    def close(self) -> None:
        self.closed_at = self.closed_at or time.time()
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        self.log.close()

    def timings(self) -> dict:
        """When the run started and ended and each step's start, end and status (epoch seconds), for run.json."""
        return {"started_at": self.opened_at, "finished_at": self.closed_at or time.time(), "steps": self.steps}


