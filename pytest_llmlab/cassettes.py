"""Cassettes: generations recorded once with their frames and timings, replayed offline.

A cassette is a JSONL file beside its test or suite file (``cassettes/<file>.jsonl``,
``--llm-cassette-dir``), one entry per line, keyed by `request_key`: a hash of what
determines the answer (provider, model, messages, temperature, seed, max_tokens, stop,
tools, logprobs, other parameters; never headers or keys) and the entry's ``sample``,
the how-many-th identical request of its test (repeated runs and ``llm.sample`` make
several). An entry keeps the answer's status and content type and every wire-level
frame with its offset from request start in nanoseconds (`pytest_llmlab.models.replay`),
plus the recorded Generation's timings, energy reading, backend facts and the hardware
fingerprint of the machine that recorded it. Every credential the process knows is
masked in an entry before it touches the disk.

``--llm-record``: ``off`` (live, the default), ``new`` (replay what is recorded, record
the rest), ``all`` (record everything again), ``none`` (replay only: a request without
an entry fails its test with `CassetteMiss`). A process appends entries under an
``fcntl`` lock (xdist workers share files) and compacts the files it wrote at session
end: the last entry of each key and sample stays, in first-recorded order.

This run's generations (`RunGenerations`) use the same entries without frames: the
whole Generation as JSON, one file per process in the run's spool, merged into the
report folder's ``generations.jsonl`` at session end. ``--llm-resume`` reuses those of
the previous run in the folder (a run killed mid-suite continues where it stopped);
``llmlab rescore`` re-runs the tests with every generation taken from them.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytest_llmlab import wirejson
from pytest_llmlab.energy.reading import EnergyReading
from pytest_llmlab.errors import CassetteError, CassetteMiss, LLMLabError, hide_own_frames
from pytest_llmlab.models.base import Generation, Request, StreamHandle, Timings
from pytest_llmlab.models.replay import (
    Frame,
    Playback,
    ReplayTransport,
    Tape,
    decode_frames,
    encode_frames,
)
from pytest_llmlab.models.spec import ModelSpec
from pytest_llmlab.option_values import RecordMode
from pytest_llmlab.redact import Redactor, current, terminal_safe

if TYPE_CHECKING:
    from pytest_llmlab.models.openai import OpenAICompatible

__all__ = [
    "CassetteFile",
    "CassetteWarning",
    "Cassettes",
    "ItemTape",
    "Plan",
    "RunGenerations",
    "cassette_path",
    "request_fields",
    "request_key",
]

# A miss or a bad file is the test's one-line failure: keep these frames out of it.
__tracebackhide__ = hide_own_frames

#: Hex digits of a request key: 64 bits, ample for the requests of one file.
KEY_LENGTH = 16
#: Differences the message of a miss shows, and characters of each value.
_DIFFS_SHOWN = 3
_VALUE_CHARS = 60

#: Replays a client of each wire protocol, without network (`ProviderPool.replayer`).
Replayer = Callable[[ModelSpec], "tuple[OpenAICompatible, ReplayTransport]"]


class CassetteWarning(UserWarning):
    """A generation that was not recorded, and why."""


# -- keys ---------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """JSON values with whole floats as ints (``1.0`` and ``1`` ask for the same)."""
    kind = type(value)
    if kind is str or value is None:  # most leaves: the texts of the messages
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def request_fields(spec: ModelSpec, request: Request) -> dict[str, Any]:
    """What determines the answer to ``request``: the key's input, and what a miss
    compares. The alias, the endpoint, headers and keys are not in it."""
    fields: dict[str, Any] = _canonical(
        {
            "provider": spec.provider,
            "model": spec.model,
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in request.messages],
            "temperature": request.temperature,
            "seed": request.seed,
            "max_tokens": request.max_tokens,
            "stop": request.stop,
            "tools": request.tools,
            "tool_choice": request.tool_choice,
            "logprobs": request.logprobs,
            "top_logprobs": request.top_logprobs,
            "params": json.loads(json.dumps(request.params, default=str)) if request.params else {},
        }
    )
    return fields


def request_key(fields: Mapping[str, Any]) -> str:
    """The hex digest of `request_fields` in canonical JSON (sorted keys)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    """``{"messages[1].content": "Hi", ...}``: every leaf of a JSON value by path."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{path}.{key}" if path else str(key)))
        return flat
    if isinstance(value, list) and value:
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flat(item, f"{path}[{index}]"))
        return flat
    return {path: value}


def _differences(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The paths where two requests differ, each with both values."""
    old, new = _flat(dict(recorded)), _flat(dict(now))
    shown: list[str] = []
    for path in sorted(set(old) | set(new)):
        if old.get(path, _MISSING) != new.get(path, _MISSING):
            shown.append(f"{path} ({_value(old.get(path, _MISSING))} recorded, "
                         f"{_value(new.get(path, _MISSING))} now)")  # fmt: skip
    return shown


