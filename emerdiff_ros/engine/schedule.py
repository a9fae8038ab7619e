"""Edit-friendly DDPM inversion (eta = 1) on a checkpoint's own noise schedule.

Every noisy latent x_t is drawn independently from q(x_t | x_0); a reverse step from t to the
previous schedule timestep is mu_t(x_t, model output) + noise, and the noise map that makes the
step land exactly on the inverted x_{t-1} is x_{t-1} - mu_t. Storing that noise (rather than
z_t = noise / sigma_t) keeps the final step exact even where sigma_t is zero.
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError


class InversionSchedule:
    def __init__(self, scheduler, num_steps: int):
        # A private copy: set_timesteps mutates the scheduler, which other code may share.
        scheduler = type(scheduler).from_config(scheduler.config)
        scheduler.set_timesteps(num_steps)
        self.timesteps: list[int] = [int(t) for t in scheduler.timesteps]  # descending
        self._alphas = scheduler.alphas_cumprod.double()
        self._final_alpha = float(scheduler.final_alpha_cumprod)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(f"unsupported prediction_type {self.prediction_type!r} in the scheduler config")

    def alpha(self, t: int) -> float:
        return float(self._alphas[t])

    def alpha_prev(self, index: int) -> float:
        """Cumulative alpha of the timestep after timesteps[index] (the final alpha after the last)."""
        if index + 1 < len(self.timesteps):
            return self.alpha(self.timesteps[index + 1])
        return self._final_alpha

    def snap(self, t: int) -> int:
        """Index of the schedule timestep nearest to t (ties go to the later, less noisy step)."""
        return min(range(len(self.timesteps)), key=lambda i: (abs(self.timesteps[i] - t), self.timesteps[i]))

    def add_noise(self, z0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        a = self.alpha(t)
        return math.sqrt(a) * z0 + math.sqrt(1.0 - a) * noise

    def split(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted noise, predicted x_0) from the model output under the checkpoint's parameterisation."""
        a = self.alpha(t)
        sa, sb = math.sqrt(a), math.sqrt(1.0 - a)
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (x_t - sb * eps) / sa
        elif self.prediction_type == "v_prediction":
            x0 = sa * x_t - sb * model_output
            eps = sa * model_output + sb * x_t
        else:
            x0 = model_output
            eps = (x_t - sa * x0) / sb
        return eps, x0

    def reverse_mean(self, model_output: torch.Tensor, x_t: torch.Tensor, index: int) -> torch.Tensor:
        """mu_t of the DDPM (eta = 1) reverse step from timesteps[index] to the next timestep."""
        t = self.timesteps[index]
        a_t, a_prev = self.alpha(t), self.alpha_prev(index)
        variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
        eps, x0 = self.split(model_output.float(), x_t.float(), t)
        return math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - variance, 0.0)) * eps

    def inverted_latents(self, z0: torch.Tensor, start: int, generator: torch.Generator) -> torch.Tensor:
        """x_t for timesteps[start:], each drawn independently: (steps, C, H, W), float32."""
        steps = self.timesteps[start:]
        noise = torch.randn((len(steps), *z0.shape[1:]), generator=generator, dtype=torch.float32)
        noise = noise.to(z0.device)
        return torch.stack([self.add_noise(z0[0].float(), t, noise[i]) for i, t in enumerate(steps)])
