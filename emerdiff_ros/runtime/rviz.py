"""The shipped RViz view for a node in a namespace (its topics are absolute: /emerdiff/...)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .outputs import output_topic

TOPIC_LINE = re.compile(r"^(\s*Value: )(/\S+)$", re.MULTILINE)


def rviz_topics(text: str) -> list[str]:
    """The topics an RViz config subscribes to (absolute names)."""
    return [match.group(2) for match in TOPIC_LINE.finditer(text)]


def namespaced_rviz_config(path: str | Path, namespace: str) -> str:
    """path itself without a namespace, else a copy showing /<namespace>/emerdiff/..., one per namespace in
    the temp folder (written again by every launch, so launches never pile files up there)."""
    if not namespace.strip("/"):
        return str(path)
    prefix = output_topic("")
    text = TOPIC_LINE.sub(lambda m: m.group(1) + (output_topic(m.group(2)[len(prefix):], namespace)
                                                   if m.group(2).startswith(prefix) else m.group(2)),
                          Path(path).read_text())
    name = re.sub(r"[^A-Za-z0-9_]", "_", namespace.strip("/"))
    copy = Path(tempfile.gettempdir()) / f"emerdiff_{name}_{os.getuid()}.rviz"
    partial = copy.with_suffix(f".{os.getpid()}.partial")  # whole or not at all, also for two launches at once
    partial.write_text(text)
    os.replace(partial, copy)
    return str(copy)