class _Missing:
    def __repr__(self) -> str:
        return "absent"


_MISSING = _Missing()


def _value(value: object) -> str:
    text = repr(value)
    if len(text) > _VALUE_CHARS:
        text = text[: _VALUE_CHARS - 3] + "..."
    return terminal_safe(text)


# -- files --------------------------------------------------------------------------------


@dataclass(slots=True)
class Stored:
    """One entry of a cassette (or of a run's generations), where it was read."""

    entry: dict[str, Any]
    where: str  # ``file:line``
    shown: str  # the file, as messages and records name it
    frames: list[Frame] | None = None

    @property
    def key(self) -> str:
        return str(self.entry["key"])

    @property
    def sample(self) -> int:
        return int(self.entry["sample"])


def _entry_problem(entry: object) -> str | None:
    """What keeps a line from being an entry, or None."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    if not isinstance(entry.get("key"), str) or not entry["key"]:
        return "no 'key'"
    sample = entry.get("sample")
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
        return "'sample' is not a whole number >= 0"
    if not isinstance(entry.get("request"), dict):
        return "no 'request' object"
    if "frames" in entry:
        if not isinstance(entry.get("status"), int) or not isinstance(
            entry.get("content_type"), str
        ):
            return "a recorded answer needs 'status' (a number) and 'content_type' (text)"
        if not isinstance(entry.get("generation", {}), dict):
            return "'generation' is not an object"
        return None
    if not isinstance(entry.get("generation"), dict):
        return "neither 'frames' nor a 'generation' object"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    """``path`` opened for appending under an exclusive ``flock``: the file at the
    path when the lock was taken (a compaction may have replaced it meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = path.open("a+", encoding="utf-8")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        yield handle
    finally:
        handle.close()  # closing releases the lock


class CassetteFile:
    """One cassette (or generations) file, read on first use and indexed by key and
    sample; a line that is not an entry is a `CassetteError` naming ``file:line``."""

    def __init__(self, path: Path, shown: str) -> None:
        self.path = path
        self.shown = shown
        self._index: dict[tuple[str, int], Stored] | None = None
        self.appended = 0

    def _entries(self) -> dict[tuple[str, int], Stored]:
        if self._index is None:
            self._index = {}
            for stored in self._read():
                self._index[(stored.key, stored.sample)] = stored
        return self._index

    def _read(self) -> Iterator[Stored]:
        try:
            handle = self.path.open(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CassetteError(f"{self.shown}: cannot read it ({exc.strerror})") from None
        with handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield self._parse(line, number)

    def _parse(self, line: str, number: int) -> Stored:
        where = f"{self.shown}:{number}"
        try:
            entry = wirejson.loads(line)
        except ValueError as exc:
            raise CassetteError(f"{where}: not a JSON line ({_reason(exc)})") from None
        problem = _entry_problem(entry)
        frames = None
        if problem is None and "frames" in entry:
            try:
                frames = decode_frames(entry["frames"])
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            raise CassetteError(f"{where}: not a cassette entry: {problem}")
        return Stored(entry=entry, where=where, shown=self.shown, frames=frames)

    def find(self, key: str, sample: int) -> Stored | None:
        return self._entries().get((key, sample))

    def samples_of(self, key: str) -> int:
        """How many samples of ``key`` the file holds (0 to n-1)."""
        return sum(1 for k, _ in self._entries() if k == key)

    def nearest(self, fields: Mapping[str, Any], test: str) -> tuple[Stored, list[str]] | None:
        """The recorded request closest to ``fields`` (fewest differing leaves, the
        same test first), with what differs; None for an empty file."""
        best: tuple[int, int, Stored, list[str]] | None = None
        for stored in self._entries().values():
            differs = _differences(stored.entry["request"], fields)
            rank = (len(differs), 0 if stored.entry.get("test") == test else 1)
            if best is None or rank < best[:2]:
                best = (*rank, stored, differs)
        return None if best is None else (best[2], best[3])

    def append(self, entry: dict[str, Any]) -> None:
        """Add ``entry`` (locked: other processes append to the same file)."""
        line = json.dumps(entry, ensure_ascii=False, allow_nan=False, default=str)
        with _locked(self.path) as handle:
            handle.write(line + "\n")
            handle.flush()
        self.appended += 1
        entries = self._entries()
        stored = Stored(entry=entry, where=f"{self.shown} (this run)", shown=self.shown)
        if "frames" in entry:
            stored.frames = decode_frames(entry["frames"])
        entries[(stored.key, stored.sample)] = stored

    def compact(self) -> None:
        """Keep the last entry of each key and sample, in first-recorded order, and
        replace the file atomically (locked). A file with a bad line is left as it is:
        its error shows where it is read."""
        with _locked(self.path) as handle:
            handle.seek(0)
            lines = [
                line if line.endswith("\n") else line + "\n" for line in handle if line.strip()
            ]
            # First-recorded order (a dict keeps insertion order), each slot's last line.
            latest: dict[tuple[str, int], str] = {}
            for line in lines:
                try:
                    entry = wirejson.loads(line)
                except ValueError:
                    return
                if _entry_problem(entry) is not None:
                    return
                latest[(str(entry["key"]), int(entry["sample"]))] = line
            kept = list(latest.values())
            if kept == lines:
                return
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with partial.open("w", encoding="utf-8") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.path)


def _reason(exc: ValueError) -> str:
    return getattr(exc, "msg", None) or str(exc)


def cassette_path(test_file: Path, folder: str, rootdir: Path) -> Path:
    """The cassette of ``test_file``: ``<its folder>/<folder>/<its name>.jsonl`` for a
    relative ``folder``; under an absolute one, named by the path from the rootdir
    (``tests__test_x.py.jsonl``), so that two folders' ``test_x.py`` do not share."""
    base = Path(folder).expanduser()
    if not base.is_absolute():
        return test_file.parent / base / f"{test_file.name}.jsonl"
    try:
        relative = test_file.resolve().relative_to(rootdir.resolve())
    except ValueError:
        relative = Path(test_file.name)
    return base / ("__".join(relative.parts) + ".jsonl")


def _shown_path(path: Path, rootdir: Path) -> str:
    try:
        return str(path.resolve().relative_to(rootdir.resolve()))
    except ValueError:
        return str(path)


class Cassettes:
    """The process's cassettes under ``--llm-record`` (not ``off``)."""

    def __init__(self, *, mode: RecordMode, folder: str, speed: float, rootdir: Path) -> None:
        self.mode = mode
        self.folder = folder
        self.speed = speed
        self.rootdir = rootdir
        self._files: dict[Path, CassetteFile] = {}
        self._by_test: dict[Path, CassetteFile] = {}

    @property
    def replays(self) -> bool:
        return self.mode in ("new", "none")

    @property
    def records(self) -> bool:
        return self.mode in ("new", "all")

    def file_for(self, test_file: Path) -> CassetteFile:
        known = self._by_test.get(test_file)  # every request asks: resolve paths once
        if known is not None:
            return known
        path = cassette_path(test_file, self.folder, self.rootdir)
        found = self._files.get(path)
        if found is None:
            found = self._files[path] = CassetteFile(path, _shown_path(path, self.rootdir))
        self._by_test[test_file] = found
        return found

    def close(self) -> None:
        """Compact every file this process recorded into."""
        for cassette in self._files.values():
            if cassette.appended:
                cassette.compact()


class RunGenerations:
    """This run's finished generations, for a later ``--llm-resume`` or ``llmlab
    rescore`` (``log``: this process's file, appended as each finishes),
    and the earlier ones this run reuses (``reuse``; ``strict``: a request without one
    fails instead of generating, as a rescore must)."""

    def __init__(
        self, *, log: Path | None, reuse: CassetteFile | None = None, strict: bool = False
    ) -> None:
        from pytest_llmlab.results import JsonlWriter

        # Flushed, not fsynced: a killed run loses nothing, and every generation
        # does not wait for the disk.
        self._writer = JsonlWriter(log, mode="a", fsync=False) if log is not None else None
        self.reuse = reuse
        self.strict = strict

    def write(self, entry: Mapping[str, Any]) -> None:
        if self._writer is not None:
            self._writer.write(entry)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# -- one test's requests ------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    """What becomes of one request: played back from ``stored``, or generated live
    (and recorded into ``record_to`` when set)."""

    key: str
    sample: int
    fields: dict[str, Any]
    stored: Stored | None = None
    record_to: CassetteFile | None = None


@dataclass
class ItemTape:
    """The cassette and run-generations side of one test item: counts each request's
    samples, decides replay or live, and writes what finished."""

    test_id: str
    test_file: Path
    cassettes: Cassettes | None
    run: RunGenerations | None
    replayer: Replayer
    _samples: Counter[str] = field(default_factory=Counter)

    @property
    def records(self) -> bool:
        """Whether a live answer is recorded into a cassette."""
        return self.cassettes is not None and self.cassettes.records

    @property
    def may_play(self) -> bool:
        """Whether a request may be played back rather than generated."""
        reuse = self.run is not None and self.run.reuse is not None
        return reuse or (self.cassettes is not None and self.cassettes.replays)

    def plan(self, spec: ModelSpec, request: Request) -> Plan:
        """Look ``request`` up; `CassetteMiss` when it must be replayed and is not
        recorded (``--llm-record=none``, a rescore), `CassetteError` for a bad file."""
        fields = request_fields(spec, request)
        key = request_key(fields)
        sample = self._samples[key]
        self._samples[key] += 1
        plan = Plan(key=key, sample=sample, fields=fields)
        run, cassettes = self.run, self.cassettes
        if run is not None and run.reuse is not None:
            plan.stored = run.reuse.find(key, sample)
            if plan.stored is not None:
                return plan
            if run.strict:
                raise CassetteMiss(self._miss(run.reuse, plan, "llmlab rescore"))
        if cassettes is None:
            return plan
        cassette = cassettes.file_for(self.test_file)
        if cassettes.replays:
            plan.stored = cassette.find(key, sample)
            if plan.stored is not None:
                return plan
            if cassettes.mode == "none":
                raise CassetteMiss(self._miss(cassette, plan, "--llm-record=none"))
        if cassettes.records:
            plan.record_to = cassette
        return plan

    def _miss(self, cassette: CassetteFile, plan: Plan, why: str) -> str:
        head = (
            f"no recording of this request of {self.test_id} ({why}): key {plan.key}, "
            f"sample {plan.sample}, in {cassette.shown}"
        )
        samples = cassette.samples_of(plan.key)
        if samples:
            return (
                f"{head}; it holds {samples} sample(s) of this request (0 to {samples - 1}): "
                "record the further ones (a repeated run, or one more identical call)"
            )
        nearest = cassette.nearest(plan.fields, self.test_id)
        if nearest is None:
            exists = cassette.path.exists()
            return f"{head}; {'it holds no entries' if exists else 'there is no such file'}"
        stored, differs = nearest
        shown = "; ".join(differs[:_DIFFS_SHOWN])
        if len(differs) > _DIFFS_SHOWN:
            shown += f"; and {len(differs) - _DIFFS_SHOWN} more"
        return (
            f"{head}; nearest recorded: key {stored.key} ({stored.where}, "
            f"{terminal_safe(str(stored.entry.get('test', '?')))}), which differs in {shown}"
        )

    # -- playback -------------------------------------------------------------------

    def playback(
        self,
        spec: ModelSpec,
        request: Request,
        plan: Plan,
        origin_ns: int,
        *,
        speed: float | None = None,
    ) -> tuple[StreamHandle, Callable[[Generation, dict[str, Any]], Generation]]:
        """The stream of a planned playback, and what makes its Generation the
        recorded one: frames through the provider module's own parser, or (a run's
        generations) the stored Generation itself."""
        stored = plan.stored
        assert stored is not None
        if stored.frames is None:
            return _StoredStream(stored), functools.partial(_reused, stored)
        client, transport = self.replayer(spec)
        client.use_variant(stored.entry.get("variant"))
        stream = client.stream_chunks(request)
        if speed is None:
            speed = self.cassettes.speed if self.cassettes is not None else 0.0
        token = transport.expect(
            Playback(
                status=int(stored.entry["status"]),
                content_type=str(stored.entry["content_type"]),
                head_ns=int(stored.entry.get("head_ns") or 0),
                frames=stored.frames,
                origin_ns=origin_ns,
                speed=speed,
            )
        )
        # Handed to the stream directly: the HTTP client's request building, cookies
        # and redirects do nothing for a replay (the parser reads the same body).
        stream.played = functools.partial(transport.answer, token)
        return stream, functools.partial(_replayed, stored)

    # -- what finished ---------------------------------------------------------------

    def finished(
        self,
        plan: Plan,
        generation: Generation,
        tape: Tape | None,
        *,
        spec: ModelSpec,
        redactor: Redactor | None = None,
        variant: str | None = None,
    ) -> None:
        """Record a live generation that finished (into its cassette when recording)
        and log every finished one for this run's resume and rescore.

        Every credential is masked first. When the answer itself holds one (a model
        that repeats its key) the masked frames are played back before they are kept:
        a key the model sent token by token is in no single frame, and a replay would
        put it back together; such an answer is not recorded (`CassetteWarning`)."""
        if generation.finish_reason in ("error", "cancelled"):
            return
        recording = plan.record_to is not None and tape is not None and plan.stored is None
        if not recording and self.run is None:
            return  # a replay, or a live answer with no cassette to go to and no run log
        mask = current() if redactor is None else current() | redactor
        leaks = bool(mask) and _holds_secret(generation, mask)
        base = {
            "key": plan.key,
            "sample": plan.sample,
            "test": self.test_id,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request": plan.fields,
            "hardware": generation.hardware or _this_hardware(),
        }
        if recording:
            assert plan.record_to is not None and tape is not None
            entry = {
                **base,
                "variant": variant,
                "status": tape.status,
                "content_type": tape.content_type,
                "head_ns": tape.head_ns,
                "frames": encode_frames(_masked_frames(tape.frames(), mask)),
                "generation": {
                    "timings": generation.timings.model_dump(mode="json"),
                    "energy": _reading_json(generation.energy),
                    "backend": generation.backend,
                    "injection_tokens": generation.injection_tokens,
                    "attempts": generation.attempts,
                },
            }
            masked: dict[str, Any] = mask.value(entry)  # type: ignore[assignment]  # same shape
            if leaks and not self._plays_clean(spec, generation.request, masked, mask):
                warnings.warn(
                    CassetteWarning(
                        f"not recorded into {plan.record_to.shown}: the answer of "
                        f"{self.test_id} holds a configured credential spread over several "
                        "frames, which a replay would put back together"
                    ),
                    stacklevel=2,
                )
            else:
                plan.record_to.append(masked)
        if self.run is not None:
            kept = generation.model_dump(mode="json")
            if kept.get("energy"):
                kept["energy"]["windows"] = []  # spent on this run's attribution
            if leaks and mask.text("".join(t["token"] for t in kept["tokens"])) != "".join(
                t["token"] for t in kept["tokens"]
            ):
                kept["tokens"] = []  # each token is masked alone: a split key would stay
            self.run.write(mask.value({**base, "generation": kept}))  # type: ignore[arg-type]

    def _plays_clean(
        self, spec: ModelSpec, request: Request, entry: dict[str, Any], mask: Redactor
    ) -> bool:
        """Whether ``entry``'s frames, played back, give an answer without a secret."""
        from pytest_llmlab.models.assemble import GenerationAssembler

        assembler = GenerationAssembler(
            request=request, model=spec.display, spec=spec.spec, provider=spec.provider
        )
        stored = Stored(entry=entry, where="", shown="", frames=decode_frames(entry["frames"]))
        handle, _ = self.playback(spec, request, Plan("", 0, {}, stored=stored), 0, speed=0.0)
        try:
            for chunk in handle:
                assembler.add(chunk)
        except (LLMLabError, ValueError):
            return False
        return not _holds_secret(assembler.finish(), mask)


