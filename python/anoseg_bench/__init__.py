"""anoseg_bench: exact pixel-level anomaly-segmentation metrics from Python.

A thin binding of the ``bench`` Rust crate (this repository): every metric
and every score is computed by the same Rust code as the ``bench`` CLI; there
is no Python re-implementation.

Sign convention, everywhere: **higher score = more anomalous**. Scores are
used as given: no hidden sigmoid, softmax or negation (the built-in methods
already negate max-logit / MSP / energy so that higher = more anomalous).

Main entry points:

* :func:`metrics` -- one call, exact FPR95 / AUROC / AUPR / F1 (the object
  ``bench eval --json`` prints);
* :class:`Evaluator` -- streaming, exact, bounded memory, for an evaluation
  loop; takes score batches or logits ``[B, C, H, W]`` (scored by the WGSL
  pass on a GPU adapter, else the CPU reference);
* :func:`run` / :func:`load` -- a ``bench run`` sweep in-process / a results
  folder, as :class:`Results` (``.cells``, ``.honest``, ``.table()``).
"""

from __future__ import annotations

import json
import os
import warnings

# Mesa's Vulkan device-select layer probes X11/Wayland on headless machines
# and prints noise; bench ranks adapters itself (the CLI does the same).
os.environ.setdefault("NODEVICE_SELECT", "1")

import numpy as np  # noqa: E402

from . import _native  # noqa: E402

__all__ = [
    "metrics",
    "metrics_json",
    "Evaluator",
    "Results",
    "run",
    "load",
    "adapters",
    "METHODS",
    "__version__",
]

__version__ = _native.version()

#: Built-in scores computed from logits (higher = more anomalous).
METHODS = ("max_logit", "msp", "energy", "sml", "heat", "entropy")
#: What ``Evaluator`` computes from logits when ``methods`` is not given
#: (the ones that need no calibration statistics).
DEFAULT_LOGIT_METHODS = ("max_logit", "msp", "energy", "entropy")

_UNDEFINED = "no anomaly or no in-distribution pixels: metrics are undefined (null)"


# ----------------------------------------------------------------- inputs


def _as_array(x, what: str) -> np.ndarray:
    """numpy view of ``x`` (numpy array, torch tensor, DLPack or array-like).

    CPU torch tensors are viewed without a copy (DLPack, else ``__array__``);
    a tensor that requires grad is detached first; a CUDA tensor is copied to
    the host (that copy is the only one). Non-contiguous input is copied once
    into C order.
    """
    if not isinstance(x, np.ndarray):
        mod = type(x).__module__ or ""
        if mod.startswith("torch"):
            if getattr(x, "requires_grad", False):
                x = x.detach()
            if getattr(x, "device", None) is not None and x.device.type != "cpu":
                x = x.cpu()
            if str(getattr(x, "dtype", "")) == "torch.bfloat16":
                raise ValueError(f"{what}: bfloat16 is not supported; cast to float32 or float16")
            if str(getattr(x, "dtype", "")) == "torch.bool":
                x = x.to(dtype=__import__("torch").uint8)
        if hasattr(x, "__dlpack__"):
            try:
                x = np.from_dlpack(x)
            except (TypeError, RuntimeError, BufferError, ValueError):
                x = np.asarray(x)
        else:
            x = np.asarray(x)
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return x


def _scores(x, what: str = "scores") -> np.ndarray:
    a = _as_array(x, what)
    if a.dtype not in (np.float32, np.float16):
        raise ValueError(
            f"{what}: must be float32 or float16 (got {a.dtype}); bench ranks float32 scores exactly, "
            "so cast explicitly (e.g. .astype(numpy.float32)) if that rounding is what you want"
        )
    return a


