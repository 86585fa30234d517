"""Run models compressed by fq-onnx in onnxruntime: the custom-op library and sessions that use it.

The runtime-only package (``fq-onnx-runtime``): onnxruntime, numpy and onnx, nothing of the
converter (no scikit-learn or typer). onnx is there to edit the graph in memory when a session
is created (:mod:`fq_onnx_runtime.dense_graph`: dense layers become onnxruntime's own nodes) and
is imported only then.
``libfq_onnx_ops.so`` (built from ``custom_ops/`` by ``pip install ./runtime``, or shipped in
the wheel) implements the ``fq_onnx.ShiftConv`` op of docs/SHIFTCONV.md. :func:`session` is the
one way the converter (``fq_onnx.runtime`` is this module) and users should open a compressed
model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import onnxruntime as ort

__version__ = "0.1.0"
__all__ = [
    "library_path", "session_options", "session", "register", "enable", "disable", "prepare_model",
    "LibraryNotFoundError",
]

LIBRARY_NAME = "libfq_onnx_ops.so"
#: Environment variable that points at another build of the library (tests, development).
LIBRARY_ENV = "FQ_ONNX_OPS_LIBRARY"
#: Environment variable read when a kernel is created: auto | scalar | avx2 | avx512.
KERNEL_ENV = "FQ_ONNX_KERNEL"
#: Session config entry with the same meaning; takes precedence over the environment variable.
KERNEL_CONFIG_KEY = "fq_onnx.kernel"
KERNEL_CHOICES = ("auto", "scalar", "avx2", "avx512")
#: Session config entry (pass it through ``config=``) choosing who runs conv layers: ``auto``
#: (onnxruntime's own kernel where a layer is too dense for ours to win), ``own``, ``ort``,
#: ``nchw``, ``nchwc``; ``$FQ_ONNX_DENSE`` is the default (docs/PERFORMANCE.md, "Dense layers").
DENSE_CONFIG_KEY = "fq_onnx.dense"
DENSE_ENV = "FQ_ONNX_DENSE"
DENSE_CHOICES = ("auto", "own", "ort", "nchw", "nchwc")
#: Session config entry (or ``session(dense_graph=...)``) choosing which float ShiftConv layers
#: become onnxruntime's own Conv/Gemm/MatMul nodes, weights decoded in memory, when a session is
#: created by :func:`session` or under :func:`enable`: ``auto`` (the layers our kernel would not
#: win on), ``all``, ``off``; ``$FQ_ONNX_DENSE_GRAPH`` is the default. Setting ``fq_onnx.dense``
#: to anything but ``auto`` turns it off unless this is set too (forcing a kernel inside
#: ShiftConv means measuring ShiftConv). docs/PERFORMANCE.md, "Dense layers in onnxruntime's graph".
DENSE_GRAPH_CONFIG_KEY = "fq_onnx.dense_graph"
DENSE_GRAPH_ENV = "FQ_ONNX_DENSE_GRAPH"
#: Session config entry telling the library the session's intra-op thread count, which a custom
#: op cannot query: with more than one thread a conv splits its tiles into one run per thread.
#: session_options sets it from ``intra_op_num_threads``; without it the library assumes one
#: thread per CPU the process may use.
THREADS_CONFIG_KEY = "fq_onnx.threads"
#: Session config entry marking options that already carry the library: registering it twice on
#: one SessionOptions makes onnxruntime refuse the session ("Domain already set in registry").
REGISTERED_CONFIG_KEY = "fq_onnx.registered"
#: Oldest onnxruntime whose C API (version 21) the library is built against.
MIN_ORT_VERSION = (1, 21)


class LibraryNotFoundError(FileNotFoundError):
    """The custom-op library is not where it should be."""


def library_path() -> str:
    """Absolute path of ``libfq_onnx_ops.so``: ``$FQ_ONNX_OPS_LIBRARY`` if set, else the one
    installed inside this package."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise LibraryNotFoundError(f"{LIBRARY_ENV}={override!r} does not name an existing file")
        return str(path.resolve())
    path = Path(__file__).resolve().with_name(LIBRARY_NAME)
    if not path.is_file():
        raise LibraryNotFoundError(
            f"{LIBRARY_NAME} is not installed in {path.parent}. It comes with the fq-onnx-runtime "
            "wheel, or is built by `pip install ./runtime` from the fq-onnx source tree (CMake, a "
            f"C++17 compiler and onnxruntime headers needed); or set {LIBRARY_ENV} to a built copy."
        )
    return str(path)


