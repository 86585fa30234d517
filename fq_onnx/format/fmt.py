"""The byte layout of one compressed weight tensor: the Python half of docs/FORMAT.md.

``encode`` writes and ``decode`` reads exactly the layout documented there; the C++ decoder in
``custom_ops/`` implements the same rules and is tested against this module.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from fq_onnx.format import codec

MAGIC = b"FQW1"
VERSION = 1  # written when the mantissa is 0: every such blob is byte-identical to before version 2
VERSION_MANTISSA = 2  # written when the mantissa is >= 1 (byte 10 holds it)
VERSIONS = (VERSION, VERSION_MANTISSA)
MODE_SHIFT = 0
MODE_FOCUSED = 1
MODE_NAMES = {MODE_SHIFT: "shift", MODE_FOCUSED: "FQ"}
MAX_ELEMENTS = 1 << 28
MAX_NDIM = 8
# Longest zero runs the encoder tries per token; it keeps whichever gives the smallest blob.
RUN_MAX_CHOICES = (0, 1, 3, 7, 15, 31, 63)

_PREFIX = struct.Struct("<4sBBBBBBBB")  # magic, version, mode, bits, ndim, block, run_max, mantissa, reserved
_PARAMS = struct.Struct("<ffiII")  # centre0, centre1, b, tokens, payload bytes (after the scales)
_CRC = struct.Struct("<I")


class FormatError(ValueError):
    """A compressed tensor breaks a rule of docs/FORMAT.md; the message names the rule."""


@dataclass(frozen=True)
class QuantParams:
    """How codes map to weights: see ``levels``. ``bits`` counts the bits of one nonzero code,
    ``mantissa`` (m) of them refine each power of two into 2^m steps (0: powers of two only)."""

    mode: int
    bits: int
    alpha: float
    centre0: float = 0.0
    centre1: float = 0.0
    b: int = 0
    mantissa: int = 0

    @property
    def exponent_bits(self) -> int:
        return self.bits - 1 - self.mantissa if self.mode == MODE_SHIFT else self.bits - 2 - self.mantissa

    @property
    def value_count(self) -> int:
        return 1 << self.bits


@dataclass(frozen=True)
class Decoded:
    """A decoded tensor: parameters, shape, codes (int16, -1 where pruned) and scales.

    ``alphas`` holds one float32 scale, or one per output row; ``params.alpha`` is the first.
    """

    params: QuantParams
    shape: tuple[int, ...]
    codes: np.ndarray
    block: int
    run_max: int
    tokens: int
    alphas: np.ndarray

    @property
    def nonzeros(self) -> int:
        return int(np.count_nonzero(self.codes >= 0))


def check_params(params: QuantParams) -> None:
    """Raise FormatError unless the parameters are ones a decoder accepts."""
    if params.mode not in MODE_NAMES:
        raise FormatError(f"unknown quantizer mode {params.mode}")
    low = 2 if params.mode == MODE_SHIFT else 3
    if not low <= params.bits <= 8:
        raise FormatError(f"{MODE_NAMES[params.mode]} mode needs {low}..8 bits, got {params.bits}")
    if not 0 <= params.mantissa <= params.bits - low:  # at least one exponent bit
        raise FormatError(f"mantissa {params.mantissa} leaves no exponent bit in {params.bits}-bit "
                          f"{MODE_NAMES[params.mode]} mode (needs 0..{params.bits - low})")
    values = np.array([params.alpha, params.centre0, params.centre1], dtype=np.float32)
    if not np.all(np.isfinite(values)) or not values[0] > 0:
        raise FormatError("alpha must be finite and positive and the centres finite")
    if params.mode == MODE_SHIFT and (values[1] != 0 or values[2] != 0):
        raise FormatError("shift mode has no centres: both must be 0")
    e_max = (1 << params.exponent_bits) - 1
    if -params.b < -126 or e_max - params.b > 127:
        raise FormatError(f"exponent offset b={params.b} puts level exponents outside [-126, 127]")


def levels(params: QuantParams) -> np.ndarray:
    """The float32 weight of every code, computed step by step exactly as FORMAT.md defines."""
    check_params(params)
    v = np.arange(params.value_count)
    m = params.mantissa
    k = params.exponent_bits + m  # bits below the sign: exponent, then the m mantissa bits
    e = (v & ((1 << k) - 1)) >> m
    # 1 + j/2^m and its product by 2^(e-b) are exact in float32 (m <= 6, e - b in [-126, 127])
    mant = ((1 << m) + (v & ((1 << m) - 1))).astype(np.float32) * np.float32(2.0 ** -m)
    negative = ((v >> k) & 1).astype(bool)
    t = np.ldexp(mant, (e - params.b).astype(np.int32)).astype(np.float32)
    signed = np.where(negative, -t, t).astype(np.float32)
    if params.mode == MODE_FOCUSED:
        centres = np.array([params.centre0, params.centre1], dtype=np.float32)[v >> (k + 1)]
        with np.errstate(over="ignore"):
            signed = (centres + signed).astype(np.float32)
    with np.errstate(over="ignore"):
        out = (np.float32(params.alpha) * signed).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise FormatError("a quantization level overflows float32")
    return out


def row_alphas(alphas, params: QuantParams, rows: int) -> np.ndarray:
    """The scales as stored: ``[params.alpha]``, or ``alphas`` (one per row) checked."""
    if alphas is None:
        return np.array([params.alpha], dtype=np.float32)
    alphas = np.asarray(alphas, dtype=np.float32).reshape(-1)
    if alphas.size != rows:
        raise FormatError(f"{alphas.size} scales for a tensor of {rows} rows: give one per row")
    if not np.all(np.isfinite(alphas)) or not np.all(alphas > 0):
        raise FormatError("alpha must be finite and positive and the centres finite")
    # levels() of every row at once: its last step is one float32 product by alpha
    unit = levels(replace(params, alpha=1.0))
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(alphas[:, None] * unit[None, :])):
            raise FormatError("a quantization level overflows float32")
    return alphas


def encode(codes: np.ndarray, params: QuantParams, block: int = 1, run_max: int | None = None,
           alphas: np.ndarray | None = None) -> bytes:
    """Serialize a tensor of codes (-1 = pruned zero) with its parameters into one blob.

    ``alphas`` gives one scale per output row (axis 0) instead of ``params.alpha``.
    ``run_max`` fixes the longest zero run per token; by default every choice in
    RUN_MAX_CHOICES is tried and the smallest blob wins.
    """
    codes, scales = _checked(codes, params, block, alphas)
    _, r, symbols, lengths = _tokens(codes, params, run_max)
    payload = codec.encode_symbols(symbols, lengths)
    table = _pack_nibbles(lengths)
    version = VERSION_MANTISSA if params.mantissa else VERSION
    head = _PREFIX.pack(MAGIC, version, params.mode, params.bits, codes.ndim, block, r, params.mantissa, 0)
    head += struct.pack(f"<{codes.ndim}I", *codes.shape)
    head += struct.pack("<I", scales.size) + scales.astype("<f4").tobytes()
    head += _PARAMS.pack(params.centre0, params.centre1, params.b, symbols.size, len(payload))
    body = head + table + payload
    return body + _CRC.pack(zlib.crc32(body))


def encoded_size(codes: np.ndarray, params: QuantParams, block: int = 1, run_max: int | None = None,
                 alphas: np.ndarray | None = None) -> int:
    """``len(encode(...))`` without writing the payload (the allocator sizes ~45 settings a layer)."""
    codes, scales = _checked(codes, params, block, alphas)
    nbytes = _tokens(codes, params, run_max)[0]  # code length table and payload
    return _PREFIX.size + 4 * codes.ndim + 4 + 4 * scales.size + _PARAMS.size + nbytes + _CRC.size


def _checked(codes, params: QuantParams, block: int, alphas) -> tuple[np.ndarray, np.ndarray]:
    """The codes as an array and the scales to store, after every check ``encode`` makes."""
    codes = np.asarray(codes)
    check_params(params)
    scales = row_alphas(alphas, params, codes.shape[0] if codes.ndim else 1)
    if not 1 <= codes.ndim <= MAX_NDIM or codes.size == 0 or codes.size > MAX_ELEMENTS:
        raise FormatError(f"cannot store a tensor of shape {codes.shape}")
    if codes.min() < -1 or codes.max() >= params.value_count:
        raise FormatError(f"codes must be -1 or in [0, {params.value_count})")
    if not 1 <= block <= 255:
        raise FormatError("block must be in 1..255")
    return codes, scales


def _tokens(codes: np.ndarray, params: QuantParams, run_max: int | None):
    """The smallest tokenisation: ``(table + payload bytes, run_max, symbols, code lengths)``."""
    flat = codes.ravel().astype(np.int64)
    choices = RUN_MAX_CHOICES if run_max is None else (run_max,)
    candidates = []
    for index, r in enumerate(choices):
        symbols = codec.tokenize(flat, params.value_count, r)
        size = codec.alphabet_size(params.value_count, r)
        freqs = np.bincount(symbols, minlength=size)
        candidates.append((_size_bound(freqs, size), index, r, symbols, freqs, size))
    # Building a Huffman code is the slow part: try the choices from the smallest lower bound and
    # stop once no bound can beat (or tie with an earlier choice of) the best size: same result.
    best = None
    for bound, index, r, symbols, freqs, size in sorted(candidates, key=lambda c: (c[0], c[1])):
        if best is not None and (bound, index) > best[:2]:
            break
        lengths = codec.huffman_lengths(freqs)
        nbytes = (size + 1) // 2 + (codec.encoded_bits(freqs, lengths) + 7) // 8
        if best is None or (nbytes, index) < best[:2]:
            best = (nbytes, index, r, symbols, lengths)
    nbytes, _, r, symbols, lengths = best
    return nbytes, r, symbols, lengths


def _size_bound(freqs: np.ndarray, size: int) -> int:
    """A lower bound on ``encode``'s table and payload bytes for these symbol frequencies: no
    prefix code beats the entropy (rounded down, with a margin for float error)."""
    used = freqs[freqs > 0].astype(np.float64)
    total = used.sum()
    bits = float(-(used * np.log2(used / total)).sum()) if used.size > 1 else 0.0
    return (size + 1) // 2 + int(bits * (1 - 1e-9)) // 8


def _pack_nibbles(lengths: np.ndarray) -> bytes:
    lengths = np.asarray(lengths, dtype=np.uint8)
    if lengths.size % 2:
        lengths = np.append(lengths, np.uint8(0))
    return (lengths[0::2] | (lengths[1::2] << 4)).astype(np.uint8).tobytes()


def _unpack_nibbles(data: bytes, count: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(raw.size * 2, dtype=np.int64)
    out[0::2] = raw & 0x0F
    out[1::2] = raw >> 4
    if out[count:].any():
        raise FormatError("unused high nibble of the code length table is not 0")
    return out[:count]


@dataclass(frozen=True)
class Header:
    """Everything before the code table, plus the blob's section sizes (bytes)."""

    params: QuantParams
    alphas: np.ndarray
    shape: tuple[int, ...]
    block: int
    run_max: int
    tokens: int
    payload_bytes: int
    table_offset: int
    table_bytes: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def read_header(blob: bytes) -> Header:
    """Parse and check the fixed-size fields, the CRC and the total length; no payload decoding."""
    blob = bytes(blob)
    if len(blob) < _PREFIX.size:
        raise FormatError(f"blob of {len(blob)} bytes is too short for a header")
    magic, version, mode, bits, ndim, block, run_max, mantissa, reserved = _PREFIX.unpack_from(blob, 0)
    if magic != MAGIC:
        raise FormatError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version not in VERSIONS:
        raise FormatError(f"format version {version} is not supported (this build reads 1 and 2)")
    if not 1 <= ndim <= MAX_NDIM:
        raise FormatError(f"ndim {ndim} outside 1..{MAX_NDIM}")
    if block < 1:
        raise FormatError("block must be >= 1")
    if reserved != 0 or (version == VERSION and mantissa != 0):
        raise FormatError("reserved field is not 0")
    if version == VERSION_MANTISSA and mantissa == 0:
        raise FormatError("a version 2 blob must have mantissa >= 1 (mantissa 0 is written as version 1)")
    offset = _PREFIX.size
    if len(blob) < offset + 4 * ndim + 4:
        raise FormatError("blob ends inside the header")
    shape = struct.unpack_from(f"<{ndim}I", blob, offset)
    offset += 4 * ndim
    (scale_count,) = struct.unpack_from("<I", blob, offset)
    offset += 4
    size = 1
    for dim in shape:
        if dim < 1:
            raise FormatError(f"dimension {dim} in shape {shape} is not positive")
        size *= dim
        if size > MAX_ELEMENTS:
            raise FormatError(f"shape {shape} exceeds the limit of {MAX_ELEMENTS} elements")
    if scale_count not in (1, shape[0]):
        raise FormatError(f"scale count A={scale_count} must be 1 or dims[0]={shape[0]} (one per row)")
    if len(blob) < offset + 4 * scale_count + _PARAMS.size:
        raise FormatError("blob ends inside the scales or the header")
    alphas = np.frombuffer(blob, dtype="<f4", count=scale_count, offset=offset).astype(np.float32)
    offset += 4 * scale_count
    bad = np.flatnonzero(~(np.isfinite(alphas) & (alphas > 0)))
    if bad.size:  # named as the C++ decoder names it
        which = "alpha" if scale_count == 1 else f"alpha[{int(bad[0])}]"
        raise FormatError(f"{which} must be finite and positive, got {alphas[bad[0]]}")
    c0, c1, b, tokens, payload_bytes = _PARAMS.unpack_from(blob, offset)
    offset += _PARAMS.size
    if not (np.isfinite(c0) and np.isfinite(c1)):
        raise FormatError("the centres must be finite")
    params = QuantParams(mode, bits, float(alphas[0]), c0, c1, b, mantissa)
    check_params(params)
    levels(params)
    if scale_count > 1:
        row_alphas(alphas, params, shape[0])
    if tokens > size:
        raise FormatError(f"{tokens} tokens for a tensor of {size} elements")
    table_bytes = (codec.alphabet_size(params.value_count, run_max) + 1) // 2
    expected = offset + table_bytes + payload_bytes + _CRC.size
    if len(blob) != expected:
        raise FormatError(f"blob is {len(blob)} bytes but its header declares {expected}")
    (crc,) = _CRC.unpack_from(blob, len(blob) - _CRC.size)
    if crc != zlib.crc32(blob[: -_CRC.size]):
        raise FormatError("CRC-32 mismatch: the compressed tensor is corrupted")
    return Header(params, alphas, tuple(shape), block, run_max, tokens, payload_bytes, offset, table_bytes)


