"""MuJoCo simulation of each embodiment, speaking the vendor drivers' ros2_control topics."""
