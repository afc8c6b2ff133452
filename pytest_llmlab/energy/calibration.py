"""Calibrated estimates: energy per token measured on one box, used on another.

``llmlab calibrate`` runs generations of one model with the best meter available and
fits, by least squares over the runs, the energy of a run as

    joules = request_j + prefill_j_per_token x prompt tokens + decode_j_per_token x output tokens

(prompt tokens the server processed: cached ones excluded), once per component (cpu,
dram, gpu...) and for the total, with standard errors and confidence intervals. The
runs vary prompt length and output length independently (`calibration_plan`), so the
two coefficients separate. The result is a `Calibration`: the coefficients, the model,
the meter and the hardware fingerprint of the box it was measured on, and the date,
stored as a small TOML file (`dumps` / `load_calibration`) meant to be committed.

``--llm-energy-coefficients=NAME|FILE`` then replaces the CPU estimate by a
`CalibratedMeter`: a generation's prefill is ``request_j + prefill_j_per_token x
prompt tokens``, its decode ``decode_j_per_token x output tokens``, per component
(domains ``cpu-calibrated``, ``gpu-calibrated``...). Readings stay ``estimated``; their
note names the calibration and the box it was measured on. It estimates what the
generation would have cost on that box, not on this one: a calibration from other
hardware is used with a warning (the caller compares fingerprints; `fingerprint`
imports this package, so it cannot be imported here).

What cannot be fitted, found or read raises `ValueError` with a message naming the
file or the runs at fault: the plugin turns it into a usage error naming the option,
``llmlab calibrate`` into a one-line error.

A NAME is a file ``NAME.toml`` in a calibrations folder (default
:data:`DEFAULT_DIR`, relative to where pytest or ``llmlab`` runs); anything with a
path separator or ending in ``.toml`` is a file path.
"""

from __future__ import annotations

import datetime
import math
import re
import statistics
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pytest_llmlab.energy.base import CounterSample, Provenance
from pytest_llmlab.energy.reading import EnergyReading, weakest

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_PROMPT",
    "FORMAT_VERSION",
    "MIN_RUNS",
    "CalibratedMeter",
    "Calibration",
    "Coefficient",
    "ComponentFit",
    "Observation",
    "calibration_doubts",
    "calibration_path",
    "calibration_plan",
    "describe_hardware",
    "dumps",
    "fit_components",
    "list_calibrations",
    "load_calibration",
    "observation",
    "resolve_calibration",
    "run_calibration",
    "save_calibration",
    "t_quantile",
    "validate_name",
]

#: Where named calibrations live, relative to the working (pytest invocation) folder.
DEFAULT_DIR = ".llmlab/calibrations"
#: The version of the file layout; a file of another version is refused.
FORMAT_VERSION = 1
#: Three coefficients per component, and at least three degrees of freedom for the spread.
MIN_RUNS = 6
#: The calibration prompt when none is given: it invites a long answer.
DEFAULT_PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
)
#: Prompt copies and shares of --max-tokens the runs cycle through: 4 x 3 cells.
_REPEATS = (1, 2, 4, 8)
_SHARES = (0.25, 0.5, 1.0)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# -- the stored calibration ----------------------------------------------------------


class Coefficient(BaseModel):
    """One fitted coefficient: its value, standard error and confidence interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float
    stderr: float
    ci: tuple[float, float]


class ComponentFit(BaseModel):
    """The fit of one component's (or the total's) energy per run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_j: Coefficient
    prefill_j_per_token: Coefficient
    decode_j_per_token: Coefficient
    #: Standard deviation of the residuals over the mean energy per run.
    residual_cv: float

    def estimate(self, prefill_tokens: int, decode_tokens: int) -> tuple[float, float]:
        """``(prefill, decode)`` joules of a generation, each at least 0."""
        prefill = self.request_j.value + self.prefill_j_per_token.value * prefill_tokens
        decode = self.decode_j_per_token.value * decode_tokens
        return max(prefill, 0.0), max(decode, 0.0)


