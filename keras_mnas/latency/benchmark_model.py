"""Parsing the output of TFLite's `benchmark_model` tool, every generation of it.

The tool has printed its summary in several formats over the years, and the format cannot be told from a
version number (users build it themselves), so the parser detects it:

| generation | summary line                                                                            |
|------------|-----------------------------------------------------------------------------------------|
| `"tf1"`    | `Average inference timings in us: Warmup: W, Init: I, no stats: A`                      |
| `"tf1.13"` | `Average inference timings in us: Warmup: W, Init: I, Inference: A`                     |
| `"tf2"`    | `Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): A` |
| `"litert"` | the same, every line prefixed `INFO: ` (TF 2.12+ and LiteRT)                            |

Statistics lines `count=N first=F curr=C min=m max=M avg=A std=S` (LiteRT adds `p5=.. median=.. p95=..`)
precede the summary: the first describes the warm-up runs, the last the measured runs. When every run took
the same time the line is short: `count=1 curr=C` for one run, `count=N curr=C(all same)` for several.
Numbers may be printed in exponent notation (`1.04176e+06`). All times are microseconds.

With `--enable_op_profiling=true` the tool also prints per-operator tables; they are read into
`BenchmarkOutput.op_profile` (`OpProfile`), and the profiler's own `Timings (microseconds): count=...` lines
are not taken for run statistics.

Anything short of a complete, consistent summary is an exception, never a number: `ERROR:` lines, a
non-zero exit status, a crash, a missing summary, a cut-off summary line, a statistics line that lacks a
field or breaks `min <= p5 <= median <= p95 <= max`, an average that disagrees with its statistics line.
Failures the *model* causes (an op version the runtime does not know, an op the delegate rejects) raise
`ModelError`, which callers should not retry; everything else raises `BenchmarkError`, a `DeviceError`.

Example:

```python
output = parse_benchmark_output(text, exit_code=0)
print(output.figure_ms, output.generation, output.runs.count)
```
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import signal

from keras_mnas.latency.errors import BenchmarkError, ModelError

#: The output generations `parse_benchmark_output` recognises.
GENERATIONS = ("tf1", "tf1.13", "tf2", "litert")

# A decimal number as C++ streams print it: 1234, 12.5, 1.04176e+06.
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"

# Log-level prefixes put in front of lines: "INFO: " (TF 2.12+/LiteRT) and logcat's "I tflite  : ".
_LEVEL_PREFIX = re.compile(r"^\s*(?:(INFO|WARNING|ERROR|VERBOSE|DEBUG):\s?|([IWEVDF])\s+tflite\s*:\s?)")
_LEVEL_LETTERS = {"I": "INFO", "W": "WARNING", "E": "ERROR", "V": "VERBOSE", "D": "DEBUG", "F": "ERROR"}

_SUMMARY_TF1 = re.compile(
    rf"Average inference timings in us: Warmup: (?P<warmup>{_NUMBER}), Init: (?P<init>{_NUMBER}), "
    rf"(?P<label>no stats|Inference): (?P<avg>{_NUMBER})\s*$"
)
_SUMMARY_TF2 = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUMBER}), Inference \(avg\): (?P<avg>{_NUMBER})\s*$"
)
_SUMMARY_START = re.compile(r"(?:Average )?[Ii]nference timings in us")
# "curr=X(all same)": every run took X (TensorFlow's `Stat` prints no other field then).
_ALL_SAME = "(all same)"
_STAT_FIELD = re.compile(
    rf"\b(count|first|curr|min|max|avg|std|p5|median|p95)=({_NUMBER})(?=\s|$|{re.escape(_ALL_SAME)})"
)
_STAT_LINE = re.compile(r"(?:^|\s)count=")
_FULL_STATS = ("first", "curr", "min", "max", "avg", "std")
_PERCENTILES = ("p5", "median", "p95")

# --enable_op_profiling: the profiler's own summary lines, which are not run statistics.
_PROFILE_SECTION = re.compile(
    r"^(?P<section>Profiling Info for Benchmark Initialization|"
    r"Operator-wise Profiling Info for Regular Benchmark Runs):"
)
_PROFILE_NOISE = re.compile(
    r"^(?:Subgraph \(index: \d+\) )?(?:Timings \(microseconds\)|Memory \(bytes\)):"
    r"|^\d+ nodes observed$|^Number of nodes executed: \d+$"
)
_PROFILE_GRAPH = re.compile(r"^(?:Primary graph|Subgraph \(index: (?P<index>\d+)\)) (?:profile|summary):$")
_PROFILE_TABLE = re.compile(r"^={5,} (?P<title>.+?) ={5,}$")
_MEMORY = re.compile(
    rf"(?P<kind>Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=(?P<init>{_NUMBER}) overall=(?P<overall>{_NUMBER})"
)
_PERIODIC_MEMORY = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUMBER})")
_SESSION = re.compile(rf"Initialized session in ({_NUMBER}) ?ms")
_FAILED_LINE = re.compile(r"^(?:Benchmarking failed|Failed to (?:initialize|run)|Aborted)", re.IGNORECASE)

# Messages that mean the runtime cannot run this *model*, whichever phone it is on.
_MODEL_ERROR_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"Didn't find op for builtin opcode",
        r"Didn't find custom op for name",
        r"Encountered unresolved custom op",
        r"Op builtin_code out of range",
        r"Registration failed",
        r"Failed to apply .*delegate",
        r"not supported by .*delegate",
        r"delegate .*(?:rejected|does not support|doesn't support)",
        r"failed to reshape runtime",
        r"Node number \d+ \(.*\) failed to (?:prepare|invoke)",
        r"Failed to allocate tensors",
        r"Model provided has model identifier",
        r"(?:is not|isn't) a valid (?:TFLite|flatbuffer)",
        r"Failed to verify (?:the )?model",
        r"Failed to construct interpreter",
    )
]


@dataclasses.dataclass(frozen=True)
class RunStats:
    """One statistics line of benchmark_model, in microseconds.

    Attributes:
        count: Number of runs the line describes.
        first_us, curr_us, min_us, max_us: First, last, fastest and slowest run (`None` when not printed,
            e.g. a single warm-up run prints only `count=1 curr=...`).
        avg_us, std_us: Mean and standard deviation (`None` when not printed).
        p5_us, median_us, p95_us: Percentiles (LiteRT prints them; older tools do not).
        all_same: Whether the line is `count=N curr=X(all same)`: every run took `curr`.
    """

    count: int
    first_us: float | None = None
    curr_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    all_same: bool = False

    @property
    def mean_us(self) -> float | None:
        """The runs' mean: `avg`, or `curr` for a line that prints no average (one run, or all alike)."""
        if self.avg_us is not None:
            return self.avg_us
        return self.curr_us if self.count == 1 or self.all_same else None


