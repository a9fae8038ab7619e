"""FLOPs per frame of each method at full size, counted on the meta device (no weights, no arithmetic).

    python bench/method_flops.py [--size 512x512] [--num-masks 25]

emerdiff: the SD 2.1-base-sized model (`sd21-random`, SD 1.4's layout and widths but for the text width) at
the paper's settings: one VAE encode, the feature draws up to the feature layer, the modulated denoising
(less the shared step-t_m prefix) and the 2K decodes; lowres stops after k-means (encode and features).
dino: DINOv2 ViT-B/14 (facebook/dinov2-base's configuration). segformer: SegFormer B5 and B0 with the
Cityscapes head (19 classes). Each sees the frame at the engine's processing size; k-means and the
upsampling to the input are left out (no network work).
"""

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Dinov2Config, Dinov2Model, SegformerConfig, SegformerForSemanticSegmentation

from emerdiff_ros.engine.config import EmerDiffConfig
from emerdiff_ros.engine.imaging import processing_size
from emerdiff_ros.engine.models import _random_model
from emerdiff_ros.engine.prefix import prefix_flop_share
from emerdiff_ros.engine.schedule import InversionSchedule

SEGFORMERS = {  # the published B0 and B5 sizes
    "segformer-b5": dict(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768),
    "segformer-b0": dict(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], decoder_hidden_size=256),
}


def flops(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def diffusion_flops(config: EmerDiffConfig, size: tuple[int, int]) -> dict[str, float]:
    width, height = size
    unet, vae, scheduler, embedding = _random_model("sd21-random", torch.float32)
    latent = torch.zeros(1, 4, height // 8, width // 8)

    def unet_call():
        return unet(latent, config.modulation_timestep, encoder_hidden_states=embedding, return_dict=False)

    evaluation = flops(unet_call)
    to_features = prefix_flop_share(unet, config.feature_layer, unet_call)
    to_modulated = prefix_flop_share(unet, config.modulation_layer, unet_call)
    encode = flops(lambda: vae.encode(torch.zeros(1, 3, height, width)))
    decode = flops(lambda: vae.decode(latent))
    with torch.device("cpu"):  # the schedule's numbers are real ones, not meta tensors
        schedule = InversionSchedule(type(scheduler).from_config(scheduler.config), config.num_inference_steps)
    steps = len(schedule.timesteps) - schedule.snap(config.modulation_timestep)
    batch = 1 + 2 * config.num_masks
    features = encode + config.feature_draws * to_features * evaluation
    modulated = (steps * batch - (batch - 1) * to_modulated) * evaluation + 2 * config.num_masks * decode
    return {"emerdiff": features + modulated, "lowres": features}


def dino_flops(size: tuple[int, int]) -> float:
    config = Dinov2Config()  # its defaults are ViT-B/14, facebook/dinov2-base's sizes
    patch = config.patch_size
    width, height = (side // patch * patch for side in size)
    model = Dinov2Model(config).eval()
    return flops(lambda: model(pixel_values=torch.zeros(1, 3, height, width)))


def segformer_flops(sizes: dict, size: tuple[int, int]) -> float:
    model = SegformerForSemanticSegmentation(SegformerConfig(num_labels=19, **sizes)).eval()
    width, height = (side // 32 * 32 for side in size)
    return flops(lambda: model(pixel_values=torch.zeros(1, 3, height, width)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512x512", help="the input frame, WxH")
    parser.add_argument("--num-masks", type=int, default=25)
    args = parser.parse_args()
    config = EmerDiffConfig(num_masks=args.num_masks)
    frame = tuple(int(v) for v in args.size.split("x"))
    size = processing_size(*frame, config.resolution, config.processing)
    with torch.device("meta"), torch.inference_mode():
        counted = diffusion_flops(config, size)
        counted["dino (ViT-B/14)"] = dino_flops(size)
        for name, sizes in SEGFORMERS.items():
            counted[f"{name} (supervised)"] = segformer_flops(sizes, size)
    print(f"frame {args.size}, processing size {size[0]}x{size[1]}, K = {args.num_masks}")
    print("| method | GFLOPs per frame | x segformer-b0 |\n|---|---|---|")
    b0 = counted["segformer-b0 (supervised)"]
    for name, value in counted.items():
        print(f"| {name} | {value / 1e9:,.0f} | {value / b0:,.0f} |")


if __name__ == "__main__":
    main()
