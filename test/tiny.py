"""The one set of small but real settings the tool, node and cluster tests run with: the tiny random model
(and the baselines' tiny random models) on the CPU, a small processing size, few masks and feature draws,
and a 10-step schedule (3 modulated denoising steps from t_m), so a frame takes a fraction of a second.
The code paths are the full ones."""

TINY = dict(model="tiny-random", dino_model="tiny-random", segformer_model="tiny-random", device="cpu",
            resolution=128, num_masks=4, feature_draws=4, kmeans_restarts=1, steps=10)


def flags(*without: str, **changes) -> list[str]:
    """TINY (with changes, without the settings named) as `emerdiff` command-line flags."""
    return [arg for name, value in {**TINY, **changes}.items() if name not in without
            for arg in (f"--{name.replace('_', '-')}", str(value))]


def config(preset: str = "paper", **changes):
    """TINY (with changes) as an EmerDiffConfig (its attributes are not always the external names: steps)."""
    from emerdiff_ros.engine.config import EmerDiffConfig, config_fields

    attrs = {spec.name: spec.attr for spec in config_fields()}
    return EmerDiffConfig.from_preset(preset, **{attrs[name]: value for name, value in {**TINY, **changes}.items()})
