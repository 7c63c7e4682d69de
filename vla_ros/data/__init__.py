"""Dataset writing/reading (LeRobotDataset v3.0): `LeRobotDataset` reads, `DatasetWriter` writes."""

from vla_ros.data.format import DatasetError
from vla_ros.data.reader import Episode, LeRobotDataset

__all__ = ["DatasetError", "Episode", "LeRobotDataset"]
