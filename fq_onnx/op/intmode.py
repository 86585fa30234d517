"""Integer mode of ShiftConv: B-bit activations, integer weights, exact int32 sums.

docs/SHIFTCONV.md ("Integer mode") defines the arithmetic; this module is its numpy reference
(bit-exact with the C++ kernel: custom_ops/src/op/int_op.*, plan/int_mode.*,
kernels/int_kernel*) and the accumulator bound. Choosing each
node's power-of-two activation scale on calibration data is fq_onnx.act_scales.

    q   = clamp(round_half_even(x * 2^-a), qmin, qmax)        int
    W   = u(v) * 2^-m_r = s*mult*2^(x-m_r) + sigma_c*2^(p_c-m_r)  int (per row r; mult = 1,
          x = e-b without a mantissa; else mult*2^x = (2^M + k)*2^(e-b-M), mult odd)
    acc = sum q*W                                              exact, |acc| < 2^31 by the bound
    Y   = act(float32(acc) * (alpha_r * 2^(a+m_r)) + B)        two float32 roundings
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fq_onnx.format import fmt
from fq_onnx.op import geometry

BITS_RANGE = (2, 8)  # what the op accepts
SCALE_LOG2_RANGE = (-64, 63)  # keeps x * 2^-a clear of denormal effects (SHIFTCONV.md, 1.)
MAX_SHIFT = 30  # a larger shift alone overflows int32 for any act_bits
INT32_MAX = 2**31 - 1
ATTRS = ("act_bits", "act_scale_log2", "act_signed")


class IntModeError(ValueError):
    """A node's integer-mode attributes or weight break a rule of SHIFTCONV.md."""


@dataclass(frozen=True)
class ActQuant:
    """The input quantizer of one node: ``bits``, scale ``2^scale_log2``, signed or not."""

    bits: int
    scale_log2: int
    signed: bool

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


