"""ROIPooler with a (height, width) output on several FPN levels.

Detectron2 0.7's `ROIPooler` accepts a rectangular `output_size`, but its multi-level path
allocates the output as (M, C, output_size[0], output_size[0]) and fails for height != width.
"""
from typing import List

import torch
from detectron2.layers import nonzero_tuple
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from detectron2.structures import Boxes

__all__ = ["RectangularROIPooler"]


class RectangularROIPooler(ROIPooler):
    """`ROIPooler` whose output is (M, C, *output_size) for every number of levels."""

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        out_h, out_w = self.output_size
        if out_h == out_w or len(self.level_poolers) == 1 or len(box_lists) == 0:
            return super().forward(x, box_lists)
        if len(x) != len(self.level_poolers):
            raise ValueError(f"RectangularROIPooler: {len(x)} feature maps for {len(self.level_poolers)} levels")
        pooler_fmt_boxes = convert_boxes_to_pooler_format(box_lists)
        level_assignments = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        output = x[0].new_zeros((pooler_fmt_boxes.shape[0], x[0].shape[1], out_h, out_w))
        for level, pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(level_assignments == level)[0]
            output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes[inds]))
        return output
