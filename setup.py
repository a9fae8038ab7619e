from glob import glob

from setuptools import find_packages, setup

PACKAGE = "emerdiff_ros"

# ROS 2 Kilted wheels from PyPI: rclpy and the message packages the node uses.
ROS_WHEELS = [
    "ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-std-msgs", "ros-sensor-msgs", "ros-diagnostic-msgs",
    "ros-rosgraph-msgs", "ros-builtin-interfaces",
]

# The CARLA client for carla_rig; it must match the server's version. carla 0.9.16 has wheels for
# CPython 3.10-3.12 on x86-64 Linux and Windows only; elsewhere the extra installs nothing and the
# rig says what to install (everything else works without it).
CARLA_CLIENT = ('carla==0.9.16; python_version >= "3.10" and python_version < "3.13" '
                'and (platform_machine == "x86_64" or platform_machine == "AMD64")')

# Ray for `--ray` (segment and bag on a cluster); every node of a cluster needs the same version.
RAY = ["ray>=2.40", "threadpoolctl>=3"]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Label-free semantic segmentation (EmerDiff) for ROS 2 driving stacks",
    license="Apache-2.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    package_data={PACKAGE: ["data/samples/*", "scoring/classmaps/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",  # install the build you want first (CPU or CUDA); see README
        "diffusers>=0.30",
        "accelerate>=0.30",  # diffusers loads checkpoints faster and leaner with it
        "transformers>=4.40",
        "safetensors",
        "numpy>=1.24",
        "pillow>=10",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "rosbags>=0.10",
        "pyyaml>=6",
    ],
    extras_require={"ros": ROS_WHEELS, "carla": [CARLA_CLIENT], "ray": RAY, "test": ["pytest>=7", "ruff>=0.6"]},
    entry_points={
        "console_scripts": [
            "emerdiff = emerdiff_ros.cli:main",
            "emerdiff_node = emerdiff_ros.node:main",
            "carla_rig = emerdiff_ros.carla.command:main",
        ],
    },
    zip_safe=False,
)
