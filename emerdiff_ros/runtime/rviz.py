"""The shipped RViz view for a node in a namespace (its topics are absolute: /emerdiff/...)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from .outputs import output_topic

TOPIC_LINE = re.compile(r"^(\s*Value: )(/\S+)$", re.MULTILINE)


def rviz_topics(text: str) -> list[str]:
    """The topics an RViz config subscribes to (absolute names)."""
    return [match.group(2) for match in TOPIC_LINE.finditer(text)]


def namespaced_rviz_config(path: str | Path, namespace: str) -> str:
    """path itself without a namespace, else a copy (in the temp folder) showing /<namespace>/emerdiff/..."""
    if not namespace.strip("/"):
        return str(path)
    prefix = output_topic("")
    text = TOPIC_LINE.sub(lambda m: m.group(1) + (output_topic(m.group(2)[len(prefix):], namespace)
                                                   if m.group(2).startswith(prefix) else m.group(2)),
                          Path(path).read_text())
    with tempfile.NamedTemporaryFile("w", prefix="emerdiff_", suffix=".rviz", delete=False) as f:
        f.write(text)
    return f.name