def _ort_version() -> tuple[int, ...]:
    parts = []
    for piece in ort.__version__.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def session_options(
    threads: int | None = None,
    kernel: str | None = None,
    config: Mapping[str, str] | None = None,
    **options: Any,
) -> ort.SessionOptions:
    """SessionOptions with the custom-op library registered.

    ``threads``: intra-op threads (None = onnxruntime's default, one per core).
    ``kernel``: force the ShiftConv microkernels (``KERNEL_CHOICES``); None leaves the choice to
    ``$FQ_ONNX_KERNEL`` or CPU detection. ``config``: extra session config entries.
    ``options``: attributes of ``onnxruntime.SessionOptions`` (e.g. ``execution_mode``,
    ``log_severity_level``); graph optimization defaults to ``ORT_ENABLE_ALL``.
    """
    if _ort_version() < MIN_ORT_VERSION:
        raise RuntimeError(
            f"fq-onnx needs onnxruntime >= {'.'.join(map(str, MIN_ORT_VERSION))}, found {ort.__version__}"
        )
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        so.intra_op_num_threads = int(threads)
    for name, value in options.items():
        if not hasattr(so, name):
            raise TypeError(f"onnxruntime.SessionOptions has no option {name!r}")
        setattr(so, name, value)
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, str(value))
    if kernel is not None:
        if kernel not in KERNEL_CHOICES:
            raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
        so.add_session_config_entry(KERNEL_CONFIG_KEY, kernel)
    return register(so)


def _entry(so: ort.SessionOptions, key: str) -> str | None:
    try:
        return so.get_session_config_entry(key)
    except RuntimeError:  # onnxruntime's answer for a key that is not set
        return None


def _has_entry(so: ort.SessionOptions, key: str) -> bool:
    return _entry(so, key) is not None


def _dense_graph_mode(so: ort.SessionOptions, explicit: str | None = None) -> str:
    """The dense_graph choice for a session: argument, config entry, environment, else auto
    (off when a kernel inside ShiftConv is forced through fq_onnx.dense)."""
    mode = explicit or _entry(so, DENSE_GRAPH_CONFIG_KEY) or os.environ.get(DENSE_GRAPH_ENV)
    if not mode:
        forced = _entry(so, DENSE_CONFIG_KEY) or os.environ.get(DENSE_ENV)
        mode = "off" if forced not in (None, "", "auto") else "auto"
    return mode


def prepare_model(model: Any, dense_graph: str = "auto") -> Any:
    """What to hand onnxruntime for `model` (a path, serialized bytes or an ``onnx.ModelProto``):
    the model itself when no ShiftConv node changes, else the serialized model with the float
    layers `dense_graph` selects turned into onnxruntime's own nodes (:mod:`.dense_graph`; the
    file is not touched). A ModelProto is never modified."""
    from . import dense_graph as dg

    if dense_graph not in dg.MODES:
        raise ValueError(f"dense_graph must be one of {dg.MODES}, got {dense_graph!r}")
    if dense_graph == "off":
        return model
    if hasattr(model, "SerializeToString"):
        data, base = None, None
    else:
        if isinstance(model, (bytes, bytearray, memoryview)):
            data, base = bytes(model), None
        else:
            with open(os.fspath(model), "rb") as f:
                data = f.read()
            base = os.path.dirname(os.path.abspath(os.fspath(model)))
        if b"ShiftConv" not in data:  # not compressed: no parse (enable() sees every model)
            return model
    import onnx

    proto = onnx.ModelProto()
    if data is None:
        proto.CopyFrom(model)
    else:
        proto.ParseFromString(data)
        if base is not None:
            onnx.external_data_helper.load_external_data_for_model(proto, base)
    if not dg.rewrite(proto, library_path(), dense_graph):
        return model
    try:
        return proto.SerializeToString()
    except ValueError:  # above protobuf's 2 GB: run it as stored, ShiftConv everywhere
        return model


