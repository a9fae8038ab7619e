"""PointCloud2 contents without ROS: fields read by their offsets, and a label field appended.

The CARLA bridge's radar cloud has padding (ElevationAngle at offset 28, point_step 32), so fields
are always read through their declared offsets, never by assuming a packed layout.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..engine.labels import no_label

# sensor_msgs/PointField datatypes
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
NUMPY_TYPES = {INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2", INT32: "i4", UINT32: "u4", FLOAT32: "f4",
               FLOAT64: "f8"}
LABEL_FIELD = "label"
CAMERA_FIELD = "camera"  # surround: index into the node's `cameras` of the camera that labelled the point
NO_CAMERA = 255  # no camera sees the point
LABEL_DATATYPE = UINT16
# A point outside the image or the labelled crop, behind the camera, or with a NaN coordinate.
NO_LABEL = no_label(np.dtype(NUMPY_TYPES[LABEL_DATATYPE]))


class CloudError(ValueError):
    """The cloud's layout does not describe its data."""


@dataclass(frozen=True)
class CloudField:
    name: str
    offset: int
    datatype: int
    count: int = 1

    @property
    def size(self) -> int:
        return np.dtype(NUMPY_TYPES[self.datatype]).itemsize * self.count


@dataclass(frozen=True)
class Cloud:
    """The layout and bytes of a PointCloud2."""

    fields: tuple[CloudField, ...]
    point_step: int
    row_step: int
    width: int
    height: int
    data: bytes
    is_bigendian: bool = False

    def check(self, max_points: int | None = None) -> None:
        """Raise CloudError unless the layout fits the data (cheap: no copy)."""
        if max_points is not None and self.size > max_points:
            raise CloudError(f"{self.width}x{self.height} = {self.size} points, more than max_cloud_points "
                             f"{max_points}")
        for f in self.fields:
            if f.datatype not in NUMPY_TYPES:
                raise CloudError(f"field {f.name!r} has unknown datatype {f.datatype}")
            if f.count < 1:  # a zero-size field would let any point_step, even 0, pass for any width
                raise CloudError(f"field {f.name!r} has count {f.count}")
            if f.offset < 0 or f.offset + f.size > self.point_step:
                raise CloudError(f"field {f.name!r} (offset {f.offset}) does not fit point_step {self.point_step}")
        if self.width and self.row_step < self.point_step * self.width:
            raise CloudError(f"row_step {self.row_step} < point_step {self.point_step} x width {self.width}")
        if len(self.data) < self.row_step * self.height:
            raise CloudError(f"{len(self.data)} bytes of data, layout needs {self.row_step * self.height}")
        missing = {"x", "y", "z"} - {f.name for f in self.fields}
        if missing:
            raise CloudError(f"no {', '.join(sorted(missing))} field")

    @property
    def size(self) -> int:
        return self.width * self.height

    def field(self, name: str) -> np.ndarray:
        """(points,) values of one field, read through its offset."""
        for f in self.fields:
            if f.name == name:
                dtype = np.dtype(NUMPY_TYPES[f.datatype]).newbyteorder(">" if self.is_bigendian else "<")
                if self.size == 0:  # an empty scan (a radar with no detections): no buffer to view
                    return np.empty(0, dtype=dtype)
                view = np.ndarray((self.height, self.width), dtype=dtype, buffer=self.data, offset=f.offset,
                                  strides=(self.row_step, self.point_step))
                return view.reshape(-1)
        raise KeyError(name)

    def xyz(self) -> np.ndarray:
        return np.stack([self.field(axis).astype(np.float64) for axis in "xyz"], axis=1)

    def with_labels(self, labels: np.ndarray, cameras: np.ndarray | None = None) -> "Cloud":
        """A packed copy with a uint16 `label` field after the existing ones and, for a surround frame's cloud,
        a uint8 `camera` field after it (which camera labelled each point); fields of those names are replaced."""
        for what, values in (("labels", labels), ("camera indices", cameras)):
            if values is not None and len(values) != self.size:
                raise CloudError(f"{len(values)} {what} for {self.size} points")
        added = (LABEL_FIELD,) if cameras is None else (LABEL_FIELD, CAMERA_FIELD)
        kept = tuple(f for f in self.fields if f.name not in added)
        offset = -(-self.point_step // 2) * 2  # uint16 alignment
        end = offset + 2 + (0 if cameras is None else 1)
        step = -(-end // 4) * 4  # keep points 4-byte aligned
        packed = np.zeros((self.size, step), dtype=np.uint8)
        if self.size:
            raw = np.ndarray((self.height, self.width, self.point_step), dtype=np.uint8, buffer=self.data,
                             strides=(self.row_step, self.point_step, 1))
            packed[:, : self.point_step] = raw.reshape(self.size, self.point_step)
        order = ">" if self.is_bigendian else "<"
        packed[:, offset : offset + 2] = labels.astype(order + "u2").view(np.uint8).reshape(-1, 2)
        fields = kept + (CloudField(LABEL_FIELD, offset, LABEL_DATATYPE),)
        if cameras is not None:
            packed[:, offset + 2] = cameras.astype(np.uint8)
            fields += (CloudField(CAMERA_FIELD, offset + 2, UINT8),)
        return replace(self, fields=fields, point_step=step, row_step=step * self.width, data=packed.tobytes())