def _holds_secret(generation: Generation, mask: Redactor) -> bool:
    """Whether the answer's text, reasoning, tool-call arguments or tokens hold a
    credential ``mask`` knows."""
    texts = [generation.text, generation.reasoning, "".join(t.token for t in generation.tokens)]
    texts.extend(call.arguments_text for call in generation.tool_calls)
    return any(mask.text(text) != text for text in texts if text)


def _this_hardware() -> dict[str, str]:
    from pytest_llmlab.fingerprint import hardware, hardware_fingerprint

    return {"fingerprint": hardware_fingerprint(), "cpu_model": str(hardware()["cpu"])}


def _reading_json(reading: EnergyReading | None) -> dict[str, Any] | None:
    if reading is None:
        return None
    data = reading.model_dump(mode="json")
    data["windows"] = []  # edges on the recording host's clock: nothing to share here
    return data


def _masked_frames(frames: list[Frame], mask: Redactor) -> list[Frame]:
    """Frames with every credential masked, each frame on its own (a key the model
    spread over frames is caught by `ItemTape._plays_clean`)."""
    if not mask:
        return frames
    masked: list[Frame] = []
    for offset, data in frames:
        # Bytes that are not UTF-8 (a Latin-1 body) still spell a key in ASCII.
        text = data.decode("utf-8", "surrogateescape")
        masked.append((offset, mask.text(text).encode("utf-8", "surrogateescape")))
    return masked


