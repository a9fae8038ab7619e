"""The step-t_m prefix saving at SD size, counted in FLOPs on the meta device (no weights, no arithmetic).

    python bench/prefix_share.py [--size 512x512] [--num-masks 25]

At step t_m the engine runs the UNet up to the modulated layer once instead of for each of the 2K + 1
samples (emerdiff_ros/engine/prefix.py). This prints that prefix's share of one UNet evaluation for the
SD 2.1-base-sized UNet (`sd21-random`, the same block layout and widths as SD 1.4 but for the text width)
and what the sharing saves of a frame's modulated denoising.
"""

import argparse

import torch

from emerdiff_ros.engine.config import EmerDiffConfig
from emerdiff_ros.engine.models import _random_model
from emerdiff_ros.engine.prefix import prefix_flop_share
from emerdiff_ros.engine.schedule import InversionSchedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--num-masks", type=int, default=25)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    config = EmerDiffConfig(num_masks=args.num_masks)
    with torch.device("meta"):
        unet, _, scheduler, embedding = _random_model("sd21-random", torch.float32)
        latent = torch.zeros(1, 4, height // 8, width // 8)
        share = prefix_flop_share(unet, config.modulation_layer, lambda: unet(
            latent, config.modulation_timestep, encoder_hidden_states=embedding, return_dict=False))
    schedule = InversionSchedule(scheduler, config.num_inference_steps)
    steps = len(schedule.timesteps) - schedule.snap(config.modulation_timestep)
    batch = 1 + 2 * args.num_masks
    saved = (batch - 1) * share
    print(f"sd21-random UNet at {width}x{height}: the part before {config.modulation_layer} is {100 * share:.1f}% "
          f"of an evaluation's FLOPs")
    print(f"K = {args.num_masks}: {steps} steps x {batch} samples = {steps * batch} sample-evaluations of modulated "
          f"denoising; sharing the step-t_m prefix saves {saved:.1f} of them ({100 * saved / (steps * batch):.1f}%)")


if __name__ == "__main__":
    main()
