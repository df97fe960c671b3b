"""Models: importing this registers the HRNeXt backbones (plain and FPN), the heatmap heads (top-down
and ROI keypoint) and the top-down meta-arch."""
from . import backbone  # noqa: F401
from . import heads  # noqa: F401
from . import meta_arch  # noqa: F401
from . import roi_heads  # noqa: F401