def replayed_reading(recorded: object, where: str) -> EnergyReading:
    """A recorded reading as a replay shows it: every figure as recorded, every
    provenance ``replayed`` (never measured on this run), no windows to share."""
    if not isinstance(recorded, dict):
        return EnergyReading.unavailable(f"replayed from {where}: no energy was recorded")
    reading = EnergyReading.model_validate({**recorded, "windows": []})
    if reading.joules is None:
        note = reading.note or "no energy was recorded"
        return reading.model_copy(update={"note": f"replayed from {where}: {note}"})
    components: dict[str, Any] = {
        name: getattr(reading, name).model_copy(update={"provenance": "replayed"})
        for name in ("cpu", "dram", "gpu")
        if getattr(reading, name) is not None
    }
    components["other"] = {
        kind: part.model_copy(update={"provenance": "replayed"})
        for kind, part in reading.other.items()
    }
    note = f"replayed from {where}; recorded as {reading.provenance}"
    if reading.note:
        note += f" ({reading.note})"
    return reading.model_copy(
        update={**components, "provenance": "replayed", "measured": False, "note": note}
    )


def _rebased(recorded: Timings, started_ns: int) -> Timings:
    """The recorded durations and rates, the edges moved onto this run's clock."""
    first = recorded.first_token_ns
    return recorded.model_copy(
        update={
            "started_ns": started_ns,
            "first_token_ns": None if first is None else started_ns + first - recorded.started_ns,
            "finished_ns": started_ns + recorded.finished_ns - recorded.started_ns,
        }
    )


