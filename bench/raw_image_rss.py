"""Peak memory of a subscriber that refuses one oversized Image: deserialized first, or read raw (issue 21).

    python bench/raw_image_rss.py [--size 8192x8192] [--max-pixels 2073600]

Publishes one rgb8 Image of --size over DDS (reliable, depth 1) to a subscriber in a process of its own,
once for each way of receiving it, and prints a markdown table of each subscriber's peak RSS
(resource.getrusage ru_maxrss):
- idle: subscribed (raw) to a topic nothing is published on, through the same publish: the baseline;
- normal: a plain subscription (rclpy deserializes the Image into Python), then check_image refuses it;
- raw: a raw=True subscription (the callback gets the CDR bytes), then image_header(bytes).check refuses it.
The DDS reader still holds the serialized sample while the callback runs, so the raw path peaks at
about one copy of the frame above the baseline and the normal path at several.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("idle", "normal", "raw")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def subscriber(mode: str, topic: str, max_pixels: int) -> int:
    """One subscriber: says ready (with its peak so far), receives one Image (idle: waits for stdin to
    close), refuses it, and prints its peak RSS as JSON."""
    import gc
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    sys.path.insert(0, str(HERE.parent))
    from emerdiff_ros.runtime.cdr import image_header
    from emerdiff_ros.runtime.messages import MessageError, check_image

    rclpy.init()
    node = rclpy.create_node(f"raw_image_rss_{mode}")
    done, result = threading.Event(), {}

    def refuse(check, seconds_since):
        try:
            check()
            result["refused"] = None
        except MessageError as exc:
            result["refused"] = str(exc)
        result["callback_s"] = time.monotonic() - seconds_since
        result["in_callback_mb"] = rss_mb()
        done.set()

    def on_message(msg):
        start = time.monotonic()
        if mode == "raw":
            refuse(lambda: image_header(msg).check(max_pixels), start)
        else:
            refuse(lambda: check_image(msg, max_pixels), start)

    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, topic, on_message, qos, raw=mode != "normal")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    print(json.dumps({"subscribed_mb": peak_mb()}), flush=True)
    if mode == "idle":
        sys.stdin.read()  # the publisher is done
    else:
        done.wait()
        time.sleep(1.0)
    gc.collect()
    print(json.dumps({"peak_mb": peak_mb(), "after_mb": rss_mb(), **result}), flush=True)
    executor.shutdown()
    spin.join(10)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def start_subscriber(mode: str, topic: str, max_pixels: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--subscriber", mode, "--topic", topic,
                             "--max-pixels", str(max_pixels)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def publish_to(process: subprocess.Popen, publisher, image) -> dict:
    """One Image to a subscriber that is ready; what it reports once it has refused it."""
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the subscriber on {publisher.topic_name} never matched")
        time.sleep(0.05)
    time.sleep(0.5)  # the reliable reader's side of the match
    start = time.monotonic()
    publisher.publish(image)
    outcome = json.loads(process.stdout.readline())
    return {**outcome, "delivered_s": time.monotonic() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="8192x8192", help="WxH of the rgb8 frame (default 8192x8192)")
    parser.add_argument("--max-pixels", type=int, default=1920 * 1080, help="the cap (default 1920x1080)")
    parser.add_argument("--subscriber", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--topic", default="raw_image_rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.subscriber:
        return subscriber(args.subscriber, args.topic, args.max_pixels)

    # The subscribers start before this process holds the frame or rclpy: Linux carries a process's peak
    # RSS across exec, so a subscriber started later would begin at this process's peak.
    topics = {mode: f"{args.topic}_{os.getpid()}_{mode}" for mode in MODES}
    processes = {mode: start_subscriber(mode, topics[mode], args.max_pixels) for mode in MODES}
    rows = {}
    try:
        for process in processes.values():
            json.loads(process.stdout.readline())  # subscribed
        import rclpy
        from builtin_interfaces.msg import Time
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header

        width, height = (int(v) for v in args.size.split("x"))
        image = Image(header=Header(stamp=Time(sec=1, nanosec=0), frame_id="camera"), height=height, width=width,
                      encoding="rgb8", step=3 * width)
        image.data = bytes(3 * width * height)
        rclpy.init()
        node = rclpy.create_node("raw_image_rss_publisher")
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        for mode in ("normal", "raw"):
            rows[mode] = publish_to(processes[mode], node.create_publisher(Image, topics[mode], qos), image)
        processes["idle"].stdin.close()  # it has been idle through both
        rows["idle"] = json.loads(processes["idle"].stdout.readline())
        node.destroy_node()
        rclpy.try_shutdown()
    finally:
        for process in processes.values():
            if not process.stdin.closed:
                process.stdin.close()
            process.wait(60)

    idle = rows["idle"]["peak_mb"]
    frame_mb = 3 * width * height / 2**20
    print(f"{args.size} rgb8 frame: {frame_mb:.0f} MiB; cap {args.max_pixels} pixels; {platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print("| subscriber | peak RSS MiB | peak above idle | in the callback | 1 s later | refused as |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        row = rows[mode]
        during = f"{row['in_callback_mb']:.0f}" if "in_callback_mb" in row else "-"
        above = row["peak_mb"] - idle
        print(f"| {mode} | {row['peak_mb']:.0f} | {above:+.0f} ({above / frame_mb:.1f} frames) | {during} | "
              f"{row['after_mb']:.0f} | {row.get('refused') or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
