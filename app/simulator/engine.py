"""The simulated engine: batch capacity, latency model, deterministic text and fault decisions.

Everything here is plain asyncio and arithmetic; the HTTP shapes live in `server.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.simulator.config import Faults, FaultsUpdate, SimulatorConfig
from app.simulator.metrics import SimMetrics

log = logging.getLogger(__name__)

# A fixed vocabulary: one word = one output token. Lower-case plain words keep the
# output JSON-safe and readable in logs.
WORDS: tuple[str, ...] = (
    "the", "model", "answers", "with", "simulated", "tokens", "that", "follow", "a", "seeded",
    "stream", "of", "plain", "words", "so", "tests", "can", "compare", "every", "byte",
    "latency", "grows", "when", "batch", "fills", "and", "requests", "wait", "in", "queue",
    "cache", "blocks", "hold", "keys", "values", "for", "each", "sequence", "until", "done",
    "gateway", "forwards", "chunks", "as", "they", "arrive", "without", "buffering", "any", "text",
    "server", "reports", "metrics", "under", "names", "operators", "already", "know", "from", "production",
    "load", "shows", "saturation", "early",
)  # fmt: skip


def estimate_tokens(text: str) -> int:
    """Prompt token estimate: one token per 4 characters, rounded up (no tokenizer in the simulator)."""
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class FaultDecision:
    """What the fault RNG decided for one request, drawn in arrival order."""

    error: bool = False
    hang: bool = False
    crash: bool = False
    cutoff_after: int | None = None


NO_FAULT = FaultDecision()


@dataclass
class Choice:
    """One generated choice: its tokens and why it ended."""

    tokens: list[str]
    finish_reason: str


@dataclass
class Sequence:
    """A request admitted to the batch; tracks its KV-cache footprint."""

    prompt_tokens: int
    arrival: float
    generated: int = 0
    scheduled: float = 0.0
    first_token: float = 0.0


class Engine:
    """Batch of at most max_num_seqs running sequences; the rest wait in FIFO order."""

    def __init__(self, config: SimulatorConfig, metrics: SimMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.faults = config.faults.model_copy()
        self._fault_rng = random.Random(config.seed)  # noqa: S311 - reproducible faults, not security
        self._slots = asyncio.Semaphore(config.max_num_seqs)
        self.running = 0
        self.waiting = 0
        self.kv_tokens = 0
        self.requests_seen = 0
        metrics.bind_gauges(
            running=lambda: self.running,
            waiting=lambda: self.waiting,
            kv=lambda: min(1.0, self.kv_tokens / config.kv_capacity),
        )

    # -- faults ---------------------------------------------------------------------------

    def decide_faults(self) -> FaultDecision:
        """Draw this request's fault decisions; always three draws so the sequence never shifts."""
        self.requests_seen += 1
        f = self.faults
        rng = self._fault_rng
        r_err, r_hang, r_cut = rng.random(), rng.random(), rng.random()
        if f.crash_after_requests is not None and self.requests_seen > f.crash_after_requests:
            return FaultDecision(crash=True)
        if not (f.error_rate or f.hang_rate or f.stream_cutoff_tokens is not None):
            return NO_FAULT
        return FaultDecision(
            error=r_err < f.error_rate,
            hang=r_hang < f.hang_rate,
            cutoff_after=f.stream_cutoff_tokens if r_cut < f.stream_cutoff_rate else None,
        )

    def update_faults(self, update: FaultsUpdate) -> Faults:
        """Apply a partial update; `reset` clears faults and replays the fault RNG from the seed."""
        if update.reset:
            self.faults = Faults()
            self._fault_rng = random.Random(self.config.seed)  # noqa: S311
            self.requests_seen = 0
        changes = update.model_dump(exclude_unset=True, exclude={"reset"})
        self.faults = self.faults.model_copy(update=changes)
        # model_copy(update=...) skips validation; re-validate so bad combinations cannot slip in.
        self.faults = Faults.model_validate(self.faults.model_dump())
        log.warning("faults now %s", self.faults.model_dump())
        return self.faults

    # -- text -----------------------------------------------------------------------------

    def generate(
        self, prompt_key: str, request_seed: int | None, max_tokens: int, n: int, stop: list[str]
    ) -> list[Choice]:
        """Deterministic output: a function of (server seed, request seed, prompt, choice index) only.

        Independent of arrival order and concurrency, and a longer max_tokens extends the same text.
        """
        digest = hashlib.blake2b(prompt_key.encode(), digest_size=8).digest()
        base = int.from_bytes(digest, "big") ^ (self.config.seed << 64) ^ ((request_seed or 0) << 128)
        out: list[Choice] = []
        for index in range(n):
            rng = random.Random(base + index)  # noqa: S311 - reproducible text
            tokens = rng.choices(WORDS, k=max_tokens)
            reason = "length"
            if self.config.eos_rate > 0:
                eos_rng = random.Random(~(base + index))  # noqa: S311
                for i in range(max_tokens):
                    if eos_rng.random() < self.config.eos_rate:
                        # The EOS token itself is not returned; at least one token always is.
                        tokens, reason = tokens[: max(1, i)], "stop"
                        break
            if stop:
                for i, word in enumerate(tokens):
                    if word in stop:
                        tokens, reason = tokens[:i], "stop"
                        break
            # Words are space-separated; the first one carries no leading space.
            spaced = [" " + t for t in tokens]
            if spaced:
                spaced[0] = tokens[0]
            out.append(Choice(tokens=spaced, finish_reason=reason))
        return out

    # -- capacity and latency -------------------------------------------------------------

    def load_multiplier(self) -> float:
        """1.0 for a lone request, growing linearly with the other running sequences."""
        return 1.0 + self.config.load_factor * (self.running - 1) / self.config.max_num_seqs

    @property
    def zero_latency(self) -> bool:
        return self.config.ttft_ms <= 0 and self.config.itl_ms <= 0

    @asynccontextmanager
    async def admitted(self, prompt_tokens: int, arrival: float) -> AsyncIterator[Sequence]:
        """Hold a batch slot for the body of the block; waiting time is counted and observed."""
        seq = Sequence(prompt_tokens=prompt_tokens, arrival=arrival)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        seq.scheduled = time.perf_counter()
        self.running += 1
        self.kv_tokens += prompt_tokens
        try:
            yield seq
        finally:
            self.running -= 1
            self.kv_tokens -= seq.prompt_tokens + seq.generated
            self._slots.release()

    async def wait_first_token(self, seq: Sequence) -> None:
        """Sleep the (load-scaled) time to first token and record it."""
        if self.config.ttft_ms > 0:
            await asyncio.sleep(self.config.ttft_ms / 1000.0 * self.load_multiplier())
        seq.first_token = time.perf_counter()
        self.metrics.ttft.observe(seq.first_token - seq.arrival)

    async def next_token_at(self, seq: Sequence, last: float) -> float:
        """Sleep until the next token is due (deadline-based, so sleeps do not drift); return its time."""
        if self.config.itl_ms > 0:
            due = last + self.config.itl_ms / 1000.0 * self.load_multiplier()
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = due if delay > 0 else time.perf_counter()
        else:
            now = time.perf_counter()
        self.metrics.itl.observe(now - last)
        return now

    def add_generated(self, seq: Sequence, count: int) -> None:
        seq.generated += count
        self.kv_tokens += count

    def finish(self, seq: Sequence, prompt_tokens: int, completion_tokens: int, max_tokens: int, reason: str) -> None:
        """Record the request-level histograms and counters once the request ends."""
        now = time.perf_counter()
        m = self.metrics
        m.success[reason].inc()
        m.prompt_tokens.inc(prompt_tokens)
        m.generation_tokens.inc(completion_tokens)
        m.request_prompt_tokens.observe(prompt_tokens)
        m.request_generation_tokens.observe(completion_tokens)
        m.request_max_tokens.observe(max_tokens)
        m.e2e.observe(now - seq.arrival)
        if seq.scheduled:
            m.queue_time.observe(seq.scheduled - seq.arrival)
            m.inference_time.observe(now - seq.scheduled)
        if seq.first_token:
            m.prefill_time.observe(seq.first_token - seq.scheduled)
            m.decode_time.observe(now - seq.first_token)
            if completion_tokens > 1:
                m.tpot.observe((now - seq.first_token) / (completion_tokens - 1))