class Calibration(BaseModel):
    """A named calibration: per-component coefficients and where they were measured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT_VERSION
    name: str
    model: str
    #: When it was measured: ISO 8601, UTC.
    created: str
    fingerprint: str
    #: What the fingerprint is made of (`fingerprint.hardware`).
    hardware: dict[str, str | int | list[str]] = Field(default_factory=dict)
    meter: str
    meter_description: str = ""
    #: The weakest provenance of the readings it was fitted on.
    provenance: Provenance
    runs: int
    confidence: float = 0.95
    prompt_tokens: tuple[int, int]
    completion_tokens: tuple[int, int]
    low_confidence_runs: int = 0
    total: ComponentFit
    #: By component kind (``cpu``, ``dram``, ``gpu``, a plugin meter's).
    components: dict[str, ComponentFit]

    @property
    def date(self) -> str:
        return self.created[:10]

    @property
    def box(self) -> str:
        """The box it was measured on, in words, with its fingerprint."""
        return f"{describe_hardware(self.hardware)} (fingerprint {self.fingerprint})"

    def summary(self) -> str:
        """One line: the model, the coefficients, and where and how it was measured."""
        total = self.total
        return (
            f"{self.model}: {total.prefill_j_per_token.value:.4g} J per prefill token, "
            f"{total.decode_j_per_token.value:.4g} J per decode token, "
            f"{total.request_j.value:.4g} J per request; measured with {self.meter} "
            f"({self.provenance}) on {self.box}, {self.date}, {self.runs} runs"
        )


def describe_hardware(hardware: Mapping[str, object]) -> str:
    """``'AMD EPYC 7763 x 16 CPUs, NVIDIA H100 80GB HBM3'`` from `fingerprint.hardware`."""
    cpu = str(hardware.get("cpu") or "unknown CPU")
    cpus = hardware.get("cpus")
    parts = [f"{cpu} x {cpus} CPUs" if cpus else cpu]
    gpus = hardware.get("gpus")
    if isinstance(gpus, list) and gpus:
        parts.append(", ".join(str(g) for g in gpus))
    return ", ".join(parts)


# -- the fit ------------------------------------------------------------------------


class Observation(NamedTuple):
    """One calibration run: tokens processed and the joules of each component."""

    prompt_tokens: int
    completion_tokens: int
    joules: dict[str, float]
    provenance: Provenance = "measured"
    low_confidence: bool = False


def observation(reading: EnergyReading, prompt_tokens: int, completion_tokens: int) -> Observation:
    """The `Observation` of one metered generation (gross joules per component)."""
    if reading.joules is None:
        raise ValueError(f"the meters gave no energy reading: {reading.note}")
    joules: dict[str, float] = {}
    for kind, part in (("cpu", reading.cpu), ("dram", reading.dram), ("gpu", reading.gpu)):
        if part is not None:
            joules[kind] = part.joules
    for kind, part in reading.other.items():
        joules[kind] = part.joules
    return Observation(
        prompt_tokens, completion_tokens, joules, reading.provenance, reading.low_confidence
    )


def _t_cdf(t: float, df: int) -> float:
    """Student's t distribution function for an integer ``df`` (Abramowitz & Stegun
    26.7.3-4: a finite series in cos(theta), theta = atan(t / sqrt(df)))."""
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        term, series = math.cos(theta), 0.0
        for k in range(1, (df - 1) // 2 + 1):
            series += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        inside = 2 / math.pi * (theta + (sin * series if df > 1 else 0.0))
    else:
        term, series = 1.0, 0.0
        for k in range(1, df // 2 + 1):
            series += term
            term *= cos2 * (2 * k - 1) / (2 * k)
        inside = sin * series
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom."""
    if not 0.0 < probability < 1.0 or df < 1:
        raise ValueError(
            f"t_quantile needs 0 < probability < 1 and df >= 1, got {probability}, {df}"
        )
    if df > 2000:
        return statistics.NormalDist().inv_cdf(probability)
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < probability:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2
        if _t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def fit_components(
    observations: Sequence[Observation], confidence: float = 0.95
) -> tuple[ComponentFit, dict[str, ComponentFit]]:
    """Least squares ``joules = request_j + a x prompt tokens + b x output tokens`` for
    the total and for each component kind, with standard errors and ``confidence``
    intervals (Student's t, n - 3 degrees of freedom).

    One design for all: the per-component fits add up to the total's. Raises
    `ValueError` for too few runs or lengths that do not vary independently.
    """
    n = len(observations)
    if n < MIN_RUNS:
        raise ValueError(f"a calibration needs at least {MIN_RUNS} runs, got {n}")
    prompts = [float(o.prompt_tokens) for o in observations]
    outputs = [float(o.completion_tokens) for o in observations]
    mean_p, mean_d = statistics.fmean(prompts), statistics.fmean(outputs)
    cp = [p - mean_p for p in prompts]
    cd = [d - mean_d for d in outputs]
    spp = sum(x * x for x in cp)
    sdd = sum(x * x for x in cd)
    spd = sum(x * y for x, y in zip(cp, cd, strict=True))
    det = spp * sdd - spd * spd
    if spp <= 0 or sdd <= 0 or det <= 1e-9 * spp * sdd:
        raise ValueError(
            "prompt and output lengths did not vary independently over the runs "
            f"(prompt tokens {sorted(set(map(int, prompts)))}, output tokens "
            f"{sorted(set(map(int, outputs)))}): prefill and decode cannot be separated; "
            "use more runs, a larger --max-tokens or a prompt that invites a long answer"
        )
    # The inverse of the centred normal matrix [[spp, spd], [spd, sdd]].
    ipp, idd, ipd = sdd / det, spp / det, -spd / det
    quantile = t_quantile((1 + confidence) / 2, n - 3)
    kinds = sorted({kind for o in observations for kind in o.joules})

    def fit(values: list[float]) -> ComponentFit:
        mean_y = statistics.fmean(values)
        spy = sum(x * y for x, y in zip(cp, values, strict=True))
        sdy = sum(x * y for x, y in zip(cd, values, strict=True))
        a = ipp * spy + ipd * sdy
        b = ipd * spy + idd * sdy
        c = mean_y - a * mean_p - b * mean_d
        residuals = [
            y - (c + a * p + b * d) for y, p, d in zip(values, prompts, outputs, strict=True)
        ]
        s2 = sum(r * r for r in residuals) / (n - 3)
        var_c = s2 * (
            1 / n + mean_p * mean_p * ipp + 2 * mean_p * mean_d * ipd + mean_d * mean_d * idd
        )

        def coefficient(value: float, variance: float) -> Coefficient:
            stderr = math.sqrt(max(variance, 0.0))
            return Coefficient(
                value=value,
                stderr=stderr,
                ci=(value - quantile * stderr, value + quantile * stderr),
            )

        return ComponentFit(
            request_j=coefficient(c, var_c),
            prefill_j_per_token=coefficient(a, s2 * ipp),
            decode_j_per_token=coefficient(b, s2 * idd),
            residual_cv=math.sqrt(s2) / mean_y if mean_y > 0 else 0.0,
        )

    total = fit([sum(o.joules.values()) for o in observations])
    components = {kind: fit([o.joules.get(kind, 0.0) for o in observations]) for kind in kinds}
    return total, components


