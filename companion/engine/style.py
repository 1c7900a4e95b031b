"""Live style adaptation: an online variable-order n-gram of the performer's own curves.

The Continuator learns the performer live but has no trained model; the LSTM has a model
but never learns from the performer. Here the session's n-gram is mixed with the LSTM's
next-token distribution, ``p = (1 - w) p_lstm + w p_style``, so that answers take up the
performer's motifs as the jam goes on.

``p_style`` is Witten–Bell interpolated over orders 0..``order`` (the longest contexts
seen weigh most; a context seen rarely defers to shorter ones). Each context keeps its
successors as small index/count arrays, so the distribution over the whole vocabulary is
built in a preallocated buffer with a few vectorised operations per order.

It remembers the most recent ``MEMORY_TOKENS`` curves, whole phrases, forgetting the oldest
phrase first: the answers follow where the jam is now, and memory stays bounded however
long the session runs or whatever floods the input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

#: Curves remembered by default (config ``style.memory``; some 8 MB at the most).
MEMORY_TOKENS = 2048


class _Successors:
    """Counts of the tokens that followed one context."""

    __slots__ = ("counts", "total", "_idx", "_cnt")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self._idx: np.ndarray | None = None
        self._cnt: np.ndarray | None = None

    def add(self, token: int) -> None:
        self.counts[token] = self.counts.get(token, 0) + 1
        self.total += 1
        self._idx = None

    def remove(self, token: int) -> None:
        n = self.counts[token] - 1
        if n:
            self.counts[token] = n
        else:
            del self.counts[token]
        self.total -= 1
        self._idx = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, counts) as arrays, rebuilt only after a change (learning, not sampling)."""
        if self._idx is None:
            self._idx = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
            self._cnt = np.fromiter(self.counts.values(), dtype=np.float64,
                                    count=len(self.counts))
        return self._idx, self._cnt  # type: ignore[return-value]


class StyleMemory:
    """The performer's curves of this session as an n-gram of orders 0..``order``."""

    def __init__(self, vocab_size: int, order: int = 4, weight: float = 0.3,
                 memory: int = MEMORY_TOKENS):
        self.size = vocab_size
        self.order = int(order)
        self.weight = float(weight)
        self.memory = int(memory)
        self.contexts: dict[tuple[int, ...], _Successors] = {}
        self.tokens_seen = 0  # tokens remembered now
        self._phrases: deque[list[int]] = deque()
        self._p = np.zeros(vocab_size, dtype=np.float64)
        self._lstm = np.empty(vocab_size, dtype=np.float64)

    def reset(self) -> None:
        """Forget the session (a CC, or a new performer)."""
        self.contexts.clear()
        self._phrases.clear()
        self.tokens_seen = 0

    @property
    def empty(self) -> bool:
        return self.tokens_seen == 0

    def learn(self, tokens: Sequence[int]) -> None:
        """One phrase of the performer's curve tokens, in order (contexts start within it)."""
        toks = [int(t) for t in tokens][-self.memory:]
        if not toks:
            return
        for ctx, tok in self._grams(toks):
            succ = self.contexts.get(ctx)
            if succ is None:
                succ = self.contexts[ctx] = _Successors()
            succ.add(tok)
        self._phrases.append(toks)
        self.tokens_seen += len(toks)
        while self.tokens_seen > self.memory:
            self._forget(self._phrases.popleft())

    def _grams(self, toks: list[int]) -> Iterator[tuple[tuple[int, ...], int]]:
        for i, tok in enumerate(toks):
            for k in range(0, min(self.order, i) + 1):
                yield tuple(toks[i - k:i]), tok

    def _forget(self, toks: list[int]) -> None:
        for ctx, tok in self._grams(toks):
            succ = self.contexts[ctx]
            succ.remove(tok)
            if not succ.total:
                del self.contexts[ctx]
        self.tokens_seen -= len(toks)

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        """``p_style`` of the next token after ``history`` (most recent last): an internal
        buffer ``[V]`` summing to 1, valid until the next call. All zero while empty."""
        p = self._p
        p.fill(0.0)
        if self.empty:
            return p
        n = len(history)
        for k in range(0, min(self.order, n) + 1):
            succ = self.contexts.get(tuple(history[n - k:]) if k else ())
            if succ is None:
                break  # a longer context cannot have been seen if this one was not
            idx, cnt = succ.arrays()
            # Witten-Bell; order 0 is the session's unigram, which everything rests on
            lam = 1.0 if k == 0 else succ.total / (succ.total + len(idx))
            p *= 1.0 - lam
            p[idx] += lam * cnt / succ.total
        return p

    def mix(self, logits: np.ndarray, history: Sequence[int], out: np.ndarray) -> np.ndarray:
        """``log((1 - w) softmax(logits) + w p_style)`` into ``out``; the logits themselves
        (copied) when the weight is 0 or nothing was learned yet."""
        w = min(self.weight, 0.999)  # the model still breaks ties the n-gram has no data for
        if w <= 0.0 or self.empty:
            np.copyto(out, logits)
            return out
        q = self._lstm
        np.subtract(logits, logits.max(), out=q)
        np.exp(q, out=q)
        q *= (1.0 - w) / q.sum()
        p = self.distribution(history)
        np.multiply(p, w, out=out)
        out += q
        np.maximum(out, 1e-300, out=out)  # a model probability that underflowed: still finite
        np.log(out, out=out)
        return out
