"""Pure core: numpy / scipy / pinocchio only. Never imports rclpy or torch."""