# -- running one --------------------------------------------------------------------

#: One metered generation: (prompt, max_tokens) -> (reading, processed prompt tokens,
#: output tokens).
Generate = Callable[[str, int], tuple[EnergyReading, int, int]]


def calibration_plan(runs: int, prompts: Sequence[str], max_tokens: int) -> list[tuple[str, int]]:
    """``(prompt, max_tokens)`` of each run: the prompt 1, 2, 4 or 8 times over and a
    quarter, half or all of ``max_tokens``, cycling through every pair (then through
    ``prompts``), so prompt length and output length vary independently. Each prompt
    starts with the run's number, so no run reuses the previous one's prompt cache."""
    if runs < MIN_RUNS:
        raise ValueError(f"--runs must be at least {MIN_RUNS}, got {runs}")
    if max_tokens < 4:
        raise ValueError(f"--max-tokens must be at least 4, got {max_tokens}")
    if not prompts:
        prompts = [DEFAULT_PROMPT]
    plan: list[tuple[str, int]] = []
    cells = len(_REPEATS) * len(_SHARES)
    for i in range(runs):
        repeat = _REPEATS[i % len(_REPEATS)]
        share = _SHARES[(i // len(_REPEATS)) % len(_SHARES)]
        prompt = prompts[(i // cells) % len(prompts)]
        text = f"Request {i + 1}. " + "\n\n".join([prompt] * repeat)
        plan.append((text, max(1, round(max_tokens * share))))
    return plan


def run_calibration(
    generate: Generate,
    *,
    name: str,
    model: str,
    plan: Sequence[tuple[str, int]],
    meter: str,
    meter_description: str,
    fingerprint: str,
    hardware: Mapping[str, object],
    warmup: int = 1,
    announce: Callable[[str], None] | None = None,
    now: Callable[[], datetime.datetime] | None = None,
) -> Calibration:
    """Run ``warmup`` generations left out of the fit (the model loads, caches warm),
    then the ``plan``, and fit (`fit_components`)."""
    validate_name(name)
    for prompt, max_tokens in plan[:warmup]:
        generate(f"Warm-up. {prompt}", max_tokens)  # its own text: no cache for run 1
    observations: list[Observation] = []
    for index, (prompt, max_tokens) in enumerate(plan, 1):
        reading, prompt_tokens, completion_tokens = generate(prompt, max_tokens)
        observations.append(observation(reading, prompt_tokens, completion_tokens))
        if announce is not None:
            announce(
                f"run {index}/{len(plan)}: {prompt_tokens} prompt + {completion_tokens} output "
                f"tokens, {reading.joules or 0.0:.4g} J ({reading.provenance})"
            )
    total, components = fit_components(observations)
    created = (now or (lambda: datetime.datetime.now(datetime.UTC)))()
    return Calibration(
        name=name,
        model=model,
        created=created.astimezone(datetime.UTC).isoformat(timespec="seconds"),
        fingerprint=fingerprint,
        hardware={k: _hardware_value(v) for k, v in hardware.items()},
        meter=meter,
        meter_description=meter_description,
        provenance=weakest(o.provenance for o in observations),
        runs=len(observations),
        prompt_tokens=(
            min(o.prompt_tokens for o in observations),
            max(o.prompt_tokens for o in observations),
        ),
        completion_tokens=(
            min(o.completion_tokens for o in observations),
            max(o.completion_tokens for o in observations),
        ),
        low_confidence_runs=sum(o.low_confidence for o in observations),
        total=total,
        components=components,
    )


def calibration_doubts(calibration: Calibration) -> list[str]:
    """What makes a calibration's total weak: a per-token coefficient not clearly above
    zero (its interval reaches 0 or below), and runs that were low-confidence."""
    doubts: list[str] = []
    total = calibration.total
    for what, coefficient in (
        ("prefill_j_per_token", total.prefill_j_per_token),
        ("decode_j_per_token", total.decode_j_per_token),
    ):
        if coefficient.ci[0] <= 0:
            doubts.append(
                f"{what} {coefficient.value:.4g} is not clearly above 0 (its "
                f"{calibration.confidence:.0%} interval reaches {coefficient.ci[0]:.4g}): "
                "use more --runs, a larger --max-tokens or a quieter machine"
            )
    if calibration.low_confidence_runs:
        doubts.append(
            f"{calibration.low_confidence_runs} of {calibration.runs} runs were "
            "low-confidence readings (short windows or implausible figures)"
        )
    return doubts


def _hardware_value(value: object) -> str | int | list[str]:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | str):
        return value
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


# -- files --------------------------------------------------------------------------


def validate_name(name: str) -> str:
    """A calibration name: letters, digits, ``.``, ``_`` and ``-``, a file name anywhere."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a calibration name: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 100 characters)"
        )
    return name


def calibration_path(name: str, directory: Path) -> Path:
    """The file of the calibration ``name`` in ``directory``."""
    return directory / f"{validate_name(name)}.toml"


def resolve_calibration(value: str, base: Path) -> Path:
    """The file ``--llm-energy-coefficients`` names: a path (it has a separator or ends
    in ``.toml``; relative to ``base``) or a NAME in ``base / DEFAULT_DIR``."""
    text = value.strip()
    if "/" in text or "\\" in text or text.endswith(".toml"):
        path = Path(text).expanduser()
        return path if path.is_absolute() else base / path
    try:
        return calibration_path(text, base / DEFAULT_DIR)
    except ValueError as exc:
        raise ValueError(f"{exc}; or give a .toml file path") from None


def load_calibration(path: Path) -> Calibration:
    """Read and validate one calibration file; `ValueError` naming it if not."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no calibration file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read calibration file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"calibration file {path} is not valid TOML: {exc}") from None
    version = data.get("format")
    if version is None:
        raise ValueError(
            f"calibration file {path} is not a calibration: it has no format key "
            "(llmlab calibrate writes format = 1)"
        )
    if version != FORMAT_VERSION:
        raise ValueError(
            f"calibration file {path} has format {version!r}; this version reads "
            f"format {FORMAT_VERSION} (run llmlab calibrate again)"
        )
    try:
        return Calibration.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'file'}: {error['msg']}"
            for error in exc.errors()[:3]
        )
        raise ValueError(f"calibration file {path} is not a calibration: {problems}") from None


def save_calibration(calibration: Calibration, path: Path) -> Path:
    """Write ``calibration`` to ``path`` (folders created; written whole, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(dumps(calibration), encoding="utf-8")
    partial.replace(path)
    return path


def list_calibrations(directory: Path) -> Iterator[tuple[Path, Calibration | ValueError]]:
    """Every ``*.toml`` in ``directory`` by name, read, or the error reading it."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.toml")):
        try:
            yield path, load_calibration(path)
        except ValueError as exc:
            yield path, exc


