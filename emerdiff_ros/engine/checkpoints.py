"""CheckpointError: a checkpoint that could not be loaded, with how to get one. Torch-free, so the
CLI can catch it without loading the engine."""

from __future__ import annotations

from pathlib import Path

from .config import (DEFAULT_DINO_MODEL, DEFAULT_MODEL, DEFAULT_SEGFORMER_MODEL, DINO_V1_MODEL,
                     FAST_SEGFORMER_MODEL, SD21_BASE_MODEL)

SD_DIFFUSERS_PARTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded; the message says what to do, in the CLI's words (str) or ROS's."""

    def __init__(self, spec: str, reason: str, setting: str = "model"):
        """setting: the configuration field that names the checkpoint (model, dino_model, segformer_model)."""
        super().__init__(MESSAGES[setting](spec, reason, "cli"))
        self.spec, self.reason, self.setting = spec, reason, setting

    def __reduce__(self):  # rebuilt from its parts where it is unpickled (a Ray worker's error)
        return type(self), (self.spec, self.reason, self.setting)

    def for_ros(self) -> str:
        return MESSAGES[self.setting](self.spec, self.reason, "ros")


# How a user sets a checkpoint where the message is read: flags on the command line, parameters in ROS.
DIALECTS = {"cli": lambda name, value: f"--{name.replace('_', '-')} {value}",
            "ros": lambda name, value: f"{name}:={value} (ros2 run: -p {name}:={value})"}


def _local(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or Path(spec).expanduser().exists()


def _transformers_message(setting: str, what: str, default: str, alternative: tuple[str, str]):
    """The message for a transformers checkpoint (DINO, SegFormer): hub id, local folder or tiny-random."""
    def message(spec: str, reason: str, dialect: str = "cli") -> str:
        hub_id = default if _local(spec) else spec

        def set_to(value: str) -> str:
            return DIALECTS[dialect](setting, value)

        return (
            f"Could not load the {what} checkpoint {spec!r}: {reason}\n"
            "No weights ship with emerdiff_ros. To get a checkpoint:\n"
            f"  * on a machine with network:  hf download {hub_id}   (fills the Hugging Face cache,\n"
            "    ~/.cache/huggingface/hub; copy that folder to offline machines), or\n"
            f"  * set {set_to('/path/to/folder')}: a local transformers folder (config.json and weights).\n"
            f"The default is {default}; {alternative[0]}: {set_to(alternative[1])}.\n"
            f"To see the pipeline run without weights: {set_to('tiny-random')} (a smoke run; labels are meaningless)."
        )
    return message


def _missing_checkpoint_message(spec: str, reason: str, dialect: str = "cli") -> str:
    hub_id = DEFAULT_MODEL if _local(spec) else spec
    gated = (f";\n    this checkpoint is gated: accept its terms at https://huggingface.co/{hub_id}\n"
             "    and run `hf auth login` first" if hub_id == DEFAULT_MODEL else "")

    def setting(value: str) -> str:
        return DIALECTS[dialect]("model", value)

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


MESSAGES = {
    "model": _missing_checkpoint_message,
    "dino_model": _transformers_message("dino_model", "DINO", DEFAULT_DINO_MODEL,
                                        ("the study's DINO ViT-B/16 is", DINO_V1_MODEL)),
    "segformer_model": _transformers_message("segformer_model", "SegFormer (supervised, Cityscapes)",
                                             DEFAULT_SEGFORMER_MODEL, ("the real-time B0 is", FAST_SEGFORMER_MODEL)),
}
