"""The node under a CARLA-like 30 Hz stream for minutes: what arrives, what is segmented, memory, latency.

    python bench/soak_node.py --minutes 10 [--rate 30] [--empty-radar] [--loop-every 120]

Starts `emerdiff_node` as users do (its own process, tiny-random model, default QoS) and plays the
bridge: an 800x600 bgra8 frame, camera_info, a LiDAR cloud and a radar scan per tick, all on one stamp,
on reliable publishers. --empty-radar sends radar scans without detections; --loop-every S makes the
stamps jump back every S seconds, as a bag played in a loop does. Prints one markdown table row.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "test"))
from ros_harness import (FAST_PARAMS, Bridge, bgra_image, camera_info, lidar_cloud, node_arguments,  # noqa: E402
                         points_at_pixels, process_rss_mb, radar_cloud)

from emerdiff_ros.runtime.messages import stamp_ns  # noqa: E402
from emerdiff_ros.tools.images import read_rgb  # noqa: E402
from emerdiff_ros.tools.samples import sample_dir  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="ticks per second (default 30)")
    parser.add_argument("--empty-radar", action="store_true", help="radar scans without detections")
    parser.add_argument("--loop-every", type=float, default=0.0, metavar="S",
                        help="stamps jump back to the start every S seconds (a bag loop)")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    frame = read_rgb(sample_dir() / "carla_800x600_000043.png")
    pixels = [(u, v) for u in range(5, 800, 25) for v in range(3, 600, 25)]
    lidar = points_at_pixels(pixels, 15.0, (-2.0, 0.0, 0.4))
    radar = np.zeros((0, 3)) if args.empty_radar else points_at_pixels(pixels[::20], 30.0, (0.0, 0.0, 0.0))
    settings = [arg for k, v in FAST_PARAMS.items() if k != "max_rate_hz" for arg in ("-p", f"{k}:={v}")]
    node = subprocess.Popen([sys.executable, "-m", "emerdiff_ros.node", *node_arguments(), *settings],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    bridge = Bridge(rclpy.get_default_context(), "soak_bridge")
    executor = MultiThreadedExecutor()
    executor.add_node(bridge)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        bridge.wait_for_subscribers(timeout=120)
        sent, published_at, rss = 0, {}, []
        start = time.monotonic()
        next_rss = start
        while time.monotonic() - start < args.minutes * 60:
            elapsed = sent / args.rate
            t = 1000.0 + (elapsed % args.loop_every if args.loop_every else elapsed)
            bridge.info.publish(camera_info(t))
            bridge.lidar.publish(lidar_cloud(lidar, t))
            bridge.radar.publish(radar_cloud(radar, t))
            image = bgra_image(frame, t)
            published_at.setdefault(stamp_ns(image.header.stamp), []).append(time.monotonic())
            bridge.image.publish(image)
            sent += 1
            if time.monotonic() >= next_rss:
                rss.append((time.monotonic() - start, process_rss_mb(node.pid)))
                next_rss += 10.0
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
        time.sleep(5.0)
        health = bridge.latest_diagnostics()
    finally:
        node.send_signal(2)
        node.wait(60)
        executor.shutdown()
        bridge.destroy_node()
        rclpy.shutdown()

    labels = bridge.out["labels"]
    # A looped stamp is sent again and again: a frame's latency runs from its latest sending before it came back.
    latencies = [arrival - max(t for t in published_at[stamp_ns(m.header.stamp)] if t <= arrival)
                 for m, arrival in zip(labels.messages, labels.receive_times)]
    after_first_minute = [(t, mb) for t, mb in rss if t >= 60]
    slope = np.polyfit(*zip(*after_first_minute), 1)[0] * 60 if len(after_first_minute) >= 3 else float("nan")
    matched = {s: len(bridge.out[f"{s}/labeled"].messages) for s in ("lidar", "radar")}
    print(f"| {args.minutes:g} min, {args.rate:g} Hz{', empty radar' if args.empty_radar else ''}"
          f"{f', loop every {args.loop_every:g} s' if args.loop_every else ''} | {sent} | "
          f"{health['frames_received']} | "
          f"{health['frames_processed']} | {len(labels.messages)} | {matched['lidar']} | {matched['radar']} | "
          f"{health['unmatched_lidar']} / {health['unmatched_radar']} | {health['time_jumps']} | "
          f"{health['processing_errors']} | {rss[0][1]:.0f} -> {rss[-1][1]:.0f} | {slope:+.2f} | "
          f"{np.median(latencies):.2f} / {max(latencies):.2f} |")
    print("RSS MB by minute: " + " ".join(f"{mb:.0f}" for t, mb in rss if int(t) % 60 < 10))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"worker {health['worker_s']} s/frame (max {health['max_worker_s']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