# -- a small TOML writer (the standard library reads TOML but does not write it) ------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _table(data: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    """Scalars first, then sub-tables. A mapping of scalars below the top level (a
    coefficient) is an inline table; any other mapping is a ``[table]``."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            leaf = not any(isinstance(v, Mapping) for v in value.values())
            if not path or not leaf:
                tables.append((key, value))
                continue
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables:
        lines.append("")
        lines.append("[" + ".".join(_key(k) for k in (*path, key)) + "]")
        lines.extend(_table(value, (*path, key)))
    return lines


def dumps(calibration: Calibration) -> str:
    """The TOML text of a calibration, with a comment header saying what it is."""
    header = [
        f"# pytest-llmlab energy calibration {calibration.name!r}, written by llmlab calibrate.",
        f"# {calibration.summary()}.",
        "# Use it with: pytest --llm-energy-coefficients=" + calibration.name,
        "# Coefficients: joules = request_j + prefill_j_per_token x prompt tokens",
        f"#   + decode_j_per_token x output tokens; ci: {calibration.confidence:.0%} interval.",
        "",
    ]
    return "\n".join(header + _table(calibration.model_dump(mode="json"), ())) + "\n"


# -- the meter ----------------------------------------------------------------------


class CalibratedMeter:
    """The estimate from a `Calibration`: joules from a generation's tokens.

    Its counters do not move with time (``sample()`` reads 0 J on every domain):
    `MeterSet` asks `token_joules` for a window's prefill and decode from the tokens of
    its segments. Windows of this meter are each their own: nothing is shared between
    overlapping generations in attribution.
    """

    name = "calibrated"

    def __init__(
        self,
        calibration: Calibration,
        *,
        source: Path | str,
        this_fingerprint: str | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.calibration = calibration
        self.source = str(source)
        self.foreign = this_fingerprint is not None and this_fingerprint != calibration.fingerprint
        self._this_fingerprint = this_fingerprint
        self._clock = clock
        self._fits = dict(calibration.components) or {"cpu": calibration.total}
        self.domains = [f"{kind}-calibrated" for kind in self._fits]

    @property
    def description(self) -> str:
        cal = self.calibration
        text = f"calibrated estimate {cal.name!r} ({self.source}) of {cal.summary()}"
        if self.foreign:
            text += (
                f"; this machine is different hardware (fingerprint {self._this_fingerprint}): "
                "the figures estimate that box's energy, not this one's"
            )
        return text

    def sample(self) -> list[CounterSample]:
        now = self._clock()
        return [CounterSample(domain, 0.0, now, provenance="estimated") for domain in self.domains]

    def token_joules(
        self, prefill_tokens: int, decode_tokens: int
    ) -> dict[str, tuple[float, float]]:
        """Each domain's ``(prefill, decode)`` joules for a generation of these tokens."""
        return {
            domain: fit.estimate(prefill_tokens, decode_tokens)
            for domain, fit in zip(self.domains, self._fits.values(), strict=True)
        }

    def close(self) -> None:
        """Nothing to release."""