def decode(blob: bytes) -> Decoded:
    """Parse and fully validate a blob; return its codes."""
    blob = bytes(blob)
    header = read_header(blob)
    params = header.params
    size_symbols = codec.alphabet_size(params.value_count, header.run_max)
    start = header.table_offset
    table = blob[start : start + header.table_bytes]
    payload = blob[start + header.table_bytes : start + header.table_bytes + header.payload_bytes]
    try:
        lengths = _unpack_nibbles(table, size_symbols)
        symbols = codec.decode_symbols(payload, lengths, header.tokens)
        codes = codec.detokenize(symbols, params.value_count, header.run_max, header.size)
    except codec.CodecError as exc:
        raise FormatError(str(exc)) from None
    return Decoded(params, header.shape, codes.reshape(header.shape), header.block, header.run_max, header.tokens,
                   header.alphas)


def unit_levels(params: QuantParams) -> np.ndarray:
    """``u(v)``: the float32 levels before the scale multiplication (FORMAT.md, step 2)."""
    return levels(replace(params, alpha=1.0))


def dequantize_codes(codes: np.ndarray, params: QuantParams, alphas: np.ndarray | None = None) -> np.ndarray:
    """Float32 weights of a code array (-1 -> +0.0), with ``params.alpha`` or the given scales
    (one, or one per row). Given scales always win: a tensor of one row has one per-row scale,
    which is not ``params.alpha`` (the level set's) until it is stored."""
    if alphas is None:
        table = np.append(levels(params), np.float32(0.0))
        return table[np.where(codes < 0, params.value_count, codes)]
    u = np.append(unit_levels(params), np.float32(0.0))[np.where(codes < 0, params.value_count, codes)]
    scales = np.asarray(alphas, dtype=np.float32).reshape((-1,) + (1,) * (codes.ndim - 1))
    return (scales * u).astype(np.float32)


def dequantize(blob: bytes) -> np.ndarray:
    """Decode a blob to its float32 weight tensor, bit for bit as FORMAT.md defines."""
    decoded = decode(blob)
    return dequantize_codes(decoded.codes, decoded.params, decoded.alphas)
