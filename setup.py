"""ament_python package: builds with `colcon build` on a ROS 2 machine and installs with
`pip install -e .` on a machine where ROS 2 comes from the Jazzy PyPI wheels.

ROS packages are deliberately NOT in install_requires: on a ROS machine they come from the
ROS install, on a wheel machine from requirements.txt. Listing them here would make pip
try to replace a ROS install's rclpy.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vla_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    # the shipped built-in policy checkpoints (scripts/train_builtin.sh)
    package_data={f"{PACKAGE}.policies.builtin": ["*/*.json", "*/*.safetensors", "*/*.png"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/teleop", glob("config/teleop/*.yaml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*.urdf")),
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    zip_safe=False,
    maintainer="vla_ros maintainers",
    maintainer_email="maintainers@vla-ros.invalid",
    description="Vision-Language-Action robot foundation models on ROS 2 arms.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "vla-ros = vla_ros.cli.main:main",
            "controller_node = vla_ros.nodes.controller_node:main",
            "sim_node = vla_ros.nodes.sim_node:main",
            "policy_node = vla_ros.nodes.policy_node:main",
            "recorder_node = vla_ros.nodes.recorder_node:main",
            "teleop_node = vla_ros.nodes.teleop_node:main",
        ],
    },
)
