"""Exact and near-duplicate detection.

Exact: prompts are compared on a normalized form (Unicode NFKC, lower case,
punctuation dropped, whitespace collapsed); `prompt_id` is a hash of it, so the
same prompt gets the same id in every dataset.

Near: MinHash over word 3-gram shingles of the normalized text, LSH banding to
find candidates, and the MinHash estimate of Jaccard similarity to confirm
them; confirmed pairs are joined with union-find into near-duplicate groups.
Splits and folds are assigned per group, so near-duplicates never straddle a
train/evaluation boundary.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections import defaultdict
from typing import Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_WORD.findall(text))


def prompt_id(text: str) -> str:
    """Stable id of a prompt: the first 16 hex digits of sha1(normalized text)."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()[:16]


def stable_hash(*parts: object) -> int:
    """Deterministic 64-bit hash (Python's hash() is salted per process)."""
    data = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def shingles(text: str, n: int = 3, max_chars: int = 3000) -> np.ndarray:
    words = normalize_text(text[:max_chars]).split()
    if len(words) < n:
        grams = [" ".join(words)] if words else [""]
    else:
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return np.unique(np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (wrapping uint64 arithmetic): a well-mixed 64-bit hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def minhash_signatures(texts: Sequence[str], num_perm: int = 128, seed: int = 0,
                       max_chars: int = 3000) -> np.ndarray:
    """(len(texts), num_perm) uint64 MinHash signatures: permutation k is
    mix64(shingle XOR mask_k). (A linear hash a*x+b of 32-bit shingle hashes is
    monotone in x for most a, so every permutation picked the same shingle and
    unrelated texts sharing one common 3-gram looked like near-duplicates.)"""
    rng = np.random.default_rng(seed)
    masks = rng.integers(0, np.iinfo(np.int64).max, size=num_perm, dtype=np.int64).astype(np.uint64)
    sigs = np.empty((len(texts), num_perm), dtype=np.uint64)
    for i, text in enumerate(texts):
        sh = shingles(text, max_chars=max_chars)
        sigs[i] = _mix64(sh[:, None] ^ masks[None, :]).min(axis=0)
    return sigs


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def near_duplicate_groups(texts: Sequence[str], *, num_perm: int = 128, bands: int = 32,
                          jaccard: float = 0.7, seed: int = 0, max_chars: int = 3000) -> np.ndarray:
    """Group index per text; texts whose estimated Jaccard >= `jaccard` share a group.

    The group index is the smallest member index, so it is deterministic."""
    n = len(texts)
    uf = UnionFind(n)
    if n < 2:
        return np.arange(n)
    sigs = minhash_signatures(texts, num_perm=num_perm, seed=seed, max_chars=max_chars)
    rows = num_perm // bands
    checked: set[tuple[int, int]] = set()
    for band in range(bands):
        block = sigs[:, band * rows:(band + 1) * rows]
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i in range(n):
            buckets[block[i].tobytes()].append(i)
        for members in buckets.values():
            if len(members) < 2:
                continue
            first = members[0]
            # compare every member against every other member in small buckets, against
            # the first member in big ones (identical bands are already strong evidence)
            pairs = ((members[x], members[y]) for x in range(len(members)) for y in range(x + 1, len(members))) \
                if len(members) <= 50 else ((first, m) for m in members[1:])
            for i, j in pairs:
                if (i, j) in checked:
                    continue
                checked.add((i, j))
                if uf.find(i) == uf.find(j):
                    continue
                if float(np.mean(sigs[i] == sigs[j])) >= jaccard:
                    uf.union(i, j)
    return np.array([uf.find(i) for i in range(n)])
