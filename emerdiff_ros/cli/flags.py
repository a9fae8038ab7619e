"""Flags several commands share: the method and model (generated from EmerDiffConfig's fields), the
node's output settings (from StreamSettings), --method, Ray and ground truth, and reading them back."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.config import METHODS, PRESETS, EmerDiffConfig, ParamSpec, config_fields, param_specs
from ..engine.errors import ConfigError
from ..runtime.settings import OUTPUT_SETTINGS, StreamSettings
from ..scoring import CARLA_FAMILIES, ClassMap, format_names, ground_truth_format
from .errors import CommandError, UsageError


def add_config_flags(parser: argparse.ArgumentParser, preset: str = "paper", exclude: tuple[str, ...] = ()) -> None:
    """One flag per EmerDiffConfig field (but those excluded); unset flags keep the preset's value."""
    group = parser.add_argument_group("method and model (unset flags keep the preset's values)")
    group.add_argument("--preset", choices=sorted(PRESETS), default=preset, help=f"parameter preset (default {preset})")
    add_param_flags(group, [spec for spec in config_fields() if spec.attr not in exclude], "paper")


def add_param_flags(group, specs: list[ParamSpec], default_word: str) -> None:
    """One flag per settings field; each defaults to None, so an unset flag is told from a given one."""
    for spec in specs:
        limits = f", {spec.low}..{spec.high}" if spec.low is not None else ""
        kwargs = {"dest": spec.attr, "default": None,
                  "help": f"{spec.description} ({default_word}: {spec.default}{limits})"}
        if spec.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.type is tuple:
            kwargs.update(type=spec.item, nargs=spec.length or "+", metavar="V" if spec.item is float else "NAME")
        else:
            kwargs.update(type=spec.type, metavar=spec.name.upper(), choices=spec.choices)
        group.add_argument(spec.flag, **kwargs)


def config_from_args(args: argparse.Namespace) -> EmerDiffConfig:
    overrides = {s.attr: getattr(args, s.attr) for s in config_fields()
                 if not isinstance(getattr(args, s.attr, None), (list, type(None)))}
    try:
        return EmerDiffConfig.from_preset(args.preset, **overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def output_setting_specs() -> list[ParamSpec]:
    """The node's settings that shape outputs, which the offline tools take too."""
    return [spec for spec in param_specs(StreamSettings) if spec.name in OUTPUT_SETTINGS]


def settings_from_args(args: argparse.Namespace) -> StreamSettings:
    values = {s.attr: getattr(args, s.attr) for s in output_setting_specs() if getattr(args, s.attr) is not None}
    try:
        return StreamSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def add_method_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=METHODS, default="emerdiff", help=METHOD_HELP)


METHOD_HELP = ("emerdiff (default); lowres: the paper's baseline, the same masks upsampled bilinearly; dino: k-means "
               "on DINO ViT patch features (--dino-model); segformer: a SUPERVISED Cityscapes SegFormer, a reference "
               "(--segformer-model)")


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("on a Ray cluster (pip install 'emerdiff_ros[ray]'); the outputs are the same "
                                      "as without")
    group.add_argument("--ray", metavar="ADDRESS",
                       help="segment on Ray workers: local (a cluster on this machine for this command), auto (the "
                            "cluster `ray start` made on this machine), HOST:PORT or ray://HOST:PORT")
    group.add_argument("--ray-workers", type=int, metavar="N",
                       help="workers, each loading the model once (default: one per GPU of the cluster; without "
                            "GPUs one per --ray-cpus-per-worker CPUs)")
    group.add_argument("--ray-gpus-per-worker", type=float, metavar="G",
                       help="GPUs each worker holds (default 1 on a cluster with GPUs, else 0; 0.5 puts two on a GPU)")
    group.add_argument("--ray-cpus-per-worker", type=float, metavar="C",
                       help="CPUs each worker reserves (default 1 with a GPU; without, the torch threads each runs, "
                            "which are this process's: set OMP_NUM_THREADS to change them)")


def check_ray_flags(args: argparse.Namespace, config: EmerDiffConfig) -> None:
    given = [flag for flag, value in (("--ray-workers", args.ray_workers), ("--ray-gpus-per-worker",
             args.ray_gpus_per_worker), ("--ray-cpus-per-worker", args.ray_cpus_per_worker)) if value is not None]
    if args.ray is None:
        if given:
            raise UsageError(f"{', '.join(given)} need --ray ADDRESS")
        return
    if args.ray_workers is not None and args.ray_workers < 1:
        raise UsageError(f"--ray-workers must be at least 1, got {args.ray_workers}")
    if args.ray_gpus_per_worker is not None and args.ray_gpus_per_worker < 0:
        raise UsageError(f"--ray-gpus-per-worker must be 0 or more, got {args.ray_gpus_per_worker:g}")
    if args.ray_cpus_per_worker is not None and not args.ray_cpus_per_worker > 0:
        raise UsageError(f"--ray-cpus-per-worker must be more than 0, got {args.ray_cpus_per_worker:g}")
    if config.device.startswith("cuda:"):
        raise UsageError(f"--device {config.device} picks a GPU, but with --ray each worker gets its own from Ray: "
                     f"use --device auto or cuda")


def add_ground_truth_flags(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("ground truth encoding")
    which = group.add_mutually_exclusive_group(required=required)
    which.add_argument("--gt-format", metavar="FORMAT",  # checked by ground_truth_from_args: one line, no usage
                       help=f"a built-in encoding: {', '.join(format_names())}")
    which.add_argument("--class-map", type=Path, metavar="FILE",
                       help="a class map (YAML or JSON: value or colour -> class name, plus ignored values)")
    group.add_argument("--carla-version", metavar="V",
                       help="CARLA release of carla-tags/carla-palette ground truth: 0.8-0.9.5, 0.9.6-0.9.13 and "
                            "0.9.14+ number their tags differently (default: the release the frames record, as "
                            "carla_rig and emerdiff bag write it; without a record, this flag is needed)")
    group.add_argument("--ignore", action="append", default=[], metavar="CLASS|VALUE",
                       help="a class, value or colour (R,G,B) not to score (repeatable; each format already "
                            "ignores its unlabeled/void values)")


def ground_truth_from_args(args: argparse.Namespace, carla_version: str | None = None) -> ClassMap:
    """The ground truth's format; carla-tags/carla-palette take carla_version (the frames' record or the
    flag), other formats refuse --carla-version."""
    if args.gt_format is not None and args.gt_format not in format_names():
        raise CommandError(f"unknown --gt-format {args.gt_format!r}; built in: {', '.join(format_names())} "
                           f"(a class map file goes with --class-map)")
    family = args.class_map is None and args.gt_format in CARLA_FAMILIES
    fmt = ground_truth_format(args.class_map or args.gt_format, (carla_version if family else None)
                              or args.carla_version)
    return fmt.ignoring(args.ignore) if args.ignore else fmt
