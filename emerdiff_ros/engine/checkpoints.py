"""CheckpointError: a checkpoint that could not be loaded, with how to get one. Torch-free, so the
CLI can catch it without loading the engine."""

from __future__ import annotations

from pathlib import Path

from .config import DEFAULT_MODEL, SD21_BASE_MODEL

SD_DIFFUSERS_PARTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded; the message says what to do, in the CLI's words (str) or ROS's."""

    def __init__(self, spec: str, reason: str):
        super().__init__(_missing_checkpoint_message(spec, reason))
        self.spec, self.reason = spec, reason

    def __reduce__(self):  # rebuilt from its parts where it is unpickled (a Ray worker's error)
        return type(self), (self.spec, self.reason)

    def for_ros(self) -> str:
        return _missing_checkpoint_message(self.spec, self.reason, "ros")


# How a user sets the model where the message is read: flags on the command line, parameters in ROS.
DIALECTS = {"cli": lambda value: f"--model {value}",
            "ros": lambda value: f"model:={value} (ros2 run: -p model:={value})"}


def _missing_checkpoint_message(spec: str, reason: str, dialect: str = "cli") -> str:
    hub_id = DEFAULT_MODEL if spec.startswith(("/", ".", "~")) or Path(spec).expanduser().exists() else spec
    gated = (f";\n    this checkpoint is gated: accept its terms at https://huggingface.co/{hub_id}\n"
             "    and run `hf auth login` first" if hub_id == DEFAULT_MODEL else "")
    setting = DIALECTS[dialect]
    return (
        f"Could not load the Stable Diffusion checkpoint {spec!r}: {reason}\n"
        "No weights ship with emerdiff_ros. To get a checkpoint:\n"
        f"  * on a machine with network:  hf download {hub_id}   (fills the Hugging Face cache,\n"
        f"    ~/.cache/huggingface/hub; copy that folder to offline machines{gated}), or\n"
        f"  * set {setting('/path/to/folder')}: a local diffusers folder holding\n"
        f"    {', '.join(SD_DIFFUSERS_PARTS)}/ (any SD 1.x/2.x checkpoint).\n"
        f"The default (paper and carla presets) is the paper's {DEFAULT_MODEL}; SD 2.1-base is\n"
        f"{setting(SD21_BASE_MODEL)}. To see the pipeline run without weights: {setting('tiny-random')}\n"
        "(a smoke run; labels are meaningless)."
    )
