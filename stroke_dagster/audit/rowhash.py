"""SHA-256 of many short messages at once (one per row), exact to :func:`hashlib.sha256`.

The audit trail needs a sha256 per scored row (the input features, the score record). DuckDB's
``sha256()`` costs ~0.45 s per million rows on two cores and a ``hashlib`` loop ~0.5 s (the call,
not the hash), either a tenth of scoring a million patients. Here the rows' messages are
fixed-width ``uint8`` rows of whole padded blocks, and a numba kernel runs SHA-256 over a few
hundred rows side by side, each round's operation across all of them in one vectorisable loop
(the "multi-buffer" layout): ~0.1 s per million one-block messages per core. The kernel is
compiled once and cached on disk (like the scoring engine's); batches are split over the cores
(the kernel releases the GIL).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

BLOCK = 64  # bytes per SHA-256 block
MAX_PAYLOAD = BLOCK - 9  # one-block messages: 0x80 and the 64-bit length follow the payload
LANES = 256  # rows hashed side by side (the round arrays stay in L1/L2)
PARALLEL_MIN_ROWS = 20_000  # fewer rows: one thread

_K = np.array(
    [
        0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4,
        0xAB1C5ED5, 0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE,
        0x9BDC06A7, 0xC19BF174, 0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F,
        0x4A7484AA, 0x5CB0A9DC, 0x76F988DA, 0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7,
        0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967, 0x27B70A85, 0x2E1B2138, 0x4D2C6DFC,
        0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85, 0xA2BFE8A1, 0xA81A664B,
        0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070, 0x19A4C116,
        0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
        0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7,
        0xC67178F2,
    ],
    dtype=np.uint64,
)  # fmt: skip
_H0 = np.array(
    [
        0x6A09E667,
        0xBB67AE85,
        0x3C6EF372,
        0xA54FF53A,
        0x510E527F,
        0x9B05688C,
        0x1F83D9AB,
        0x5BE0CD19,
    ],
    dtype=np.uint64,
)
_M = 0xFFFFFFFF


def _sha256_blocks(msg: np.ndarray, out: np.ndarray, k: np.ndarray, h0: np.ndarray) -> None:
    """``out[r]`` = the 8 state words after the padded blocks of ``msg[r]`` (numba-compiled).

    Words are held in uint64 lanes (numba widens uint32 arithmetic), masked where it matters.
    The working variables of round ``t`` are ``A[t..t+3]`` and ``E[t..t+3]`` (a, b, c, d read
    backwards), so a round writes two rows instead of shifting eight.
    """
    n = msg.shape[0]
    nblocks = msg.shape[1] // 64
    w = np.empty((64, LANES), np.uint64)
    a_ = np.empty((68, LANES), np.uint64)
    e_ = np.empty((68, LANES), np.uint64)
    st = np.empty((8, LANES), np.uint64)
    for start in range(0, n, LANES):
        m = min(LANES, n - start)
        for j in range(8):
            for i in range(m):
                st[j, i] = h0[j]
        for b in range(nblocks):
            base = b * 64
            for t in range(16):
                o = base + 4 * t
                for i in range(m):
                    r = start + i
                    w[t, i] = (
                        (np.uint64(msg[r, o]) << 24)
                        | (np.uint64(msg[r, o + 1]) << 16)
                        | (np.uint64(msg[r, o + 2]) << 8)
                        | np.uint64(msg[r, o + 3])
                    )
            for t in range(16, 64):
                for i in range(m):
                    x = w[t - 15, i]
                    y = w[t - 2, i]
                    s0 = ((x >> 7) | (x << 25)) ^ ((x >> 18) | (x << 14)) ^ (x >> 3)
                    s1 = ((y >> 17) | (y << 15)) ^ ((y >> 19) | (y << 13)) ^ (y >> 10)
                    w[t, i] = (w[t - 16, i] + w[t - 7, i] + (s0 & _M) + (s1 & _M)) & _M
            for i in range(m):
                a_[3, i], a_[2, i], a_[1, i], a_[0, i] = st[0, i], st[1, i], st[2, i], st[3, i]
                e_[3, i], e_[2, i], e_[1, i], e_[0, i] = st[4, i], st[5, i], st[6, i], st[7, i]
            for t in range(64):
                kt = k[t]
                for i in range(m):
                    a, bb, c, d = a_[t + 3, i], a_[t + 2, i], a_[t + 1, i], a_[t, i]
                    e, f, g, h = e_[t + 3, i], e_[t + 2, i], e_[t + 1, i], e_[t, i]
                    s1 = ((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21)) ^ ((e >> 25) | (e << 7))
                    ch = (e & f) ^ ((e ^ _M) & g)
                    t1 = h + (s1 & _M) + ch + kt + w[t, i]
                    s0 = ((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19)) ^ ((a >> 22) | (a << 10))
                    maj = (a & bb) ^ (a & c) ^ (bb & c)
                    a_[t + 4, i] = (t1 + (s0 & _M) + maj) & _M
                    e_[t + 4, i] = (d + t1) & _M
            for i in range(m):
                st[0, i] = (st[0, i] + a_[67, i]) & _M
                st[1, i] = (st[1, i] + a_[66, i]) & _M
                st[2, i] = (st[2, i] + a_[65, i]) & _M
                st[3, i] = (st[3, i] + a_[64, i]) & _M
                st[4, i] = (st[4, i] + e_[67, i]) & _M
                st[5, i] = (st[5, i] + e_[66, i]) & _M
                st[6, i] = (st[6, i] + e_[65, i]) & _M
                st[7, i] = (st[7, i] + e_[64, i]) & _M
        for j in range(8):
            for i in range(m):
                out[start + i, j] = st[j, i]


_KERNEL: Any = None
_KERNEL_LOCK = threading.Lock()


def _kernel() -> Any:
    global _KERNEL
    with _KERNEL_LOCK:
        if _KERNEL is None:
            import numba

            _KERNEL = numba.njit(nogil=True, cache=True, boundscheck=False)(_sha256_blocks)
    return _KERNEL


def preload() -> None:
    """Load the compiled kernel in a daemon thread (numba's import and its on-disk cache take a
    few tenths of a second), so that the first batch does not wait for it."""
    if _KERNEL is None:
        tiny = np.zeros((1, BLOCK), np.uint8)
        threading.Thread(
            target=lambda: _kernel()(tiny, np.empty((1, 8), np.uint64), _K, _H0),
            daemon=True,
            name="rowhash-kernel-load",
        ).start()


def pad(payload: np.ndarray, lengths: np.ndarray | int) -> np.ndarray:
    """Padded one-block messages: ``payload`` (n, <=55 bytes, zero beyond each row's length)
    with the 0x80 byte after ``lengths[r]`` bytes and the bit length at the end."""
    n = payload.shape[0]
    msg = np.zeros((n, BLOCK), np.uint8)
    msg[:, : payload.shape[1]] = payload
    lengths = np.broadcast_to(np.asarray(lengths, dtype=np.int64), (n,))
    if n and int(lengths.max()) > MAX_PAYLOAD:
        raise ValueError(f"a one-block message holds at most {MAX_PAYLOAD} bytes")
    msg[np.arange(n), lengths] = 0x80
    msg[:, BLOCK - 8 :] = (lengths * 8).astype(">u8").view(np.uint8).reshape(n, 8)
    return msg


def sha256_rows(messages: np.ndarray) -> np.ndarray:
    """The sha256 digest (n, 32 bytes) of each row of ``messages`` (n, 64 * blocks), rows
    already padded (:func:`pad`)."""
    messages = np.ascontiguousarray(messages, dtype=np.uint8)
    n = messages.shape[0]
    words = np.empty((n, 8), np.uint64)
    if n:
        kernel = _kernel()
        cores = _cpu_count()
        if n < PARALLEL_MIN_ROWS or cores == 1:
            kernel(messages, words, _K, _H0)
        else:
            edges = np.linspace(0, n, cores + 1).astype(int)
            with ThreadPoolExecutor(cores) as pool:
                list(
                    pool.map(
                        lambda ab: kernel(messages[ab[0] : ab[1]], words[ab[0] : ab[1]], _K, _H0),
                        zip(edges[:-1], edges[1:], strict=True),
                    )
                )
    return words.astype(">u4").view(np.uint8).reshape(n, 32)


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def to_hex(digests: np.ndarray) -> np.ndarray:
    """(n, 32) digests as (n, 64) lowercase hex bytes."""
    out = np.empty((digests.shape[0], digests.shape[1] * 2), np.uint8)
    out[:, 0::2] = _HEX[digests >> 4]
    out[:, 1::2] = _HEX[digests & 0x0F]
    return out


def from_hex(text: np.ndarray) -> np.ndarray:
    """(n, 64) hex bytes (either case) as (n, 32) digests."""
    value = text.astype(np.int16)
    value = np.where(
        value >= ord("a"), value - 87, np.where(value >= ord("A"), value - 55, value - 48)
    )
    return ((value[:, 0::2] << 4) | value[:, 1::2]).astype(np.uint8)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