def _replayed(stored: Stored, generation: Generation, fields: dict[str, Any]) -> Generation:
    """A Generation parsed from recorded frames, with this run's ``fields`` (its turn)
    and the recorded timings, energy, backend facts and hardware."""
    recorded = stored.entry.get("generation") or {}
    update: dict[str, Any] = {
        **fields,
        "energy": replayed_reading(recorded.get("energy"), stored.shown),
        "backend": recorded.get("backend") or {},
        "injection_tokens": recorded.get("injection_tokens"),
        "attempts": recorded.get("attempts") or 1,
        "replayed": True,
        "cassette": stored.shown,
        "hardware": stored.entry.get("hardware"),
    }
    if isinstance(recorded.get("timings"), dict):
        try:
            timings = Timings.model_validate(recorded["timings"])
        except ValueError:
            raise CassetteError(f"{stored.where}: the recorded timings do not read") from None
        update["timings"] = _rebased(timings, generation.timings.started_ns)
    return generation.model_copy(update=update)


class _StoredStream:
    """The stream of a stored generation: one chunk with its text, for those who
    iterate `LLM.stream`; nothing to close."""

    def __init__(self, stored: Stored) -> None:
        text = (stored.entry.get("generation") or {}).get("text")
        delta = {"content": text} if isinstance(text, str) and text else {}
        self._chunks = [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._chunks)

    def close(self) -> None:
        pass


def _reused(stored: Stored, generation: Generation, fields: dict[str, Any]) -> Generation:
    """The Generation an earlier run stored, for this run's request, turn and clock."""
    try:
        earlier = Generation.model_validate(stored.entry["generation"])
    except ValueError as exc:
        problem = str(exc).splitlines()[0]
        raise CassetteError(
            f"{stored.where}: the stored generation does not read ({problem})"
        ) from None
    energy = earlier.energy
    return earlier.model_copy(
        update={
            "request": generation.request,
            "timings": _rebased(earlier.timings, generation.timings.started_ns),
            "energy": replayed_reading(
                energy.model_dump(mode="json") if energy is not None else None, stored.shown
            ),
            "turn": fields.get("turn"),
            "replayed": True,
            "cassette": stored.shown,
            "hardware": earlier.hardware or stored.entry.get("hardware"),
        }
    )