def _labels(x, what: str = "labels") -> np.ndarray:
    a = _as_array(x, what)
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if a.dtype in (np.uint8, np.uint16, np.int32, np.int64):
        return a
    if a.dtype.kind in "iu":
        if a.size and a.dtype == np.uint64 and int(a.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{what}: label value {int(a.max())} is outside 0..=65535")
        return a.astype(np.int64)
    raise ValueError(f"{what}: must be an integer array (uint8, uint16, int32 or int64; got {a.dtype})")


def _images(a: np.ndarray) -> int:
    """Images in one array: ``shape[0]`` of a batch (ndim >= 3), else 1."""
    return int(a.shape[0]) if a.ndim >= 3 else 1


def _values(v, what: str) -> list:
    if isinstance(v, (int, np.integer)):
        v = (v,)
    try:
        out = [int(x) for x in v]
    except (TypeError, ValueError):
        raise ValueError(f"`{what}` must be an int or a sequence of ints (got {v!r})") from None
    return out


def _pairs(scores, labels):
    seq = isinstance(scores, (list, tuple))
    if seq != isinstance(labels, (list, tuple)):
        raise ValueError("scores and labels must both be arrays or both be lists of per-image arrays")
    if not seq:
        scores, labels = [scores], [labels]
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score arrays but {len(labels)} label arrays")
    many = len(scores) > 1
    s = [_scores(x, f"scores[{i}]" if many else "scores") for i, x in enumerate(scores)]
    l = [_labels(x, f"labels[{i}]" if many else "labels") for i, x in enumerate(labels)]
    return s, l


def _warn_undefined(d: dict) -> None:
    if d.get("positives") == 0 or d.get("negatives") == 0:
        warnings.warn(_UNDEFINED, RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------- metrics


def metrics_json(scores, labels, *, anomaly=(1,), ignore=(255,), convention=None, fpr95=None, aupr=None, average=None, positive=None, score_precision=None) -> str:
    """:func:`metrics` as the exact text ``bench eval --json`` prints (without the newline)."""
    s, l = _pairs(scores, labels)
    images = sum(_images(a) for a in s)
    return _native.metrics_json(
        s, l, _values(anomaly, "anomaly"), _values(ignore, "ignore"), images,
        convention, fpr95, aupr, average, positive, score_precision,
    )


def metrics(scores, labels, *, anomaly=(1,), ignore=(255,), convention=None, fpr95=None, aupr=None, average=None, positive=None, score_precision=None) -> dict:
    """Exact pixel metrics of anomaly scores against label masks.

    Higher score = more anomalous; a pixel is flagged when ``score >= t``.
    Scores are used exactly as given (no sigmoid, no normalisation).

    Parameters
    ----------
    scores:
        float32 or float16 array of any shape, or a list of per-image arrays
        (numpy, CPU torch tensors -- viewed without a copy -- or anything
        with ``__dlpack__`` / ``__array__``). Must be finite.
    labels:
        integer mask(s) of the same shape(s) (uint8, uint16, int32, int64;
        other integer types and bool are converted).
    anomaly:
        mask values that are anomalies (``--anomaly``; default ``(1,)``).
    ignore:
        mask values that are void, excluded from every count (``--ignore``;
        default ``(255,)``). Every other value is in-distribution; values
        above 255 must be listed in one of the two (as in the CLI).
    convention:
        a preset that sets every switch below exactly as that code does
        (``"sklearn"`` -- the default --, ``"smiyc"``, ``"fishyscapes"``,
        ``"streethazards"``, ``"openood"``, ``"pytorch-ood"``,
        ``"pytorch-ood-seg"``, ``"ood-metrics"``, ``"anomalib"``,
        ``"bravo"``; README "Metric conventions"); explicit switches override it.
    fpr95:
        ``"first"`` (FPR at the first threshold reaching TPR >= 0.95,
        SegmentMeIfYouCan; default), ``"strict"``, ``"interp"``
        (``np.interp`` over sklearn's ROC), ``"nearest"`` or ``"thinned"``.
    aupr:
        ``"ap"`` (sklearn's step sum; default), ``"trapezoid"`` or
        ``"trapezoid_reorder"``.
    average:
        ``"pixels"`` (pooled; default) or ``"images"`` (mean of per-image
        metrics over images with both classes; a batch array ``[B, ...]``
        holds B images).
    positive:
        ``"anomaly"`` (default) or ``"normal"`` (adds ``aupr_in`` /
        ``fpr95_in`` with in-distribution as the positive class).
    score_precision:
        ``"f32"`` (default), ``"f16"`` (scores cast to float16 first, as
        SMIYC) or ``"u16"`` (BRAVO's ``min(floor(s*65536), 65535)`` on scores
        in [0, 1]).

    Returns
    -------
    dict
        The keys of ``bench eval --json``: ``auroc``, ``aupr`` (average
        precision, sklearn's step sum), ``fpr95``, ``f1`` (max over
        thresholds), ``threshold`` (the score attaining it), ``positives``,
        ``negatives``, ``void``, ``images`` (``shape[0]`` of each array with
        ndim >= 3, else 1 per array), ``fpr95_rule``. Rates are in [0, 1];
        ``None`` where undefined (no anomaly or no normal pixel).

    Raises
    ------
    ValueError
        bad dtype, mismatched shapes, non-finite score, unlisted label value
        above 255, bad ``anomaly``/``ignore``/``fpr95`` -- one line, the CLI's
        wording.

    Exact: every pixel, no binning, no subsampling; equals scikit-learn's
    ``roc_auc_score`` / ``average_precision_score`` / ``roc_curve`` /
    ``precision_recall_curve`` on the same float32 scores. Memory: 4 bytes per
    anomaly pixel plus fixed chunk buffers; the GIL is released during the work.
    """
    d = json.loads(
        metrics_json(
            scores, labels, anomaly=anomaly, ignore=ignore, convention=convention, fpr95=fpr95,
            aupr=aupr, average=average, positive=positive, score_precision=score_precision,
        )
    )
    _warn_undefined(d)
    return d


# ----------------------------------------------------------------- Evaluator


class Evaluator:
    """Exact, streaming evaluation over batches (e.g. inside a PyTorch loop).

    ``ev.update(scores, labels)`` adds a batch of anomaly scores (any shape,
    float32/float16, higher = more anomalous); ``ev.update(logits, labels)``
    with logits ``[B, C, H, W]`` and labels ``[B, H, W]`` scores every method
    in ``methods`` itself (the WGSL pass when a hardware GPU adapter exists
    and ``device="auto"``, else the CPU reference; ``device="cpu"|"gpu"``
    forces one) and adds all of them. ``ev.compute()`` returns
    ``{method: metrics-dict}`` with exactly the keys and values of
    :func:`metrics` on the concatenation of all batches (byte for byte in
    JSON); it does not consume the state, so updates may continue.

    Memory (exact, not binned; stated per pixel and per method):

    * anomaly pixels: 4 bytes each in RAM (their score keys, pass 1);
    * normal pixels with float32 scores (all scores made from logits):
      4 bytes each, first in RAM up to ``buffer_bytes`` per method, then
      appended to an unnamed temporary file (in ``spill_dir`` or the system
      temp folder, deleted automatically) that ``compute()`` re-reads for the
      second pass;
    * normal pixels with float16 scores: no per-pixel storage at all -- an
      exact 65 536-bin histogram of their bit patterns (512 KiB per method);
    * void pixels: nothing.

    ``compute()`` needs transiently a copy of the anomaly keys (4 bytes per
    anomaly pixel), ~28 bytes per distinct anomaly score, at most 16 MiB of
    lookup tables and ~10 MiB of chunk buffers. ``footprint`` reports the
    kept (RAM, disk) bytes.

    Parameters
    ----------
    methods:
        built-in scores computed from logits, in output order: any of
        ``max_logit, msp, energy, entropy`` (and ``sml, heat`` with
        ``calibration``). Default: ``max_logit, msp, energy, entropy``.
        Irrelevant for score batches.
    anomaly, ignore, fpr95:
        as in :func:`metrics`.
    msp_temperature, energy_temperature:
        ``[method.msp] temperature`` / ``[method.energy] temperature``.
    device:
        ``"auto"`` (hardware GPU adapter if any, else CPU), ``"cpu"``, ``"gpu"``
        (any adapter, including a software one; RuntimeError if none).
    calibration, model:
        SML / HEAT need statistics fitted on a calibration split: pass the
        ``calibration.json`` that ``bench run`` wrote and the model id in it,
        or call :meth:`calibrate` with calibration logits. Without them, asking for ``sml`` / ``heat`` on logits is a ValueError
        (never a made-up number). HEAT fitted on features is not supported here.
    buffer_bytes:
        RAM per method for normal-pixel keys before spilling (default 64 MiB).
    spill_dir:
        folder for the spill files (default: the system temp folder).
    """

    def __init__(
        self,
        methods=None,
        *,
        anomaly=(1,),
        ignore=(255,),
        fpr95: str = "first",
        msp_temperature: float = 1.0,
        energy_temperature: float = 1.0,
        device: str = "auto",
        calibration=None,
        model=None,
        buffer_bytes: int = 64 << 20,
        spill_dir=None,
    ):
        if methods is None:
            methods = DEFAULT_LOGIT_METHODS
        if isinstance(methods, str):
            methods = (methods,)
        self.methods = tuple(methods)
        self._native = _native.NativeEvaluator(
            list(self.methods),
            _values(anomaly, "anomaly"),
            _values(ignore, "ignore"),
            fpr95,
            float(msp_temperature),
            float(energy_temperature),
            device,
            None if calibration is None else os.fspath(calibration),
            model,
            int(buffer_bytes),
            None if spill_dir is None else os.fspath(spill_dir),
        )

    def update(self, scores_or_logits, labels, *, method: str = "score") -> None:
        """Add one batch.

        * ``scores`` of the same shape as ``labels`` (float32/float16, higher =
          more anomalous): accumulated under the name ``method`` (default
          ``"score"``); several score methods may be fed under different names.
        * ``logits`` ``[B, C, H, W]`` (or ``[C, H, W]``) with ``labels``
          ``[B, H, W]`` (or ``[H, W]``): every method of ``methods`` is computed
          from the logits and accumulated.

        A batch that fails validation (ValueError) leaves the state unchanged.
        The GIL is released while the batch is processed.
        """
        x = _as_array(scores_or_logits, "scores")
        lab = _labels(labels)
        if x.shape == lab.shape:
            self._native.update_scores(method, _scores(x), lab, _images(x))
            return
        if x.ndim == lab.ndim + 1 and lab.ndim in (2, 3):
            if lab.ndim == 2:
                x, lab = x[None], lab[None]
            if x.shape[1] == 1:
                raise ValueError(
                    f"scores: shape {tuple(x.shape)} reads as logits with one class; for score maps "
                    f"pass the shape of the labels {tuple(lab.shape)} (squeeze the channel dimension)"
                )
            if x.dtype not in (np.float32, np.float16):
                raise ValueError(f"logits: must be float32 or float16 (got {x.dtype})")
            self._native.update_logits(x, lab)
            return
        raise ValueError(
            f"scores: shape {tuple(x.shape)} matches neither labels {tuple(lab.shape)} (scores) "
            "nor [B, C, H, W] logits with [B, H, W] labels"
        )

    def calibrate(self, logits, labels) -> None:
        """Fit the SML / HEAT statistics on calibration data, as ``bench run``
        fits them on its ``calibration`` split (in-distribution pixels only).

        ``logits``: ``[N, C, H, W]`` (or ``[C, H, W]``, or a list of such
        arrays) with ``labels`` ``[N, H, W]`` (``[H, W]``, list). All of it is
        read twice when HEAT is requested (its energies are standardised in a
        second pass), so pass arrays, not a generator. Must come before the
        first logits update; replaces ``calibration=`` / ``model=``.
        Never use the split you evaluate on (leakage).
        """
        zs = list(logits) if isinstance(logits, (list, tuple)) else [logits]
        ls = list(labels) if isinstance(labels, (list, tuple)) else [labels]
        Z, L = [], []
        for i, (z, l) in enumerate(zip(zs, ls)):
            z, l = _as_array(z, f"logits[{i}]"), _labels(l, f"labels[{i}]")
            if l.ndim == 2 and z.ndim == 3:
                z, l = z[None], l[None]
            Z.append(z)
            L.append(l)
        if len(zs) != len(ls):
            raise ValueError(f"calibrate: {len(zs)} logits arrays but {len(ls)} label arrays")
        self._native.calibrate(Z, L)

    def compute_json(self) -> str:
        """``{"method": <bench eval --json object>, ...}`` as text, in method order."""
        return self._native.compute_json()

    def compute(self) -> dict:
        """``{method: metrics-dict}`` (the :func:`metrics` keys), in method order."""
        out = json.loads(self.compute_json())
        for d in out.values():
            _warn_undefined(d)
        return out

    def to_frame(self):
        """:meth:`compute` as a pandas DataFrame indexed by method (a list of
        dicts with a ``method`` key when pandas is not installed)."""
        rows = [{"method": k, **v} for k, v in self.compute().items()]
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows).set_index("method")

    def reset(self) -> None:
        """Forget every batch (the configuration stays)."""
        self._native.reset()

    @property
    def device(self):
        """The scorer used for logits (``"cpu (N threads)"`` or the adapter), ``None`` before any logits."""
        return self._native.device()

    @property
    def footprint(self) -> tuple:
        """``(bytes in RAM, bytes spilled to disk)`` of the kept state."""
        return tuple(self._native.footprint())


# ----------------------------------------------------------------- results


def _frame(rows):
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


class Results:
    """One dataset's ``results.json`` (format ``bench-results/2``).

    ``data`` is the parsed JSON; ``cells`` (one row per model x method x
    split: ``auroc``, ``aupr``, ``fpr95``, ``f1``, ``threshold`` as a raw
    score, higher = more anomalous, ...) and ``honest`` (thresholds chosen on
    ``val``, reported on ``test``) are pandas DataFrames, or lists of dicts
    when pandas is not installed.
    """

    def __init__(self, text: str, dataset=None):
        self.json = text
        self.data = json.loads(text)
        self.dataset = dataset

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def cells(self):
        return _frame(self.data["cells"])

    @property
    def honest(self):
        return _frame(self.data["honest"])

    def cell(self, model: str, method: str, split: str = "test") -> dict:
        """The cell of (model, method, split); KeyError if absent."""
        for c in self.data["cells"]:
            if c["model"] == model and c["method"] == method and c["split"] == split:
                return c
        raise KeyError(f"no cell for model {model!r}, method {method!r}, split {split!r}")

    def table(self, format: str = "md") -> str:
        """The tables ``bench table --format FORMAT`` prints (md, csv, latex, html)."""
        return _native.table(self.json, format)

    def __repr__(self) -> str:
        ds = f", dataset={self.dataset!r}" if self.dataset else ""
        return f"Results(name={self.name!r}{ds}, cells={len(self.data['cells'])})"


def _sets(pairs):
    if len(pairs) == 1 and pairs[0][0] is None:
        return Results(pairs[0][1])
    return {name: Results(text, name) for name, text in pairs}


def run(config_path, device: str = "auto", *, write: bool = True):
    """Run the sweep of a config in-process, as ``bench run CONFIG --device DEVICE``.

    Writes ``results/<name>/`` exactly as the CLI does (atomically; every
    file identical to the CLI's but ``manifest.json``, which records
    timings), unless ``write=False``. Returns :class:`Results` (a
    ``{dataset: Results}`` dict for a config with ``[[datasets]]``).
    Relative paths in the config resolve against the working directory, as
    in the CLI. Errors: FileNotFoundError (missing config / data),
    ValueError (bad config or data; the CLI's one-line message),
    RuntimeError (``device="gpu"`` without an adapter).
    """
    return _sets(_native.run_json(os.fspath(config_path), device, bool(write)))


def load(results_dir):
    """:class:`Results` of a results folder (``{dataset: Results}`` for a
    ``[[datasets]]`` folder). FileNotFoundError if there is no results.json."""
    return _sets(_native.load_json(os.fspath(results_dir)))


def adapters() -> list:
    """The wgpu adapters visible to ``bench`` (``bench devices``)."""
    return list(_native.adapters())