@dataclasses.dataclass(frozen=True)
class OpTiming:
    """One operator (node) of the model in `--enable_op_profiling` output.

    Attributes:
        node_type: Its type, e.g. `"CONV_2D"`, or `"TfLiteXNNPackDelegate"` for a delegated partition.
        avg_ms: Its average time per run, in milliseconds.
        times_called: How often it ran per run, when printed.
    """

    node_type: str
    avg_ms: float
    times_called: int | None = None


@dataclasses.dataclass(frozen=True)
class OpProfile:
    """The per-operator times benchmark_model prints with `--enable_op_profiling=true`.

    Only the measured runs of the primary graph count (not the initialisation, not other subgraphs).

    Attributes:
        by_type: Average milliseconds per run spent in each node type (`"Summary by node type"`).
        by_node: Each node by name (`"Run Order"` or `"Top by Computation Time"`), when printed.
        delegate_by_type, delegate_by_node: The same for the operators inside a delegate, for delegates
            that report them (`"Delegate internal:"`).

    Example:

    ```python
    profile = parse_benchmark_output(text).op_profile
    print(sorted(profile.by_type.items(), key=lambda item: -item[1])[:3])  # the three costliest types
    ```
    """

    by_type: dict[str, float]
    by_node: dict[str, OpTiming]
    delegate_by_type: dict[str, float] = dataclasses.field(default_factory=dict)
    delegate_by_node: dict[str, OpTiming] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """The profile as JSON data: `by_type` and `by_node` (name -> type, avg_ms, times_called)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BenchmarkOutput:
    """What a successful benchmark_model run printed.

    Attributes:
        generation: One of `GENERATIONS`, detected from the output.
        inference_avg_us: The summary's average inference time over the measured runs.
        init_us: Initialisation time from the summary.
        warmup_avg_us: Average warm-up run time from the summary.
        first_inference_us: The first inference's time (`None` before TF 2.2).
        runs: Statistics of the measured runs (the last statistics line), or `None` if none was printed.
        warmup: Statistics of the warm-up runs (the first of two or more statistics lines), or `None`.
        memory_init_mb, memory_overall_mb: The memory line's figures, when printed.
        memory_kind: `"delta"` (`Memory footprint delta from the start of the tool`), `"peak"` (older
            `Peak memory footprint`), or `None`.
        peak_memory_mb: `Overall peak memory footprint (MB) via periodic monitoring`, when printed.
        session_init_ms: `Initialized session in X ms`, when printed.
        op_profile: The per-operator times (`OpProfile`) when the tool ran with `--enable_op_profiling=true`,
            else `None`.
    """

    generation: str
    inference_avg_us: float
    init_us: float | None
    warmup_avg_us: float | None
    first_inference_us: float | None = None
    runs: RunStats | None = None
    warmup: RunStats | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    memory_kind: str | None = None
    peak_memory_mb: float | None = None
    session_init_ms: float | None = None
    op_profile: OpProfile | None = None

    @property
    def figure_us(self) -> float:
        """The median of the measured runs when printed (LiteRT), else their mean."""
        if self.runs is not None and self.runs.median_us is not None:
            return self.runs.median_us
        return self.inference_avg_us

    @property
    def figure_ms(self) -> float:
        """`figure_us` in milliseconds."""
        return self.figure_us / 1000.0

    @property
    def figure_kind(self) -> str:
        """`"median"` or `"mean"`: what `figure_us` is."""
        return "median" if self.runs is not None and self.runs.median_us is not None else "mean"


def _strip_level(line: str) -> tuple[str | None, str]:
    match = _LEVEL_PREFIX.match(line)
    if not match:
        return None, line.strip()
    level = match.group(1) or _LEVEL_LETTERS[match.group(2)]
    return level, line[match.end() :].strip()


def _number(text: str, what: str, output: str, exit_code) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise BenchmarkError(
            f"benchmark_model printed an impossible {what} of {text!r}; expected a finite, non-negative "
            "number of microseconds.",
            reason="inconsistent",
            output=output,
            exit_code=exit_code,
        )
    return value


def _parse_stats(line: str, output: str, exit_code) -> RunStats | None:
    fields = {key: value for key, value in _STAT_FIELD.findall(line)}
    if "count" not in fields:
        return None
    values = {key: _number(value, f"`{key}` statistic", output, exit_code) for key, value in fields.items()}
    count = int(values.pop("count"))
    all_same = _ALL_SAME in line

    def refuse(problem: str, reason: str) -> BenchmarkError:
        return BenchmarkError(
            f"benchmark_model printed a statistics line that {problem}: {line!r}. The output is corrupt or "
            "was cut off, so it gives no number.",
            reason=reason,
            output=output,
            exit_code=exit_code,
        )

    if count <= 0:
        # "count=0" describes no runs; it has nothing to check.
        return RunStats(count=count, **{f"{key}_us": value for key, value in values.items()})
    full = [key for key in _FULL_STATS if key in values]
    if "first" in values or len(full) > 1:
        missing = [key for key in _FULL_STATS if key not in values]
        if missing:
            raise refuse(f"lacks {', '.join(missing)}", "truncated")
    elif "curr" not in values or (count > 1 and not all_same):
        # The short form, "count=1 curr=X" or "count=N curr=X(all same)", and nothing else.
        raise refuse("is incomplete", "truncated")
    percentiles = [key for key in _PERCENTILES if key in values]
    if percentiles and len(percentiles) != len(_PERCENTILES):
        missing = [key for key in _PERCENTILES if key not in values]
        raise refuse(f"lacks {', '.join(missing)}", "truncated")
    low = values.get("min", values.get("curr"))
    high = values.get("max", values.get("curr"))
    chain = [values[key] for key in ("min", "p5", "median", "p95", "max") if key in values]
    if not all(a <= b for a, b in itertools.pairwise(chain)) or any(
        not low <= values[key] <= high for key in ("first", "curr", "p5", "median", "p95") if key in values
    ):
        raise refuse("breaks min <= p5 <= median <= p95 <= max", "inconsistent")
    # The mean is printed to 6 significant digits: allow for that rounding.
    if "avg" in values and not (low * (1 - 1e-5) <= values["avg"] <= high * (1 + 1e-5)):
        raise refuse("has its average outside min..max", "inconsistent")
    return RunStats(
        count=count, all_same=all_same, **{f"{key}_us": value for key, value in values.items()}
    )


def _signal_name(exit_code: int) -> str:
    number = exit_code - 128
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify_failure(text: str) -> bool:
    """Whether failure output names a problem of the model rather than of the device or tool.

    Args:
        text: benchmark_model's output (error lines and all).

    Returns:
        True for model errors (e.g. "Didn't find op for builtin opcode 'CONV_2D' version '6'", an op a
        delegate rejects, XNNPACK "failed to reshape runtime"), False otherwise.

    Example:

    ```python
    classify_failure("ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'")  # True
    classify_failure("ERROR: Failed to mmap model /data/local/tmp/m.tflite")  # False
    ```
    """
    return any(p.search(text) for p in _MODEL_ERROR_PATTERNS)


def _failure_excerpt(lines: list[str], limit: int = 6) -> str:
    # The excerpt ends inside a sentence of ours, which adds its own period.
    shown = [line.rstrip(".") for line in lines[:limit]]
    more = f" (+{len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(shown) + more


def parse_benchmark_output(text: str, *, exit_code: int | None = None) -> BenchmarkOutput:
    """Parses benchmark_model's output into a `BenchmarkOutput`, or raises.

    Args:
        text: Everything the tool printed (stdout and stderr), as received.
        exit_code: The process's exit status, when known. Non-zero is a failure even when a summary was
            printed; 128+N means it was killed by signal N (134: SIGABRT, 139: SIGSEGV).

    Returns:
        A `BenchmarkOutput`.

    Raises:
        ModelError: when the output shows the runtime cannot run the model (retrying will not help).
        BenchmarkError: for `ERROR:` lines, a non-zero exit, a crash, no summary line, a cut-off or
            inconsistent summary (the device or tool failed; the job may succeed elsewhere).

    Example:

    ```python
    out = parse_benchmark_output(
        "INFO: count=50 first=1250 curr=1240 min=1238 max=1252 avg=1240.27 std=2.5 "
        "p5=1238 median=1239.8 p95=1247\\n"
        "INFO: Inference timings in us: Init: 5579, First inference: 1357, Warmup (avg): 1357.6, "
        "Inference (avg): 1240.27\\n",
        exit_code=0,
    )
    out.figure_ms  # 1.2398 (the median)
    ```
    """
    if not isinstance(text, str):
        raise TypeError(f"Expected benchmark_model's output as a str; received {type(text).__name__}.")
    raw_lines = text.splitlines(keepends=True)
    errors: list[str] = []
    failed_lines: list[str] = []
    stats: list[RunStats] = []
    summaries: list[tuple[re.Match, str, bool, bool]] = []
    cut_summary: str | None = None
    memory = periodic = session = None
    profile = _ProfileReader()
    for raw in raw_lines:
        level, line = _strip_level(raw)
        if not line:
            profile.end_table()
            continue
        if level == "ERROR":
            errors.append(line)
            continue
        if _FAILED_LINE.match(line):
            failed_lines.append(line)
            continue
        if profile.read(line):
            continue
        if _STAT_LINE.search(line):
            parsed = _parse_stats(line, text, exit_code)
            if parsed is not None:
                stats.append(parsed)
            continue
        if _SUMMARY_START.search(line):
            match = _SUMMARY_TF2.search(line) or _SUMMARY_TF1.search(line)
            if match is None:
                cut_summary = line
            else:
                summaries.append((match, line, raw.endswith(("\n", "\r")), level is not None))
            continue
        if memory is None and (m := _MEMORY.search(line)):
            memory = m
        elif periodic is None and (m := _PERIODIC_MEMORY.search(line)):
            periodic = m
        elif session is None and (m := _SESSION.search(line)):
            session = m

    problems = errors + failed_lines
    if problems or (exit_code is not None and exit_code != 0):
        _raise_failure(text, exit_code, errors, failed_lines)

    if not summaries:
        if cut_summary is not None:
            raise BenchmarkError(
                f"benchmark_model's summary line is cut off ({cut_summary!r}): the output was truncated.",
                reason="truncated",
                output=text,
                exit_code=exit_code,
            )
        what = f"{len(stats)} statistics line(s) but " if stats else ""
        raise BenchmarkError(
            f"benchmark_model printed {what}no summary line ('Inference timings in us: ...'): the run failed "
            f"or its output was truncated ({len(text)} characters received).",
            reason="no-summary",
            output=text,
            exit_code=exit_code,
        )
    if len(summaries) > 1:
        raise BenchmarkError(
            f"benchmark_model's output holds {len(summaries)} summary lines; expected one per run (outputs "
            "of several processes mixed up?).",
            reason="inconsistent",
            output=text,
            exit_code=exit_code,
        )
    # TF 2.2-2.11 already printed a few "INFO: " lines; the summary line itself tells the generations apart.
    match, line, terminated, prefixed = summaries[0]
    groups = match.groupdict()
    avg = _number(groups["avg"], "average inference time", text, exit_code)
    if avg <= 0:
        raise BenchmarkError(
            f"benchmark_model reported an average inference time of {groups['avg']} us; a real run takes "
            "time, so the measurement is invalid.",
            reason="inconsistent",
            output=text,
            exit_code=exit_code,
        )
    runs = stats[-1] if stats else None
    warmup = stats[0] if len(stats) >= 2 else None
    if runs is not None:
        if runs.count <= 0 or runs.mean_us is None:
            raise BenchmarkError(
                f"benchmark_model's last statistics line describes no measured runs (count={runs.count}).",
                reason="inconsistent",
                output=text,
                exit_code=exit_code,
            )
        if not math.isclose(runs.mean_us, avg, rel_tol=1e-3, abs_tol=1e-9):
            raise BenchmarkError(
                f"benchmark_model's summary average ({groups['avg']} us) disagrees with its last statistics "
                f"line (mean {runs.mean_us:g} us): the output is corrupt or truncated.",
                reason="inconsistent",
                output=text,
                exit_code=exit_code,
            )
    elif not terminated:
        # Without a statistics line to check against, a summary cut inside its last number would pass.
        raise BenchmarkError(
            f"benchmark_model's summary line {line!r} is the unterminated end of the output and no "
            "statistics line confirms it: the output may have been cut inside the number.",
            reason="truncated",
            output=text,
            exit_code=exit_code,
        )

    if "first" in groups:
        generation = "litert" if prefixed else "tf2"
    else:
        generation = "tf1" if groups["label"] == "no stats" else "tf1.13"
    return BenchmarkOutput(
        generation=generation,
        inference_avg_us=avg,
        init_us=_number(groups["init"], "init time", text, exit_code),
        warmup_avg_us=_number(groups["warmup"], "warm-up time", text, exit_code),
        first_inference_us=(
            _number(groups["first"], "first inference time", text, exit_code) if "first" in groups else None
        ),
        runs=runs,
        warmup=warmup,
        memory_init_mb=float(memory.group("init")) if memory else None,
        memory_overall_mb=float(memory.group("overall")) if memory else None,
        memory_kind=(
            None if memory is None else ("delta" if memory.group("kind").startswith("Memory") else "peak")
        ),
        peak_memory_mb=float(periodic.group(1)) if periodic else None,
        session_init_ms=float(session.group(1)) if session else None,
        op_profile=profile.result(),
    )


class _ProfileReader:
    """Reads the tables `--enable_op_profiling` prints, line by line (TensorFlow's `StatsCalculator` format).

    Each table is a `===== TITLE =====` line, a header of tab-separated `[column]` names, then one
    tab-separated row per node until a blank line. The initialisation's tables and other subgraphs' are
    skipped; the profiler's `Timings (microseconds): count=...` lines are consumed so that they are never
    taken for run statistics.
    """

    def __init__(self):
        self.section: str | None = None  # None before any section header: old tools print only the runs'
        self.graph = "primary"
        self.title: str | None = None
        self.columns: list[str] | None = None
        self.by_type: dict[str, dict[str, float]] = {"primary": {}, "delegate": {}}
        self.by_node: dict[str, dict[str, OpTiming]] = {"primary": {}, "delegate": {}}
        self.seen = False

    def end_table(self) -> None:
        self.title = self.columns = None

    def read(self, line: str) -> bool:
        """Consumes `line` if it belongs to the profile; returns whether it did."""
        if match := _PROFILE_SECTION.match(line):
            self.seen = True
            self.section = "init" if "Initialization" in match.group("section") else "runs"
            self.graph = "primary"
            self.end_table()
            return True
        if _PROFILE_NOISE.match(line):
            self.seen = True
            return True
        if match := _PROFILE_GRAPH.match(line):
            self.graph = "primary" if match.group("index") in (None, "0") else "other"
            return True
        if line == "Delegate internal:":
            self.graph = "delegate"
            return True
        if match := _PROFILE_TABLE.match(line):
            self.seen = True
            self.title, self.columns = match.group("title"), None
            return True
        if self.title is None:
            return False
        fields = [field.strip() for field in line.split("\t")]
        if self.columns is None:
            self.columns = [field.strip("[]").lower() for field in fields]
            return True
        if len(fields) != len(self.columns):
            self.end_table()
            return False
        if self.section != "init" and self.graph in self.by_type:
            self._row(dict(zip(self.columns, fields, strict=True)))
        return True

    def _row(self, row: dict[str, str]) -> None:
        try:
            avg_ms = float(row["avg ms"])
            called = int(row["times called"]) if row.get("times called", "").isdigit() else None
        except (KeyError, ValueError):
            return  # a table of another kind (memory only): nothing to record
        if self.title == "Summary by node type":
            self.by_type[self.graph][row.get("node type", "")] = avg_ms
        elif "name" in row and "node type" in row:
            self.by_node[self.graph].setdefault(row["name"], OpTiming(row["node type"], avg_ms, called))

    def result(self) -> OpProfile | None:
        if not self.seen:
            return None
        return OpProfile(
            by_type=self.by_type["primary"],
            by_node=self.by_node["primary"],
            delegate_by_type=self.by_type["delegate"],
            delegate_by_node=self.by_node["delegate"],
        )


def _raise_failure(text: str, exit_code: int | None, errors: list[str], failed_lines: list[str]):
    excerpt = _failure_excerpt(errors + failed_lines) or "(no error message)"
    if classify_failure(text):
        raise ModelError(
            f"The phone's TFLite runtime cannot run this model: {excerpt}. This is a property of the model "
            "and the runtime (e.g. an op version newer than the benchmark binary, or an op the delegate "
            "rejects), not of the device; rebuild benchmark_model from a newer release or change the model.",
            output=text,
            exit_code=exit_code,
        )
    if exit_code is not None and exit_code >= 128:
        raise BenchmarkError(
            f"benchmark_model crashed (exit status {exit_code}, {_signal_name(exit_code)}): {excerpt}.",
            reason="crash",
            output=text,
            exit_code=exit_code,
        )
    if errors:
        raise BenchmarkError(
            f"benchmark_model reported errors (exit status {exit_code}): {excerpt}.",
            reason="error",
            output=text,
            exit_code=exit_code,
        )
    raise BenchmarkError(
        f"benchmark_model failed with exit status {exit_code}: {excerpt}.",
        reason="exit",
        output=text,
        exit_code=exit_code,
    )
