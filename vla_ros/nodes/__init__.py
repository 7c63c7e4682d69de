"""ROS 2 nodes: thin; all message <-> core conversion is in vla_ros.nodes.conversions."""
