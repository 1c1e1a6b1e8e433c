"""[local_avgpool] / [local_avg] (AH): windowed average over the in-image cells."""
from __future__ import annotations

from .base import dims, register
from .maxpool import POOL_OPTIONS, Pool


@register
class LocalAvgpool(Pool):
    type = "local_avgpool"
    doc = "windowed average pooling (mean over in-image cells)"
    options = dict(POOL_OPTIONS)

    def row(self):
        return (f"avg          {self.size} x {self.size} / {self.stride_x}  "
                f"{dims(self.in_shape)}   ->  {dims(self.out_shape)}")
