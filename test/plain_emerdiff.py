"""The straightforward EmerDiff: explicit inversion, then every mask and sign on its own.

Written independently of the engine's batched path (its own processors record and replay the
attention maps), it is the tests' correctness oracle and the benchmark's speed baseline.
"""

import torch

from emerdiff_ros.engine.attention import attention_layer_names, attention_processors
from emerdiff_ros.engine.imaging import gaussian_blur


class StoreProbs:
    """Plain attention that records its attention probabilities."""

    def __init__(self, store, name):
        self.store, self.name = store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = (attn.head_to_batch_dim(p(x)) for p, x in
                   ((attn.to_q, hidden_states), (attn.to_k, context), (attn.to_v, context)))
        probs = attn.get_attention_scores(q, k)
        self.store[self.name] = probs
        return attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, v))))


class ReplayProbs:
    """Attention with recorded probabilities, and an optional offset before or after the output projection."""

    def __init__(self, probs, offset, point):
        self.probs = probs
        self.before = offset if point == "before_projection" else None
        self.after = offset if point == "after_projection" else None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        v = attn.head_to_batch_dim(attn.to_v(context))
        out = attn.batch_to_head_dim(torch.bmm(self.probs, v))
        if self.before is not None:
            out = out + self.before
        out = attn.to_out[1](attn.to_out[0](out))
        return out if self.after is None else out + self.after


@torch.no_grad()
def plain_emerdiff(segmenter, frame, grid, ids):
    """The straightforward method: explicit inversion, then each mask and sign on its own."""
    cfg, schedule, model = segmenter.config, segmenter.schedule, segmenter.model
    unet, vae = model.unet, model.vae
    layers = attention_layer_names(unet)
    start, inverted = segmenter.inverted_latents(frame)
    steps = list(range(start, len(schedule.timesteps)))
    targets = list(inverted[1:]) + [frame.latent[0]]

    def unet_call(x, index):
        return unet(x, schedule.timesteps[index], encoder_hidden_states=model.prompt_embedding,
                    return_dict=False)[0]

    # Edit-friendly inversion: noise maps from plain UNet calls on the independent x_t.
    noise = [targets[s] - schedule.reverse_mean(unet_call(inverted[s][None], i), inverted[s][None], i)[0]
             for s, i in enumerate(steps)]
    # Unmodulated replay, recording every attention map of every step.
    recorded, x = [], inverted[0][None]
    for s, i in enumerate(steps):
        store = {}
        with attention_processors(unet, {name: StoreProbs(store, name) for name in layers}):
            out = unet_call(x, i)
        recorded.append(store)
        x = schedule.reverse_mean(out, x, i) + noise[s]
    reconstruction = x[0]

    latents, maps = [], []
    for k in ids:
        pair = []
        for sign in (1.0, -1.0):
            offset = sign * cfg.modulation_lambda * torch.as_tensor(grid == k, dtype=torch.float32).reshape(1, -1, 1)
            x = inverted[0][None]
            for s, i in enumerate(steps):
                processors = {name: ReplayProbs(recorded[s][name],
                                                offset if s == 0 and name == cfg.modulation_layer else None,
                                                cfg.modulation_point)
                              for name in layers}
                with attention_processors(unet, processors):
                    out = unet_call(x, i)
                x = schedule.reverse_mean(out, x, i) + noise[s]
            latents.append(x[0])
            pair.append(vae.decode(x / vae.config.scaling_factor).sample.float())
        maps.append(difference_map(pair[0], pair[1], cfg))
    return reconstruction, torch.stack(latents), torch.stack(maps)


def difference_map(plus, minus, cfg):
    """||I(+lambda) - I(-lambda)|| per pixel, with the Gaussian filter on that map or on the RGB difference."""
    if cfg.blur_target == "images":
        return gaussian_blur(plus - minus, cfg.blur_sigma).norm(dim=1)[0]
    return gaussian_blur((plus - minus).norm(dim=1, keepdim=True), cfg.blur_sigma)[0, 0]
