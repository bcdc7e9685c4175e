"""ament_python build for ctrnet_ros (colcon build) and editable install for the venv (make setup)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "ctrnet_ros"


def _files(pattern):
    return [f for f in glob(pattern, recursive=True) if not f.endswith("/")]


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "tools"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", _files("launch/*.py")),
        ("share/" + package_name + "/config", _files("config/*.yaml")),
        ("share/" + package_name + "/config/robots", _files("config/robots/*.yaml")),
        ("share/" + package_name + "/config/sim", _files("config/sim/*.yaml")),
        ("share/" + package_name + "/models", _files("models/*.onnx") + _files("models/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="ctrnet_ros maintainers",
    maintainer_email="ctrnet-ros@example.com",
    description="Online markerless camera-to-robot calibration (CtRNet) for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "ctrnet-sim = ctrnet_ros.sim.cli:main",
            "ctrnet-train = ctrnet_ros.train.cli:main",
            "ctrnet-export = ctrnet_ros.train.export_cli:main",
            "ctrnet_node = ctrnet_ros.ros.ctrnet_node_main:main",
            "ctrnet-play = ctrnet_ros.ros.bag_player:main",
            "ctrnet-eval = ctrnet_ros.eval.cli:main",
            "ctrnet-collect = ctrnet_ros.collect.cli:main",
            "collector_node = ctrnet_ros.ros.collector_node_main:main",
        ],
    },
)
