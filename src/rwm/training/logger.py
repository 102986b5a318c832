"""What a training run reports, and where: TensorBoard, metrics.jsonl, the console, a progress bar.

Scalar names follow rsl_rl / Isaac Lab (docs/architecture.md#logging), so existing TensorBoard habits carry over:
``Episode_Reward/<term>``, ``Episode_Termination/<term>``, ``Loss/...``, ``Policy/mean_noise_std``,
``Perf/...``, ``Train/mean_reward``. ``metrics.jsonl`` holds one JSON object per iteration with
the same names, for scripts that should not need TensorBoard to read a run.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["RunLogger", "format_duration"]

# /time variants of these are plotted against wall-clock seconds, as rsl_rl does.
_TIME_VARIANTS = ("Train/mean_reward", "Train/mean_episode_length")


def format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(max(seconds, 0.0)))))


def _fmt(value: float, digits: int = 4) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


class RunLogger:
    """Writes each iteration's scalars to every configured sink; `log_dir=None` keeps only the console."""

    def __init__(self, log_dir: Path | None, *, logger: str = "tensorboard", console: str = "summary",
                 progress_bar: bool = True, start_iteration: int = 0, total_iterations: int = 0,
                 title: str = "rwm train"):
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.console = console
        self.title = title
        self.total_iterations = total_iterations
        self.writer = None
        self._jsonl = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8")
            if logger == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=10)
        self.bar = None
        if progress_bar and total_iterations > start_iteration:
            self.bar = tqdm(total=total_iterations, initial=start_iteration, desc=title, unit="it",
                            dynamic_ncols=True, file=sys.stderr, leave=False)

    # ------------------------------------------------------------------ writing
    def log_iteration(self, iteration: int, scalars: dict[str, float], *, elapsed_s: float, env_steps: int,
                      eta_s: float | None = None) -> None:
        """Record the scalars of completed iteration `iteration` (1-based) everywhere."""
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, iteration)
            for key in _TIME_VARIANTS:
                if key in scalars:
                    self.writer.add_scalar(f"{key}/time", scalars[key], int(elapsed_s))
        if self._jsonl is not None:
            record = {"iteration": iteration, "env_steps": env_steps, "elapsed_s": round(elapsed_s, 3),
                      "time": datetime.datetime.now().isoformat(timespec="seconds")}
            record.update({k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
            try:
                self._jsonl.write(json.dumps(record) + "\n")
                self._jsonl.flush()
            except OSError as error:  # a full disk: name the file (a write error does not)
                raise OSError(error.errno, error.strerror, self._jsonl.name) from error
        if self.console != "none":
            text = (self._summary(iteration, scalars, elapsed_s, env_steps, eta_s) if self.console == "summary"
                    else self._line(iteration, scalars, elapsed_s, eta_s))
            tqdm.write(text, file=sys.stdout)
        if self.bar is not None:
            self.bar.update(1)
            if "Train/mean_step_reward" in scalars:
                self.bar.set_postfix_str(f"reward/step {scalars['Train/mean_step_reward']:+.4f}")

    def message(self, text: str) -> None:
        """A line for the user that does not break the progress bar."""
        if self.console != "none":
            tqdm.write(text, file=sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
        if self._jsonl is not None:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
            self._jsonl.close()
            self._jsonl = None

    # ------------------------------------------------------------------ console
    def _line(self, iteration: int, s: dict[str, float], elapsed_s: float, eta_s: float | None) -> str:
        parts = [f"[{self.title}] it {iteration}/{self.total_iterations}",
                 f"{s.get('Perf/total_fps', 0):,.0f} steps/s",
                 f"reward/step {s.get('Train/mean_step_reward', float('nan')):+.4f}"]
        if "Train/mean_reward" in s:
            parts.append(f"return {s['Train/mean_reward']:.3f}")
        if "Train/mean_episode_length" in s:
            parts.append(f"ep len {s['Train/mean_episode_length']:.0f}")
        parts.append(f"std {s.get('Policy/mean_noise_std', float('nan')):.3f}")
        parts.append(f"elapsed {format_duration(elapsed_s)}")
        if eta_s is not None:
            parts.append(f"ETA {format_duration(eta_s)}")
        return " | ".join(parts)

    def _summary(self, iteration: int, s: dict[str, float], elapsed_s: float, env_steps: int,
                 eta_s: float | None) -> str:
        width = 78
        head = f" {self.title}: iteration {iteration}/{self.total_iterations} "
        lines = [head.center(width, "-")]
        lines.append(f"  {'speed':<12} {s.get('Perf/total_fps', 0):,.0f} steps/s   (collection "
                     f"{s.get('Perf/collection time', 0):.2f} s, learning {s.get('Perf/learning_time', 0):.2f} s)")
        train = [f"reward/step {_fmt(s.get('Train/mean_step_reward', float('nan')))}"]
        if "Train/mean_reward" in s:
            train.append(f"episode return {_fmt(s['Train/mean_reward'])}")
        if "Train/mean_episode_length" in s:
            train.append(f"episode length {s['Train/mean_episode_length']:.1f} steps")
        lines.append(f"  {'train':<12} " + " | ".join(train))
        lines.append(f"  {'losses':<12} value {_fmt(s.get('Loss/value_function', float('nan')))} | surrogate "
                     f"{_fmt(s.get('Loss/surrogate', float('nan')))} | entropy {_fmt(s.get('Loss/entropy', float('nan')))}")
        lines.append(f"  {'policy':<12} lr {_fmt(s.get('Loss/learning_rate', float('nan')))} | kl "
                     f"{_fmt(s.get('Loss/kl', float('nan')))} | action std {_fmt(s.get('Policy/mean_noise_std', float('nan')))}")
        terms = [(k.split("/", 1)[1], v) for k, v in s.items() if k.startswith("Episode_Reward/")]
        if terms:
            lines.extend(self._wrapped("rewards/s", [f"{name} {_fmt(v, 3)}" for name, v in terms], width))
        ends = [(k.split("/", 1)[1], v) for k, v in s.items() if k.startswith("Episode_Termination/")]
        if ends:
            lines.append(f"  {'episode ends':<12} " + " | ".join(f"{name} {v:.2f}" for name, v in ends))
        extra = [(k, v) for k, v in s.items() if not k.startswith(("Episode_Reward/", "Episode_Termination/",
                                                                     "Loss/", "Perf/", "Train/", "Policy/"))]
        if extra:
            lines.extend(self._wrapped("other", [f"{k} {_fmt(v, 3)}" for k, v in extra[:8]], width))
        timing = f"env steps {env_steps:,} | elapsed {format_duration(elapsed_s)}"
        if eta_s is not None:
            timing += f" | ETA {format_duration(eta_s)}"
        lines.append(f"  {'progress':<12} {timing}")
        return "\n".join(lines)

    @staticmethod
    def _wrapped(label: str, items: list[str], width: int) -> list[str]:
        lines, current = [], ""
        for item in items:
            if current and len(current) + 3 + len(item) > width - 15:
                lines.append(current)
                current = item
            else:
                current = f"{current} | {item}" if current else item
        if current:
            lines.append(current)
        return [f"  {(label if i == 0 else ''):<12} {text}" for i, text in enumerate(lines)]

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
