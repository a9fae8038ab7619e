"""What the node and the bag tool count: one table, iterated by /diagnostics and the bag summary."""

from __future__ import annotations

from enum import Enum


class Count(str, Enum):
    """A counter; its value is its /diagnostics key."""

    FRAMES_RECEIVED = "frames_received"
    FRAMES_PROCESSED = "frames_processed"
    PROCESSING_ERRORS = "processing_errors"
    BAD_IMAGES = "bad_images"
    RECEIVED_CAMERA_INFO = "received_camera_info"
    BAD_CAMERA_INFO = "bad_camera_info"
    MISMATCHED_CAMERA_INFO = "mismatched_camera_info"  # its aspect ratio is not the frame's
    RECEIVED_LIDAR = "received_lidar"
    RECEIVED_RADAR = "received_radar"
    BAD_CLOUDS = "bad_clouds"
    FUTURE_STAMPS = "future_stamps"
    STALE_STAMPS = "stale_stamps"
    OUTLIER_STAMPS = "outlier_stamps"  # off the drive's time, held back until others confirm a jump
    TIME_JUMPS = "time_jumps"
    UNMATCHED_LIDAR = "unmatched_lidar"
    UNMATCHED_RADAR = "unmatched_radar"
    NAN_POINTS_LIDAR = "nan_points_lidar"
    NAN_POINTS_RADAR = "nan_points_radar"
    INF_POINTS_LIDAR = "inf_points_lidar"
    INF_POINTS_RADAR = "inf_points_radar"
    CLOUD_ERRORS = "cloud_errors"
    CLOUDS_WITHOUT_CAMERA_INFO = "clouds_without_camera_info"
    # live scoring only
    RECEIVED_GROUND_TRUTH = "received_ground_truth"
    SCORED_FRAMES = "scored_frames"
    FRAMES_WITHOUT_GROUND_TRUTH = "frames_without_ground_truth"
    BAD_GROUND_TRUTH = "bad_ground_truth"
    # surround only
    SURROUND_COMPLETE = "surround_frames_complete"  # segmented with every camera
    SURROUND_PARTIAL = "surround_frames_partial"  # segmented without a camera that timed out or sent a bad frame

    @classmethod
    def of(cls, what: str, sensor: str) -> "Count":
        """A per-sensor counter: Count.of("unmatched", "lidar") is UNMATCHED_LIDAR."""
        return cls(f"{what}_{sensor}")


class CameraCount(str, Enum):
    """A counter kept per camera in surround mode; its /diagnostics key is `<camera>/<value>`."""

    RECEIVED = "frames_received"
    DROPPED = "frames_dropped"  # given up for a newer surround frame before being segmented
    LATE = "frames_late"  # came after its surround frame had gone out
    TIMED_OUT = "frames_timed_out"  # surround frames that went out without this camera
    BAD = "bad_images"
    SEGMENTED = "frames_segmented"

    def of(self, camera: str) -> str:
        return f"{camera}/{self.value}"


SURROUND_COUNTS = (Count.SURROUND_COMPLETE, Count.SURROUND_PARTIAL)
LIVE_COUNTS = (Count.RECEIVED_GROUND_TRUTH, Count.SCORED_FRAMES, Count.FRAMES_WITHOUT_GROUND_TRUTH,
               Count.BAD_GROUND_TRUTH)
FRAME_COUNTS = tuple(count for count in Count if count not in LIVE_COUNTS + SURROUND_COUNTS)
