"""Lossless coding of one tensor's quantization codes (docs/FORMAT.md, "Tokens" and "Huffman").

Pruned weights dominate a sparse tensor, so coding them one by one costs at least one bit each.
Tokens pair a run of zeros with the nonzero code that ends it, which lets a canonical Huffman
code reach the entropy of the tensor. Everything here is a pure function on numpy arrays.
"""

from __future__ import annotations

import array
import heapq

import numpy as np

MAX_CODE_LENGTH = 15


class CodecError(ValueError):
    """A token stream or code table breaks the rules of docs/FORMAT.md."""


def alphabet_size(value_count: int, run_max: int) -> int:
    """Number of symbols: (run_max + 1) * value_count run/value pairs plus one escape."""
    return (run_max + 1) * value_count + 1


def tokenize(codes: np.ndarray, value_count: int, run_max: int) -> np.ndarray:
    """Turn flat codes (-1 = pruned zero, else 0..value_count-1) into token symbols (int64).

    Trailing zeros produce no token: the decoder fills them in from the element count.
    """
    codes = np.asarray(codes).ravel()
    positions = np.flatnonzero(codes >= 0)
    if positions.size == 0:
        return np.zeros(0, dtype=np.int64)
    gaps = np.diff(positions, prepend=-1) - 1
    escapes = gaps // (run_max + 1)
    runs = gaps % (run_max + 1)
    escape_symbol = (run_max + 1) * value_count
    symbols = np.full(int(escapes.sum()) + positions.size, escape_symbol, dtype=np.int64)
    value_slots = np.cumsum(escapes + 1) - 1
    symbols[value_slots] = runs * value_count + codes[positions]
    return symbols


