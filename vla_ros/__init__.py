"""vla_ros: Vision-Language-Action robot foundation models on ROS 2 arms."""

__version__ = "0.1.0"