def act_quant(bits, scale_log2, signed) -> ActQuant:
    """Check untrusted attribute values (the C++ kernel applies the same rules)."""
    for name, value in zip(ATTRS, (bits, scale_log2, signed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise IntModeError(f"{name} must be an integer attribute")
    if bits is None or scale_log2 is None or signed is None:
        missing = [n for n, v in zip(ATTRS, (bits, scale_log2, signed)) if v is None]
        raise IntModeError(f"integer mode needs {', '.join(missing)}")
    if not BITS_RANGE[0] <= int(bits) <= BITS_RANGE[1]:
        raise IntModeError(f"act_bits {bits} outside {BITS_RANGE[0]}..{BITS_RANGE[1]}")
    if not SCALE_LOG2_RANGE[0] <= int(scale_log2) <= SCALE_LOG2_RANGE[1]:
        raise IntModeError(f"act_scale_log2 {scale_log2} outside {SCALE_LOG2_RANGE[0]}..{SCALE_LOG2_RANGE[1]}")
    if int(signed) not in (0, 1):
        raise IntModeError(f"act_signed must be 0 or 1, got {signed}")
    return ActQuant(int(bits), int(scale_log2), bool(int(signed)))


def quantize(x: np.ndarray, act: ActQuant) -> np.ndarray:
    """SHIFTCONV.md 1.: ``q`` (int32) of float32 activations ``x``."""
    with np.errstate(over="ignore", under="ignore"):  # +-inf is clamped, a denormal rounds to 0
        v = np.asarray(x, dtype=np.float32) * np.float32(2.0 ** -act.scale_log2)
    v = np.where(np.isnan(v), np.float32(0.0), v)
    v = np.clip(v, np.float32(act.qmin), np.float32(act.qmax))
    return np.rint(v).astype(np.int32)  # rint: round half to even


# --- integer weights -------------------------------------------------------------------------

@dataclass(frozen=True)
class CodeTerms:
    """Per code v of a level set: ``u(v) = sign*mult*2^exp + csign*2^cexp`` exactly."""

    mult: np.ndarray  # odd: 2^m + k without its trailing zero bits (1 when m = 0)
    exp: np.ndarray  # e - b - m + those trailing zero bits (e - b when m = 0)
    sign: np.ndarray  # +-1
    cexp: np.ndarray  # p_c (meaningless where csign == 0)
    csign: np.ndarray  # sigma_c: -1, 0, +1
    active: np.ndarray  # u(v) != 0


def _pow2(value: float, index: int) -> tuple[int, int]:
    """``(sigma, p)`` with ``value = sigma * 2^p`` exactly (``(0, 0)`` for zero)."""
    v = np.float32(value)
    if v == 0:
        return 0, 0
    mantissa, exponent = np.frexp(v)
    if abs(float(mantissa)) != 0.5:
        raise IntModeError(f"integer mode needs power-of-two centres, centre{index} = {float(v):.9g} is not one")
    return (1 if v > 0 else -1), int(exponent) - 1


def code_terms(params: fmt.QuantParams) -> CodeTerms:
    fmt.check_params(params)
    v = np.arange(params.value_count)
    m = params.mantissa
    k = params.exponent_bits + m  # bits below the sign
    mult = (1 << m) + (v & ((1 << m) - 1))
    exp = ((v & ((1 << k) - 1)) >> m) - params.b - m
    for _ in range(m):  # strip trailing zero bits: mult odd, so m = 0 is exactly 2^(e-b)
        even = mult % 2 == 0
        mult, exp = np.where(even, mult // 2, mult), np.where(even, exp + 1, exp)
    sign = np.where((v >> k) & 1, -1, 1)
    if params.mode == fmt.MODE_FOCUSED:
        centres = [_pow2(params.centre0, 0), _pow2(params.centre1, 1)]
        component = v >> (k + 1)
        csign = np.array([centres[c][0] for c in component])
        cexp = np.array([centres[c][1] for c in component])
    else:
        csign, cexp = np.zeros_like(v), np.zeros_like(v)
    active = ~((mult == 1) & (csign == -sign) & (cexp == exp))  # a centre is a power of two
    return CodeTerms(mult.astype(np.int64), exp.astype(np.int64), sign.astype(np.int64), cexp.astype(np.int64),
                     csign.astype(np.int64), active)


@dataclass(frozen=True)
class IntWeight:
    """A decoded tensor as integers: ``weight[r, ...] = u(code) * 2^-base[r]`` (0 where pruned)."""

    weight: np.ndarray  # int64, the blob's shape
    base: np.ndarray  # int64 [rows], m_r (0 for a row without active codes)
    nonempty: np.ndarray  # bool [rows]
    alphas: np.ndarray  # float32 [rows]
    positive: np.ndarray  # int64 [rows], P_r: sum of the row's positive W
    negative: np.ndarray  # int64 [rows], N_r: sum of the row's |negative W|


def integer_weight(decoded: fmt.Decoded) -> IntWeight:
    """SHIFTCONV.md 2.: the integer weights of a decoded blob. Raises IntModeError when a
    centre is not a power of two or a shift exceeds MAX_SHIFT (an overflow)."""
    terms = code_terms(decoded.params)
    rows = decoded.shape[0]
    values = terms.exp.size
    codes = decoded.codes.reshape(rows, -1).astype(np.int64)
    row_of = np.broadcast_to(np.arange(rows)[:, None], codes.shape)
    coded = codes >= 0
    counts = np.bincount(row_of[coded] * values + codes[coded], minlength=rows * values).reshape(rows, values)
    used = (counts > 0) & terms.active[None, :]
    low = np.where(terms.csign != 0, np.minimum(terms.exp, terms.cexp), terms.exp)
    big = np.iinfo(np.int64).max
    base_all = np.where(used, low[None, :], big).min(axis=1)
    nonempty = base_all != big
    base = np.where(nonempty, base_all, 0)
    shift = terms.exp[None, :] - base[:, None]
    cshift = terms.cexp[None, :] - base[:, None]
    # the exponent term's top bit: shift + bit length of mult - 1 (the shift itself for mult 1)
    top = shift + np.floor(np.log2(terms.mult)).astype(np.int64)[None, :]
    worst = np.where(used, np.maximum(top, np.where(terms.csign != 0, cshift, 0)), 0)
    if worst.size and worst.max() > MAX_SHIFT:
        r = int(np.argmax(worst.max(axis=1)))
        raise IntModeError(f"row {r} needs a shift of {int(worst[r].max())} bits (above {MAX_SHIFT}): "
                           "its levels span too wide a range for int32")
    table = np.where(used, terms.sign * terms.mult * (np.int64(1) << np.clip(shift, 0, MAX_SHIFT))
                     + terms.csign * (np.int64(1) << np.clip(cshift, 0, MAX_SHIFT)), 0)
    weight = np.where(coded, np.take_along_axis(table, np.maximum(codes, 0), axis=1), 0)
    alphas = np.broadcast_to(np.asarray(decoded.alphas, np.float32), (rows,)) if decoded.alphas.size == 1 \
        else np.asarray(decoded.alphas, np.float32)
    positive = (counts * np.maximum(table, 0)).sum(axis=1)  # <= 2^28 elements * 2^32: fits int64
    negative = (counts * np.maximum(-table, 0)).sum(axis=1)
    return IntWeight(weight.reshape(decoded.shape), base, nonempty, alphas.copy(), positive, negative)


def accumulator_range(iw: IntWeight, act: ActQuant) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest and the (negated) smallest ``acc`` any input in range gives:
    ``qmax*P + |qmin|*N`` and ``|qmin|*P + qmax*N`` (Python ints, exact)."""
    hi = [act.qmax * int(p) + -act.qmin * int(n) for p, n in zip(iw.positive, iw.negative)]
    lo = [-act.qmin * int(p) + act.qmax * int(n) for p, n in zip(iw.positive, iw.negative)]
    return np.array(hi, dtype=object), np.array(lo, dtype=object)


def check_bound(iw: IntWeight, act: ActQuant) -> None:
    """SHIFTCONV.md 4.: raise IntModeError unless no input in range can overflow int32."""
    hi, lo = accumulator_range(iw, act)
    for r, (h, l) in enumerate(zip(hi, lo)):
        if h > INT32_MAX or l > INT32_MAX + 1:
            raise IntModeError(
                f"row {r}: {act.bits}-bit {'signed' if act.signed else 'unsigned'} inputs can drive the accumulator "
                f"to {h} or -{l}, beyond int32 (fan-in {iw.weight[r].size}, max |W| {int(np.abs(iw.weight[r]).max())})")


def output_scales(iw: IntWeight, act: ActQuant) -> np.ndarray:
    """``s_r = alpha_r * 2^(a + m_r)`` (float32, exact), 0 for rows without active codes."""
    with np.errstate(over="ignore", under="ignore"):
        s = np.ldexp(iw.alphas.astype(np.float32), (act.scale_log2 + iw.base).astype(np.int32)).astype(np.float32)
    bad = iw.nonempty & ~(np.isfinite(s) & (np.abs(s) >= np.finfo(np.float32).tiny))
    if bad.any():
        r = int(np.argmax(bad))
        raise IntModeError(f"row {r}: output scale alpha * 2^({act.scale_log2} + {int(iw.base[r])}) is not a "
                           "normal float32")
    return np.where(iw.nonempty, s, np.float32(0.0)).astype(np.float32)


@dataclass(frozen=True)
class IntLayer:
    """Everything a node's integer mode needs, checked once."""

    act: ActQuant
    weight: IntWeight
    scales: np.ndarray  # float32 [rows]


def prepare(blob: bytes, act: ActQuant) -> IntLayer:
    """Decode ``blob`` and check it for integer mode with ``act`` (bound and scales)."""
    iw = integer_weight(fmt.decode(blob))
    check_bound(iw, act)
    return IntLayer(act, iw, output_scales(iw, act))


# --- the integer forward pass (the reference) ------------------------------------------------

def conv_accumulate(q: np.ndarray, w: np.ndarray, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                    pads=None, strides=None) -> np.ndarray:
    """Exact int64 ONNX Conv of integer input ``q`` [N, C, (H,) W] with integer weight ``w``."""
    spatial = w.ndim - 2
    if q.ndim != w.ndim or spatial not in (1, 2):
        raise IntModeError(f"input rank {q.ndim} does not match weight rank {w.ndim}")
    group = int(group or 1)
    attrs = {"auto_pad": auto_pad or "NOTSET", "group": group}
    for key, value in (("dilations", dilations), ("pads", pads), ("strides", strides)):
        if value is not None:
            attrs[key] = [int(v) for v in value]
    if kernel_shape is not None and list(kernel_shape) != list(w.shape[2:]):
        raise IntModeError(f"kernel_shape {list(kernel_shape)} disagrees with the weight's {list(w.shape[2:])}")
    q, kernel, attrs = geometry.lift_1d(q, tuple(w.shape[2:]), attrs)
    w = w.reshape(w.shape[:2] + kernel)
    n, c = q.shape[:2]
    m, cg = w.shape[:2]
    if c != cg * group or m % group:
        raise IntModeError(f"input has {c} channels, the weight expects {cg * group} ({cg} x group {group})")
    try:
        windows = geometry.windows(q.astype(np.int64), kernel, attrs)
    except ValueError as exc:
        raise IntModeError(str(exc)) from None
    mg = m // group
    out = np.empty((n, m) + windows.shape[2:4], dtype=np.int64)
    for g in range(group):
        part = np.tensordot(windows[:, g * cg:(g + 1) * cg], w[g * mg:(g + 1) * mg].astype(np.int64),
                            axes=([1, 4, 5], [1, 2, 3]))  # [N, OH, OW, Mg], exact in int64
        out[:, g * mg:(g + 1) * mg] = part.transpose(0, 3, 1, 2)
    return out[:, :, 0, :] if spatial == 1 else out


def dense_accumulate(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    if q.shape[-1] != w.shape[1]:
        raise IntModeError(f"input has {q.shape[-1]} features, weight expects {w.shape[1]}")
    return (q.reshape(-1, w.shape[1]).astype(np.int64) @ w.T.astype(np.int64)).reshape(q.shape[:-1] + (w.shape[0],))


def finish(acc: np.ndarray, scales: np.ndarray, bias: np.ndarray | None, axis: int, activation: str = "none",
           clip_min=None, clip_max=None) -> np.ndarray:
    """SHIFTCONV.md 3.: ``act(float32(acc) * s_r + B_r)`` with the row axis ``axis`` of acc."""
    if acc.size and (acc.max() > INT32_MAX or acc.min() < -INT32_MAX - 1):
        raise IntModeError("accumulator outside int32 (the bound check should have refused this node)")
    shape = [1] * acc.ndim
    shape[axis] = -1
    y = acc.astype(np.int32).astype(np.float32) * scales.astype(np.float32).reshape(shape)
    y = y + (np.zeros(scales.shape, np.float32) if bias is None else np.asarray(bias, np.float32)).reshape(shape)
    if activation == "relu":
        y = np.maximum(y, np.float32(0.0))
    elif activation == "clip":
        lo = np.float32(-np.inf if clip_min is None else clip_min)
        hi = np.float32(np.inf if clip_max is None else clip_max)
        y = np.minimum(np.maximum(y, lo), hi)
    elif activation not in (None, "none"):
        raise IntModeError(f"unknown activation {activation!r}")
    return y.astype(np.float32)


def forward(layer: IntLayer, x: np.ndarray, bias=None, kind="conv", activation="none", clip_min=None,
            clip_max=None, **conv_attrs) -> np.ndarray:
    """The node's output in integer mode (the reference the C++ kernel is tested against)."""
    q = quantize(x, layer.act)
    if bias is not None and np.asarray(bias).shape != (layer.weight.weight.shape[0],):
        raise IntModeError(f"bias has shape {list(np.asarray(bias).shape)}, expected [{layer.weight.weight.shape[0]}]")
    if kind == "dense":
        if layer.weight.weight.ndim != 2:
            raise IntModeError("a dense weight must have rank 2")
        acc = dense_accumulate(q, layer.weight.weight)
        return finish(acc, layer.scales, bias, acc.ndim - 1, activation, clip_min, clip_max)
    if kind != "conv":
        raise IntModeError(f"unknown kind {kind!r}")
    acc = conv_accumulate(q, layer.weight.weight, **conv_attrs)
    return finish(acc, layer.scales, bias, 1, activation, clip_min, clip_max)


def node_act(attrs: dict) -> dict | None:
    """The ``act`` entry of a report row, read from a ShiftConv node's attributes."""
    if "act_bits" in attrs:
        entry = {"bits": int(attrs["act_bits"]), "scale_log2": int(attrs.get("act_scale_log2", 0)),
                 "signed": bool(int(attrs.get("act_signed", 1)))}
        if "act_clip_rate" in attrs:
            entry["clip_rate"] = float(attrs["act_clip_rate"])
        return entry
    if "act_fallback" in attrs:
        reason = attrs["act_fallback"]
        return {"fallback": reason.decode() if isinstance(reason, bytes) else str(reason)}
    return None


def describe(act: dict | None) -> str:
    """Short text of a report row's ``act`` entry: ``u8 2^-5``, ``s8 2^-3``, ``float``."""
    if not act:
        return "float"
    if "fallback" in act:
        return "float*"
    return f"{'s' if act['signed'] else 'u'}{act['bits']} 2^{act['scale_log2']}"


def __getattr__(name: str):
    # The activation-scale calibration moved to fq_onnx.calibration.act_scales; its old names still resolve.
    if name in ("ActStats", "assign_scales", "nonnegative", "METHODS", "PERCENTILE", "MSE_CANDIDATES",
                "SAMPLE_VALUES"):
        from fq_onnx.calibration import act_scales

        return getattr(act_scales, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