def detokenize(symbols: np.ndarray, value_count: int, run_max: int, size: int) -> np.ndarray:
    """Inverse of :func:`tokenize`: flat int16 codes of ``size`` elements, -1 for zeros."""
    symbols = np.asarray(symbols, dtype=np.int64)
    escape_symbol = (run_max + 1) * value_count
    if symbols.size and (symbols.min() < 0 or symbols.max() > escape_symbol):
        raise CodecError("token symbol outside the alphabet")
    is_escape = symbols == escape_symbol
    zeros = np.where(is_escape, run_max + 1, symbols // value_count)
    advance = zeros + (~is_escape)
    end = np.cumsum(advance)
    if end.size and end[-1] > size:
        raise CodecError(f"tokens describe {int(end[-1])} elements but the tensor has {size}")
    out = np.full(size, -1, dtype=np.int16)
    values = ~is_escape
    out[end[values] - 1] = (symbols[values] % value_count).astype(np.int16)
    return out


def huffman_lengths(frequencies: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Code length (bits) of each symbol for an optimal prefix code, limited to ``max_length``.

    Unused symbols get length 0; a single used symbol gets length 1. Deterministic: ties are
    broken by symbol index.
    """
    frequencies = np.asarray(frequencies, dtype=np.int64)
    lengths = np.zeros(frequencies.size, dtype=np.int64)
    used = np.flatnonzero(frequencies > 0)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    if used.size > (1 << max_length):
        raise CodecError(f"{used.size} symbols cannot be coded in {max_length} bits")
    # Plain Huffman tree; nodes >= used.size are internal.
    parent = np.zeros(2 * used.size - 1, dtype=np.int64)
    heap = [(int(frequencies[s]), i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    next_node = used.size
    while len(heap) > 1:
        f1, n1 = heapq.heappop(heap)
        f2, n2 = heapq.heappop(heap)
        parent[n1] = parent[n2] = next_node
        heapq.heappush(heap, (f1 + f2, next_node))
        next_node += 1
    depth = np.zeros(2 * used.size - 1, dtype=np.int64)
    for node in range(2 * used.size - 3, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    leaf_depth = depth[: used.size]
    if leaf_depth.max() > max_length:
        leaf_depth = _limit_lengths(leaf_depth, frequencies[used], max_length)
    lengths[used] = leaf_depth
    return lengths


def _limit_lengths(depths: np.ndarray, freqs: np.ndarray, max_length: int) -> np.ndarray:
    """Shorten an over-long Huffman code (JPEG Annex K.3), keeping it a complete prefix code."""
    count = np.bincount(depths, minlength=depths.max() + 1).astype(np.int64)
    for i in range(count.size - 1, max_length, -1):
        while count[i] > 0:
            j = i - 2
            while count[j] == 0:
                j -= 1
            count[i] -= 2
            count[i - 1] += 1
            count[j + 1] += 2
            count[j] -= 1
    # Most frequent symbols take the shortest codes.
    order = np.lexsort((np.arange(freqs.size), -freqs))
    new = np.zeros_like(depths)
    new[order] = np.repeat(np.arange(count.size), count)
    return new


def validate_lengths(lengths: np.ndarray) -> None:
    """Reject over-subscribed code tables (Kraft sum above 1) and lengths above 15."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > MAX_CODE_LENGTH):
        raise CodecError(f"code length outside 0..{MAX_CODE_LENGTH}")
    used = lengths[lengths > 0]
    kraft = int(np.sum(1 << (MAX_CODE_LENGTH - used)))
    if kraft > (1 << MAX_CODE_LENGTH):
        raise CodecError("over-subscribed Huffman code table (Kraft sum above 1)")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """DEFLATE-style canonical code of each symbol (uint32; meaningless where length is 0)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    validate_lengths(lengths)
    count = np.bincount(lengths, minlength=MAX_CODE_LENGTH + 1)
    count[0] = 0
    next_code = np.zeros(MAX_CODE_LENGTH + 2, dtype=np.int64)
    for length in range(1, MAX_CODE_LENGTH + 1):
        next_code[length] = (next_code[length - 1] + count[length - 1]) << 1
    codes = np.zeros(lengths.size, dtype=np.uint32)
    order = np.lexsort((np.arange(lengths.size), lengths))
    order = order[lengths[order] > 0]
    for symbol in order:
        length = lengths[symbol]
        codes[symbol] = next_code[length]
        next_code[length] += 1
    return codes


def encode_symbols(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """Pack the symbols' canonical codes MSB-first into bytes (zero padding bits)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return b""
    codes = canonical_codes(lengths).astype(np.int64)
    sym_len = np.asarray(lengths, dtype=np.int64)[symbols]
    if sym_len.min() == 0:
        raise CodecError("a token uses a symbol that has no code")
    sym_code = codes[symbols]
    start = np.cumsum(sym_len) - sym_len
    bits = np.zeros(int(sym_len.sum()), dtype=np.uint8)
    for k in range(MAX_CODE_LENGTH):
        has = sym_len > k
        bits[start[has] + k] = (sym_code[has] >> (sym_len[has] - 1 - k)) & 1
    return np.packbits(bits).tobytes()


def encoded_bits(frequencies: np.ndarray, lengths: np.ndarray) -> int:
    """Payload size in bits of a stream with these symbol frequencies and code lengths."""
    return int(np.dot(np.asarray(frequencies, np.int64), np.asarray(lengths, np.int64)))


# Bit positions whose code windows are computed at once while decoding.
_WINDOW_CHUNK = 1 << 16


def decode_symbols(payload: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` symbols; the payload must hold them exactly (padding bits zero)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        if payload:
            raise CodecError("payload is not empty but the tensor has no tokens")
        return np.zeros(0, dtype=np.int64)
    if not lengths.any():
        raise CodecError("tokens are declared but the code table is empty")
    if count > 8 * len(payload):
        raise CodecError(f"{count} tokens cannot fit in a {len(payload)}-byte payload")
    codes = canonical_codes(lengths)
    # Lookup table over 15-bit windows: every window prefix-matched by a code maps to it.
    table_symbol = np.full(1 << MAX_CODE_LENGTH, -1, dtype=np.int64)
    table_length = np.zeros(1 << MAX_CODE_LENGTH, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        shift = MAX_CODE_LENGTH - int(lengths[symbol])
        first = int(codes[symbol]) << shift
        table_symbol[first : first + (1 << shift)] = symbol
        table_length[first : first + (1 << shift)] = lengths[symbol]
    total_bits = 8 * len(payload)
    data = np.frombuffer(bytes(payload) + bytes(3), dtype=np.uint8).astype(np.uint32)

    def windows(start: int, stop: int) -> list[int]:
        """The 15-bit window starting at each bit position in [start, stop), from 3 bytes each
        (chunked: one window per payload bit at once would be ~100 bytes per bit)."""
        p = np.arange(start, stop, dtype=np.int64)
        i = p >> 3
        v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2]
        return ((v >> (9 - (p & 7)).astype(np.uint32)) & 0x7FFF).tolist()

    sym_of, len_of = table_symbol.tolist(), table_length.tolist()
    out = array.array("q", bytes(8 * count))  # C int64s: no object per token
    position = base = 0
    window_of: list[int] = []
    for t in range(count):
        if position >= total_bits:
            raise CodecError("payload ends before the last token")
        if position - base >= len(window_of):
            base = position
            window_of = windows(base, min(base + _WINDOW_CHUNK, total_bits))
        window = window_of[position - base]
        length = len_of[window]
        if length == 0:
            raise CodecError(f"bit pattern at payload bit {position} matches no code")
        out[t] = sym_of[window]
        position += length
    if position > total_bits:
        raise CodecError("payload ends inside the last token")
    if total_bits - position >= 8:
        raise CodecError("payload is longer than its tokens")
    if position < total_bits and int(data[position >> 3]) & (0xFF >> (position & 7)):
        raise CodecError("payload padding bits are not zero")
    return np.frombuffer(out, dtype=np.int64)


def entropy_bits(symbols: np.ndarray) -> float:
    """Empirical entropy of a symbol stream, in bits for the whole stream."""
    _, counts = np.unique(np.asarray(symbols), return_counts=True)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())