def register(so: ort.SessionOptions) -> ort.SessionOptions:
    """Register the library on SessionOptions of your own (once: again is a no-op); returns them.

    Sets ``fq_onnx.threads`` from ``intra_op_num_threads`` unless it is set; the library reads
    every ``fq_onnx.*`` entry when it is registered, so set yours before calling this.
    """
    if _has_entry(so, REGISTERED_CONFIG_KEY):
        return so
    if so.intra_op_num_threads > 0 and not _has_entry(so, THREADS_CONFIG_KEY):
        so.add_session_config_entry(THREADS_CONFIG_KEY, str(so.intra_op_num_threads))
    so.add_session_config_entry(REGISTERED_CONFIG_KEY, "1")
    so.register_custom_ops_library(library_path())
    return so


_original_init = None  # onnxruntime.InferenceSession.__init__ while enable() is in force


def enable() -> None:
    """Let every ``onnxruntime.InferenceSession`` created from now on run compressed models.

    For apps that build their own sessions (rapidocr, nudenet, ...): one line before they load
    their models, ``fq_onnx_runtime.enable()``, and they open ``.fq.onnx`` files unchanged. The
    session's own SessionOptions get the library (:func:`register`), or options of
    :func:`session_options` when it passes none; everything else the app chose stays. Patches
    the class itself, so names the app imported before (``from onnxruntime import
    InferenceSession``) are covered. :func:`disable` undoes it.
    """
    global _original_init
    if _original_init is not None:
        return
    cls = ort.InferenceSession
    original = cls.__init__

    def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
        sess_options = session_options() if sess_options is None else register(sess_options)
        path_or_bytes = prepare_model(path_or_bytes, _dense_graph_mode(sess_options))
        original(self, path_or_bytes, sess_options, *args, **kwargs)

    __init__.__wrapped__ = original
    __init__.__doc__ = original.__doc__
    cls.__init__ = __init__
    _original_init = original


def disable() -> None:
    """Undo :func:`enable`: sessions created from now on are onnxruntime's own again."""
    global _original_init
    if _original_init is not None:
        ort.InferenceSession.__init__ = _original_init
        _original_init = None


def session(
    model: str | os.PathLike | bytes | Any,
    threads: int | None = None,
    *,
    kernel: str | None = None,
    providers: list[str] | None = None,
    config: Mapping[str, str] | None = None,
    dense_graph: str | None = None,
    **options: Any,
) -> ort.InferenceSession:
    """An onnxruntime session for a (compressed) model, with ShiftConv available.

    ``model`` is a path, the serialized bytes, or an ``onnx.ModelProto``. ``dense_graph``:
    ``auto`` | ``all`` | ``off``, which float layers run as onnxruntime's own nodes
    (``DENSE_GRAPH_CONFIG_KEY``; None: the config entry, ``$FQ_ONNX_DENSE_GRAPH``, else auto).
    The remaining arguments are those of :func:`session_options`. Errors in a compressed weight
    surface here, as an exception naming the node.
    """
    so = session_options(threads=threads, kernel=kernel, config=config, **options)
    model = prepare_model(model, _dense_graph_mode(so, dense_graph))
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(model, sess_options=so, providers=providers or ["CPUExecutionProvider"])
