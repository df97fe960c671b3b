"""Models: importing this registers the HRNeXt backbone, the heatmap head and the top-down meta-arch."""
from . import backbone  # noqa: F401
from . import heads  # noqa: F401
from . import meta_arch  # noqa: F401
