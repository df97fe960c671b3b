"""`model.json` of an exported top-down model: everything a runtime needs besides the network.

The network maps normalised crops to heatmaps; the runtime does the rest (box -> centre / scale ->
affine crop -> normalisation -> [network] -> flip-test combination unless it is in the graph ->
decoding -> rescoring + OKS-NMS), so the json holds the crop size, pixel statistics and channel order,
the codec's parameters, the test settings (box padding, flip test, VIS_THR, NMS) and the keypoint
facts (flip pairs, OKS sigmas, names). Written by `hrnext_d2.export.exporter`, read without torch.
"""
import json
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

__all__ = ["DeployMetadata", "MetadataError", "METADATA_VERSION", "FORMATS"]

METADATA_VERSION = 1
FORMATS = ("onnx", "torchscript")
_CHANNEL_ORDERS = ("RGB", "BGR")


class MetadataError(ValueError):
    """A model.json that is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class DeployMetadata:
    """Contents of model.json.

    image_size / heatmap_size: (w, h). channel_order: the order of the crop channels the network
    takes; pixel_mean / pixel_std (0-255 scale) are in that order, crops are (pixel - mean) / std.
    codec: `HeatmapCodec.to_dict()`; test_settings: `TopDownTestSettings.to_dict()`.
    flip_test_in_graph: the network already returns flip-test averaged (and shifted) heatmaps.
    """

    format: str
    model_file: str
    input_name: str
    output_name: str
    image_size: List[int]
    heatmap_size: List[int]
    num_keypoints: int
    channel_order: str
    pixel_mean: List[float]
    pixel_std: List[float]
    flip_pairs: List[List[int]]
    oks_sigmas: List[float]
    codec: Dict[str, Any]
    test_settings: Dict[str, Any]
    flip_test_in_graph: bool
    crop_batch_size: int = 64
    opset: Optional[int] = None
    keypoint_names: List[str] = field(default_factory=list)
    keypoint_connection_rules: List[List[Any]] = field(default_factory=list)
    source: Dict[str, str] = field(default_factory=dict)
    version: int = METADATA_VERSION

    def __post_init__(self):
        self.validate()

    def validate(self, where: str = "model.json") -> None:
        """Clear errors (naming the key at fault) for values a runtime cannot use."""
        def fail(key: str, msg: str):
            raise MetadataError(f"{where}: {key} {msg}")

        if self.format not in FORMATS:
            fail("format", f"must be one of {FORMATS}, got {self.format!r}")
        for key in ("image_size", "heatmap_size"):
            v = getattr(self, key)
            if len(v) != 2 or min(int(x) for x in v) <= 0:
                fail(key, f"must be [w, h] > 0, got {v!r}")
        if self.channel_order not in _CHANNEL_ORDERS:
            fail("channel_order", f"must be one of {_CHANNEL_ORDERS}, got {self.channel_order!r}")
        for key in ("pixel_mean", "pixel_std"):
            if len(getattr(self, key)) != 3:
                fail(key, f"must have 3 values, got {getattr(self, key)!r}")
        if min(self.pixel_std) <= 0:
            fail("pixel_std", f"must be > 0, got {self.pixel_std!r}")
        k = int(self.num_keypoints)
        if k <= 0:
            fail("num_keypoints", f"must be > 0, got {k}")
        if len(self.oks_sigmas) != k:
            fail("oks_sigmas", f"has {len(self.oks_sigmas)} values for {k} keypoints")
        for pair in self.flip_pairs:
            if len(pair) != 2 or not all(0 <= int(i) < k for i in pair):
                fail("flip_pairs", f"has an invalid pair {pair!r} for {k} keypoints")
        if self.keypoint_names and len(self.keypoint_names) != k:
            fail("keypoint_names", f"has {len(self.keypoint_names)} names for {k} keypoints")
        if int(self.crop_batch_size) <= 0:
            fail("crop_batch_size", f"must be > 0, got {self.crop_batch_size}")
        if list(self.codec.get("image_size", [])) != list(self.image_size):
            fail("codec.image_size", f"{self.codec.get('image_size')!r} differs from image_size {self.image_size!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "model.json") -> "DeployMetadata":
        if not isinstance(d, dict):
            raise MetadataError(f"{where}: expected a json object, got {type(d).__name__}")
        version = d.get("version", None)
        if version != METADATA_VERSION:
            raise MetadataError(f"{where}: version {version!r} is not supported (this runtime reads {METADATA_VERSION})")
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - names)
        if unknown:
            raise MetadataError(f"{where}: unknown keys {unknown}")
        required = [n for n, f in cls.__dataclass_fields__.items()
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = sorted(n for n in required if n not in d)
        if missing:
            raise MetadataError(f"{where}: missing keys {missing}")
        try:
            meta = cls(**d)
        except MetadataError as e:
            raise MetadataError(str(e).replace("model.json", where, 1)) from None
        except (TypeError, ValueError) as e:
            raise MetadataError(f"{where}: {e}") from e
        return meta

    @classmethod
    def load(cls, path: Union[str, Path]) -> "DeployMetadata":
        path = Path(path)
        if not path.is_file():
            raise MetadataError(f"{path}: not found (an exported model directory holds model.json next to the model)")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise MetadataError(f"{path}: not valid json ({e})") from e
        return cls.from_dict(d, where=str(path))

    def flip_pairs_tuples(self) -> Sequence[Sequence[int]]:
        return [tuple(int(i) for i in p) for p in self.flip_pairs]

