"""Scoring label images against ground truth: one implementation for `emerdiff eval` and the node.

ROS-free (numpy, scipy, PIL, yaml). The API:

    from emerdiff_ros import scoring

    fmt = scoring.ground_truth_format("carla-palette")     # a built-in name or a class map file;
    fmt = scoring.ground_truth_format("carla-tags", carla_version="0.9.13")   # CARLA numbering by release
    fmt = fmt.ignoring(["sky", "255,0,0"])                  # optional: classes or values not to score
    class_ids = fmt.decode(pixels)    # pixels: (H, W) ids or (H, W, 3|4) RGB(A), as read from a file
                                      # (scoring.read_label_image) or message; -> (H, W) uint8 indices
                                      # into fmt.classes, scoring.IGNORE where not scored
    drive = scoring.RunningScore(fmt, ignore_mask=None)     # mask: (H, W) bool, True = not scored
    frame = drive.add(pred_labels, class_ids)               # Scores of this frame alone
    frame.miou, frame.pixel_accuracy, frame.iou, frame.matching
    drive.total()                                           # Scores of the whole-set (drive-level) matching
    drive.protocols()      # {"per-image", "whole-set", "diffseg"} -> ProtocolScore(miou, pixel_accuracy, iou)
    drive.headline(ids_consistent)    # the whole-set matching if cluster ids are stable, else per-image

pred_labels are (H, W) integer cluster ids 0-65535 (uint8 or uint16 label images) at the ground truth's
size. Every problem with the inputs raises ScoringError (a ValueError) whose text says what is wrong:
values or colours the format does not know (with their pixel counts), a photo passed as CARLA tags,
16-bit values outside the map, frames that are mostly void, sizes that differ.
Protocols (PROTOCOLS): per-image mean, whole-set matching, DiffSeg's (match per image, sum TP/FP/FN).
"""

from .classmaps import (CARLA_FAMILIES, CARLA_TABLES, DEFAULT_CARLA_VERSION, ENCODINGS, IGNORE, ClassMap,
                        ScoringError, builtin_names, carla_table, class_map_from_dict, format_names,
                        ground_truth_format, load_class_map, read_label_image)
from .matching import MAX_LABEL, Confusion, Scores, confusion, match
from .provenance import BAG_LABEL_IDS_KEY, SEGMENT_MANIFEST, bag_ids_consistent, folder_ids_consistent, \
    ids_value, write_segment_manifest
from .running import PROTOCOLS, ProtocolScore, RunningScore

__all__ = [
    "CARLA_FAMILIES", "CARLA_TABLES", "DEFAULT_CARLA_VERSION", "ENCODINGS", "IGNORE", "ClassMap", "ScoringError",
    "builtin_names", "carla_table", "class_map_from_dict", "format_names", "ground_truth_format", "load_class_map",
    "read_label_image", "MAX_LABEL", "Confusion", "Scores", "confusion", "match", "BAG_LABEL_IDS_KEY",
    "SEGMENT_MANIFEST", "bag_ids_consistent", "folder_ids_consistent", "ids_value", "write_segment_manifest",
    "PROTOCOLS", "ProtocolScore", "RunningScore",
]
