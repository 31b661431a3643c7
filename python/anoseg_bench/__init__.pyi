"""Type stubs of anoseg_bench. Sign convention: higher score = more anomalous."""

from os import PathLike
from typing import Any, Iterable, Literal, Sequence, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str
METHODS: tuple[str, ...]
DEFAULT_LOGIT_METHODS: tuple[str, ...]

# numpy arrays, CPU torch tensors, or anything with __dlpack__ / __array__
ArrayLike = Union[npt.NDArray[Any], Any]
StrPath = Union[str, PathLike[str]]
LabelValues = Union[int, Iterable[int]]
Fpr95 = Literal["first", "interp"]

class Metrics(TypedDict):
    """The object `bench eval --json` prints. Rates in [0, 1]; None = undefined."""

    aupr: float | None
    auroc: float | None
    f1: float | None
    fpr95: float | None
    fpr95_rule: Fpr95
    images: int
    negatives: int
    positives: int
    threshold: float | None
    void: int

def metrics(
    scores: ArrayLike | Sequence[ArrayLike],
    labels: ArrayLike | Sequence[ArrayLike],
    *,
    anomaly: LabelValues = (1,),
    ignore: LabelValues = (255,),
    convention: str | None = None,
    fpr95: str | None = None,
    aupr: str | None = None,
    average: str | None = None,
    positive: str | None = None,
    score_precision: str | None = None,
) -> Metrics:
    """Exact FPR95 / AUROC / AUPR / F1 of float32/float16 scores (higher = more anomalous)."""

def metrics_json(
    scores: ArrayLike | Sequence[ArrayLike],
    labels: ArrayLike | Sequence[ArrayLike],
    *,
    anomaly: LabelValues = (1,),
    ignore: LabelValues = (255,),
    convention: str | None = None,
    fpr95: str | None = None,
    aupr: str | None = None,
    average: str | None = None,
    positive: str | None = None,
    score_precision: str | None = None,
) -> str:
    """`metrics` as the exact text of `bench eval --json` (no newline)."""

class Evaluator:
    """Streaming exact evaluation of score batches or logits [B, C, H, W] (higher = more anomalous)."""

    methods: tuple[str, ...]
    def __init__(
        self,
        methods: str | Sequence[str] | None = None,
        *,
        anomaly: LabelValues = (1,),
        ignore: LabelValues = (255,),
        fpr95: Fpr95 = "first",
        msp_temperature: float = 1.0,
        energy_temperature: float = 1.0,
        device: Literal["auto", "cpu", "gpu"] = "auto",
        calibration: StrPath | None = None,
        model: str | None = None,
        buffer_bytes: int = 64 << 20,
        spill_dir: StrPath | None = None,
    ) -> None: ...
    def update(self, scores_or_logits: ArrayLike, labels: ArrayLike, *, method: str = "score") -> None: ...
    def calibrate(self, logits: ArrayLike | Sequence[ArrayLike], labels: ArrayLike | Sequence[ArrayLike]) -> None:
        """Fit SML / HEAT statistics on calibration logits, as `bench run` does."""
    def compute(self) -> dict[str, Metrics]: ...
    def compute_json(self) -> str: ...
    def to_frame(self) -> Any:
        """pandas.DataFrame indexed by method, or list[dict] without pandas."""
    def reset(self) -> None: ...
    @property
    def device(self) -> str | None: ...
    @property
    def footprint(self) -> tuple[int, int]: ...

class Results:
    """One dataset's results.json."""

    json: str
    data: dict[str, Any]
    dataset: str | None
    def __init__(self, text: str, dataset: str | None = None) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def cells(self) -> Any:
        """pandas.DataFrame (one row per model x method x split), or list[dict] without pandas."""
    @property
    def honest(self) -> Any:
        """pandas.DataFrame of the honest evaluation, or list[dict] without pandas."""
    def cell(self, model: str, method: str, split: str = "test") -> dict[str, Any]: ...
    def table(self, format: Literal["md", "markdown", "csv", "latex", "tex", "html"] = "md") -> str: ...

def run(config_path: StrPath, device: Literal["auto", "cpu", "gpu"] = "auto", *, write: bool = True) -> Results | dict[str, Results]: ...
def load(results_dir: StrPath) -> Results | dict[str, Results]: ...
def adapters() -> list[str]: ...
def _as_array(x: Any, what: str) -> np.ndarray: ...
