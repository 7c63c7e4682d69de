"""Dataset writing/reading (LeRobotDataset v3.0)."""
